//! The metadata store wired to the rest: it answers the HTTP layer's credential checks
//! ([`Directory`] as [`Accounts`]), gives ingest its project keys ([`ProjectKeys`], a
//! cache refreshed every second, so a project added by `sightflow project add` while
//! `serve` runs takes events within a second and ingest never waits on the store; a
//! change made through the API refreshes it at once), and
//! is seeded from the configuration's projects.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use sightflow_config::Config;
use sightflow_config::access::{
    AccountError, Grant, NewProject, Principal, ProjectRow, ProjectUpdate, Role, TokenRow, UserRow,
};
use sightflow_connectors::meta::{MetaError, MetaStore};
use sightflow_query::access::{Accounts, Gate, Login, LoginPolicy};
use sightflow_query::http::ProjectPolicy;

/// The email of the owner a first start creates.
pub const FIRST_OWNER: &str = "owner@localhost";

/// Opens the store `metadata.url` names (SQLite under `data_dir` by default).
pub fn open(config: &Config, data_dir: &Path) -> Result<MetaStore, MetaError> {
    MetaStore::open(&config.metadata.url, data_dir)
}

/// Creates the configuration's projects that the store lacks (a project there keeps its
/// settings); returns the names created.
pub fn seed(store: &MetaStore, config: &Config) -> Result<Vec<String>, MetaError> {
    let mut created = Vec::new();
    for (name, p) in &config.projects {
        let new = NewProject {
            ingest_key: Some(p.ingest_key.clone().unwrap_or_else(|| name.clone())),
            allowed_origins: p.allowed_origins.clone(),
            time_zone: p.time_zone.clone(),
            retention_days: p.retention_days,
            rate_limit_per_s: p.rate_limit_per_s,
        };
        if store.project_seed(name, new)? {
            created.push(name.clone());
        }
    }
    Ok(created)
}

/// On a store without users, creates an owner of every project with a random password
/// and returns (email, password), to be shown once.
pub fn first_owner(store: &MetaStore) -> Result<Option<(String, String)>, MetaError> {
    if store.user_count()? > 0 {
        return Ok(None);
    }
    let password = random_password();
    match store.user_add(FIRST_OWNER, &password, Grant::everywhere(Role::Owner)) {
        Ok(_) => Ok(Some((FIRST_OWNER.to_string(), password))),
        // Another server created it in the meantime.
        Err(MetaError::Exists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// 20 characters from an unambiguous alphabet (about 100 bits).
pub fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// The store as the HTTP layer's accounts.
pub struct Directory {
    /// The store.
    pub store: Arc<MetaStore>,
    /// Called after a project is added, changed or deleted (ingest's and the replay
    /// reads' cache of the projects is refreshed at once, not within a second).
    pub on_projects_changed: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Directory {
    fn changed<T>(&self, r: Result<T, MetaError>) -> Result<T, AccountError> {
        let t = r?;
        if let Some(f) = &self.on_projects_changed {
            f();
        }
        Ok(t)
    }
}

impl Accounts for Directory {
    fn token(&self, token: &str) -> Result<Option<Principal>, AccountError> {
        Ok(self.store.authenticate_token(token)?)
    }

    fn session(&self, cookie: &str) -> Result<Option<Login>, AccountError> {
        let s = self.store.login(cookie)?;
        Ok(s.map(|s| Login { principal: s.principal, csrf: s.csrf, expires_ms: s.expires_ms }))
    }

    fn login(&self, email: &str, password: &str, ttl_ms: i64) -> Result<Option<(String, Login)>, AccountError> {
        let Some(user) = self.store.verify_password(email, password)? else {
            return Ok(None);
        };
        let (cookie, s) = self.store.login_create(&user, ttl_ms)?;
        Ok(Some((cookie, Login { principal: s.principal, csrf: s.csrf, expires_ms: s.expires_ms })))
    }

    fn logout(&self, cookie: &str) -> Result<(), AccountError> {
        Ok(self.store.logout(cookie)?)
    }

    fn verify(&self, email: &str, password: &str) -> Result<Option<Principal>, AccountError> {
        Ok(self.store.verify_password(email, password)?.map(|u| MetaStore::user_principal(&u)))
    }

    fn projects(&self) -> Result<Vec<ProjectRow>, AccountError> {
        Ok(self.store.projects()?)
    }

    fn project_add(&self, name: &str, p: NewProject) -> Result<ProjectRow, AccountError> {
        self.changed(self.store.project_add(name, p))
    }

    fn project_update(&self, name: &str, u: ProjectUpdate) -> Result<ProjectRow, AccountError> {
        self.changed(self.store.project_update(name, u))
    }

    fn project_delete(&self, name: &str) -> Result<(), AccountError> {
        self.changed(self.store.project_delete(name))
    }

    fn users(&self) -> Result<Vec<UserRow>, AccountError> {
        Ok(self.store.users()?)
    }

    fn user_add(&self, email: &str, password: &str, grant: Grant) -> Result<UserRow, AccountError> {
        Ok(self.store.user_add(email, password, grant)?)
    }

    fn user_grant(&self, email: &str, grant: Grant) -> Result<(), AccountError> {
        Ok(self.store.user_grant(email, grant)?)
    }

    fn user_ungrant(&self, email: &str, project: Option<&str>) -> Result<(), AccountError> {
        Ok(self.store.user_ungrant(email, project)?)
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, AccountError> {
        Ok(self.store.tokens()?)
    }

    fn token_create(
        &self,
        name: &str,
        role: Role,
        project: Option<&str>,
        created_by: &str,
    ) -> Result<(String, TokenRow), AccountError> {
        Ok(self.store.token_create(name, role, project, created_by)?)
    }

    fn token_revoke(&self, id: &str) -> Result<(), AccountError> {
        Ok(self.store.token_revoke(id)?)
    }
}

/// The credential gate of a configuration over a store; `on_projects_changed` runs
/// after each change to the projects made through it.
pub fn gate(config: &Config, store: Arc<MetaStore>, on_projects_changed: Option<Arc<dyn Fn() + Send + Sync>>) -> Gate {
    let a = &config.auth;
    Gate::new(
        Arc::new(Directory { store, on_projects_changed }),
        &LoginPolicy {
            session_ttl_ms: (a.session_ttl_s as i64).saturating_mul(1000),
            per_ip_per_min: a.login_attempts_per_min_per_ip,
            per_email_per_min: a.login_attempts_per_min_per_email,
        },
    )
}

/// Ingest's view of the projects: by ingest key, refreshed from the store.
pub struct ProjectKeys {
    store: Arc<MetaStore>,
    by_key: RwLock<Arc<HashMap<String, ProjectPolicy>>>,
}

impl ProjectKeys {
    /// Loads the projects now.
    pub fn load(store: Arc<MetaStore>) -> Result<ProjectKeys, MetaError> {
        let keys = ProjectKeys { store, by_key: RwLock::new(Arc::default()) };
        keys.refresh()?;
        Ok(keys)
    }

    /// Reloads the projects (blocking: the store is read).
    pub fn refresh(&self) -> Result<(), MetaError> {
        let map: HashMap<String, ProjectPolicy> = self
            .store
            .projects()?
            .into_iter()
            .map(|p| {
                let policy = ProjectPolicy {
                    name: p.name,
                    allowed_origins: p.allowed_origins,
                    rate_limit_per_s: p.rate_limit_per_s,
                    retention_days: p.retention_days,
                };
                (p.ingest_key, policy)
            })
            .collect();
        *self.by_key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        Ok(())
    }

    /// The project of an ingest key.
    pub fn get(&self, key: &str) -> Option<ProjectPolicy> {
        self.by_key.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// The days a project keeps its recordings (0: the server's retention; also for a
    /// project not known).
    pub fn retention_days(&self, project: &str) -> u32 {
        let map = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        map.values().find(|p| p.name == project).map_or(0, |p| p.retention_days)
    }

    /// Every project's policy.
    pub fn all(&self) -> Arc<HashMap<String, ProjectPolicy>> {
        self.by_key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The store behind.
    pub fn store(&self) -> &Arc<MetaStore> {
        &self.store
    }
}
