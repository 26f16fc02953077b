//! Who may do what: roles, grants and the principal a credential stands for.
//!
//! The roles are GoSight's, ordered by what they allow: a viewer reads analytics; a
//! member also watches replays; an admin also manages members, settings, tokens,
//! alerts and the firewall; an owner may do everything, deleting a project included.
//! A grant gives a role on one project or on every project; a principal (a user logged
//! in, or an API token) holds one or more grants.
//!
//! ```
//! use sightflow_config::access::{Grant, Principal, Role};
//!
//! let p = Principal::new("token:ab12", vec![Grant::on("shop", Role::Viewer)]);
//! assert!(p.can(Role::Viewer, "shop"));
//! assert!(!p.can(Role::Member, "shop"), "a viewer cannot watch replays");
//! assert!(!p.can(Role::Viewer, "blog"), "nor read another project");
//! assert_eq!(p.projects(Role::Viewer).names(), Some(&["shop".to_string()][..]));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role, from least to most allowed (`Ord` follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Analytics only: views, SQL, the live feed; no replays.
    Viewer,
    /// Analytics and session replays.
    Member,
    /// Also members, settings, tokens, alerts and the firewall.
    Admin,
    /// Everything, deleting a project included.
    Owner,
}

impl Role {
    /// Every role, least allowed first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    /// The role's name as written in commands and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected viewer, member, admin or owner")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A role on one project, or on every project (`project: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The project's name; `None` for every project, present and future.
    pub project: Option<String>,
    /// What the grant allows there.
    pub role: Role,
}

impl Grant {
    /// `role` on the project named `project`.
    pub fn on(project: &str, role: Role) -> Grant {
        Grant { project: Some(project.to_string()), role }
    }

    /// `role` on every project.
    pub fn everywhere(role: Role) -> Grant {
        Grant { project: None, role }
    }
}

/// The projects a principal may read at some role: all of them, or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every project.
    All,
    /// Only these (possibly none).
    Projects(Vec<String>),
}

impl Scope {
    /// Whether `project` is in the scope.
    pub fn contains(&self, project: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Projects(p) => p.iter().any(|n| n == project),
        }
    }

    /// The projects listed, or `None` for all.
    pub fn names(&self) -> Option<&[String]> {
        match self {
            Scope::All => None,
            Scope::Projects(p) => Some(p),
        }
    }
}

/// Who a request is made by, with what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// `user:EMAIL` or `token:ID`: what logs and audit name (never a secret).
    pub id: String,
    /// What it may do, where.
    pub grants: Vec<Grant>,
}

impl Principal {
    /// A principal with these grants.
    pub fn new(id: &str, grants: Vec<Grant>) -> Principal {
        Principal { id: id.to_string(), grants }
    }

    /// The highest role held on `project`, if any.
    pub fn role_in(&self, project: &str) -> Option<Role> {
        self.grants.iter().filter(|g| g.project.as_deref().is_none_or(|p| p == project)).map(|g| g.role).max()
    }

    /// The highest role held on every project at once, if any.
    pub fn global_role(&self) -> Option<Role> {
        self.grants.iter().filter(|g| g.project.is_none()).map(|g| g.role).max()
    }

    /// The highest role held anywhere.
    pub fn max_role(&self) -> Option<Role> {
        self.grants.iter().map(|g| g.role).max()
    }

    /// Whether the principal holds at least `role` on `project`.
    pub fn can(&self, role: Role, project: &str) -> bool {
        self.role_in(project).is_some_and(|r| r >= role)
    }

    /// The projects on which the principal holds at least `role`.
    pub fn projects(&self, role: Role) -> Scope {
        if self.global_role().is_some_and(|r| r >= role) {
            return Scope::All;
        }
        let mut names: Vec<String> =
            self.grants.iter().filter(|g| g.role >= role).filter_map(|g| g.project.clone()).collect();
        names.sort();
        names.dedup();
        Scope::Projects(names)
    }
}

/// Why an account operation failed, by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// A value given is not acceptable (names the field): 400.
    #[error("{0}")]
    Invalid(String),
    /// The thing named does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The thing named exists already: 409.
    #[error("{0}")]
    Exists(String),
    /// The store is failing: 503.
    #[error("the metadata store is failing: {0}")]
    Failing(String),
}

/// A project as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectRow {
    /// Its name: what views, commands and the API call it.
    pub name: String,
    /// The public key browsers send with events.
    pub ingest_key: String,
    /// Browser origins allowed to send events.
    pub allowed_origins: Vec<String>,
    /// IANA time zone.
    pub time_zone: String,
    /// Days its recordings are kept for replay (0: the server's `replay.retention_ms`).
    pub retention_days: u32,
    /// Events per second accepted (0: unlimited).
    pub rate_limit_per_s: f64,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
}

/// A new project's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// Its ingest key; a random `sf_pk_...` one when absent.
    #[serde(default)]
    pub ingest_key: Option<String>,
    /// Browser origins allowed to send events.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// IANA time zone; UTC when absent.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Days its recordings are kept for replay (0: the server's `replay.retention_ms`).
    #[serde(default)]
    pub retention_days: u32,
    /// Events per second accepted (0: unlimited).
    #[serde(default)]
    pub rate_limit_per_s: f64,
}

/// Changes to a project's settings; what is absent stays.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    /// Browser origins allowed to send events.
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    /// IANA time zone.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Days its recordings are kept for replay (0: the server's `replay.retention_ms`).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Events per second accepted (0: unlimited).
    #[serde(default)]
    pub rate_limit_per_s: Option<f64>,
}

/// A user as listed (never with the password hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserRow {
    /// Opaque id.
    pub id: String,
    /// The login.
    pub email: String,
    /// Roles held, by project (`None`: every project).
    pub grants: Vec<Grant>,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
}

/// An API token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRow {
    /// The visible prefix, `sf_<id>`: how lists and `token revoke` name it.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// The role it carries.
    pub role: Role,
    /// The one project it may read; `None`: every project.
    pub project: Option<String>,
    /// Who created it (`user:EMAIL`, `cli`).
    pub created_by: String,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
    /// When it was last used, to the minute.
    pub last_used_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Member && Role::Member < Role::Admin && Role::Admin < Role::Owner);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "unknown role \"root\": expected viewer, member, admin or owner"
        );
    }

    #[test]
    fn grants_combine_by_the_highest_role() {
        let p = Principal::new(
            "user:a@b",
            vec![Grant::on("shop", Role::Viewer), Grant::on("shop", Role::Admin), Grant::on("blog", Role::Member)],
        );
        assert_eq!(p.role_in("shop"), Some(Role::Admin));
        assert_eq!(p.role_in("blog"), Some(Role::Member));
        assert_eq!(p.role_in("docs"), None);
        assert_eq!(p.global_role(), None);
        assert_eq!(p.projects(Role::Member), Scope::Projects(vec!["blog".into(), "shop".into()]));
        assert_eq!(p.projects(Role::Admin), Scope::Projects(vec!["shop".into()]));
        assert_eq!(p.projects(Role::Owner), Scope::Projects(vec![]));
        let owner = Principal::new("user:o", vec![Grant::everywhere(Role::Owner)]);
        assert!(owner.can(Role::Owner, "anything"));
        assert_eq!(owner.projects(Role::Viewer), Scope::All);
        let mixed = Principal::new("t", vec![Grant::everywhere(Role::Viewer), Grant::on("shop", Role::Member)]);
        assert_eq!(mixed.projects(Role::Viewer), Scope::All);
        assert_eq!(mixed.projects(Role::Member), Scope::Projects(vec!["shop".into()]));
    }
}
