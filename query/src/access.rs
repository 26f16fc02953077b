//! Credentials on the read side: who a request is made by, and console logins.
//!
//! Every endpoint but ingest and `/health` needs a credential: an API token
//! (`Authorization: Bearer sf_...`) or the console's login cookie (`sf_session`,
//! HttpOnly, SameSite=Strict, Secure behind TLS). A request authenticated by the cookie
//! that changes state (any method but GET and HEAD) must also echo the login's CSRF
//! token in `X-CSRF-Token`. A project's ingest key is not a credential here.
//!
//! Where accounts live is the binary's business: it hands the router an [`Accounts`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, HeaderValue, Method, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sightflow_config::access::{
    AccountError, Grant, NewProject, Principal, ProjectRow, ProjectUpdate, Role, Scope, TokenRow, UserRow,
};

use crate::http::ApiError;

/// The name of the console's login cookie.
pub const COOKIE: &str = "sf_session";

/// A console login as the store finds it.
#[derive(Debug, Clone)]
pub struct Login {
    /// The user and their grants.
    pub principal: Principal,
    /// What state-changing requests must echo in `X-CSRF-Token`.
    pub csrf: String,
    /// When the login ends (ms since the epoch).
    pub expires_ms: i64,
}

/// The accounts the HTTP layer checks credentials against and manages. Calls may block
/// (they run on blocking threads). Role checks are the caller's: these only do.
pub trait Accounts: Send + Sync + 'static {
    /// The principal of an API token's text, if it is a live token.
    fn token(&self, token: &str) -> Result<Option<Principal>, AccountError>;
    /// The live login of a cookie's value.
    fn session(&self, cookie: &str) -> Result<Option<Login>, AccountError>;
    /// Checks an email and password; on success starts a login of `ttl_ms` and returns
    /// the cookie's value with it.
    fn login(&self, email: &str, password: &str, ttl_ms: i64) -> Result<Option<(String, Login)>, AccountError>;
    /// Ends the login of a cookie's value.
    fn logout(&self, cookie: &str) -> Result<(), AccountError>;
    /// The principal of an email and password, without starting a login (pgwire).
    fn verify(&self, email: &str, password: &str) -> Result<Option<Principal>, AccountError>;
    /// Every project.
    fn projects(&self) -> Result<Vec<ProjectRow>, AccountError>;
    /// Creates a project.
    fn project_add(&self, name: &str, p: NewProject) -> Result<ProjectRow, AccountError>;
    /// Changes a project's settings.
    fn project_update(&self, name: &str, u: ProjectUpdate) -> Result<ProjectRow, AccountError>;
    /// Deletes a project's metadata (memberships, tokens); its events stay in the log.
    fn project_delete(&self, name: &str) -> Result<(), AccountError>;
    /// Every user.
    fn users(&self) -> Result<Vec<UserRow>, AccountError>;
    /// Creates a user with a grant.
    fn user_add(&self, email: &str, password: &str, grant: Grant) -> Result<UserRow, AccountError>;
    /// Sets a user's role on a project (or every project).
    fn user_grant(&self, email: &str, grant: Grant) -> Result<(), AccountError>;
    /// Takes a user's role on a project (or every project) away.
    fn user_ungrant(&self, email: &str, project: Option<&str>) -> Result<(), AccountError>;
    /// Every token.
    fn tokens(&self) -> Result<Vec<TokenRow>, AccountError>;
    /// Creates a token: its text (shown once) and its row.
    fn token_create(
        &self,
        name: &str,
        role: Role,
        project: Option<&str>,
        created_by: &str,
    ) -> Result<(String, TokenRow), AccountError>;
    /// Revokes a token by id.
    fn token_revoke(&self, id: &str) -> Result<(), AccountError>;
}

/// The answer for an account error.
pub fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::Invalid(m) => ApiError::BadRequest(m),
        AccountError::NotFound(m) => ApiError::NotFound(m),
        AccountError::Exists(m) => ApiError::Conflict(m),
        AccountError::Failing(m) => {
            tracing::error!(error = %m, "the metadata store is failing");
            ApiError::Unavailable(format!("the metadata store is failing: {m}"))
        }
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An API token.
    Token,
    /// The console's cookie (its value, to end the login).
    Cookie(String),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, with what grants.
    pub principal: Principal,
    /// How.
    pub via: Via,
    /// The login's CSRF token, for cookie callers.
    pub csrf: Option<String>,
}

impl Caller {
    /// The projects whose analytics the caller may read, or 403 when there are none.
    pub fn readable(&self) -> Result<Scope, ApiError> {
        match self.principal.projects(Role::Viewer) {
            Scope::Projects(p) if p.is_empty() => {
                Err(ApiError::Forbidden(format!("{} has no role on any project", self.principal.id)))
            }
            s => Ok(s),
        }
    }

    /// 403 unless the caller holds `role` on `project`.
    pub fn require(&self, role: Role, project: &str, what: &str) -> Result<(), ApiError> {
        if self.principal.can(role, project) {
            return Ok(());
        }
        let held = self.principal.role_in(project).map_or("no role".to_string(), |r| format!("the {r} role"));
        Err(ApiError::Forbidden(format!(
            "{what} needs the {role} role on project {project:?}; {} has {held} there",
            self.principal.id
        )))
    }

    /// 403 unless the caller holds at least `role` on every project at once.
    pub fn require_everywhere(&self, role: Role, what: &str) -> Result<(), ApiError> {
        if self.principal.global_role().is_some_and(|r| r >= role) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "{what} covers every project: it needs the {role} role on every project, which {} does not have",
            self.principal.id
        )))
    }
}

/// Counters of the read side's authentication, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuthCounters {
    /// Successful logins.
    pub logins: AtomicU64,
    /// Refused logins (wrong email or password).
    pub login_failures: AtomicU64,
    /// Logins refused by the rate limit.
    pub login_throttled: AtomicU64,
    /// Requests refused for a missing or bad credential.
    pub unauthenticated: AtomicU64,
    /// Requests refused for the caller's role.
    pub forbidden: AtomicU64,
}

/// The credential check and the login rate limits.
pub struct Gate {
    accounts: Arc<dyn Accounts>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_email: DefaultKeyedRateLimiter<String>,
    /// How long a console login lasts (ms).
    pub session_ttl_ms: i64,
    /// Authentication counters.
    pub counters: AuthCounters,
}

/// Login limits and lifetime.
#[derive(Debug, Clone)]
pub struct LoginPolicy {
    /// How long a console login lasts (ms).
    pub session_ttl_ms: i64,
    /// Attempts per minute from one address.
    pub per_ip_per_min: u32,
    /// Attempts per minute for one email.
    pub per_email_per_min: u32,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy { session_ttl_ms: 7 * 24 * 3_600_000, per_ip_per_min: 20, per_email_per_min: 5 }
    }
}

fn quota(per_min: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_min.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Gate {
    /// A gate over `accounts`.
    pub fn new(accounts: Arc<dyn Accounts>, policy: &LoginPolicy) -> Gate {
        Gate {
            accounts,
            per_ip: DefaultKeyedRateLimiter::keyed(quota(policy.per_ip_per_min)),
            per_email: DefaultKeyedRateLimiter::keyed(quota(policy.per_email_per_min)),
            session_ttl_ms: policy.session_ttl_ms,
            counters: AuthCounters::default(),
        }
    }

    /// Runs `f` on the accounts on a blocking thread.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Accounts) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let accounts = self.accounts.clone();
        tokio::task::spawn_blocking(move || f(accounts.as_ref()))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(account_error)
    }

    /// The caller of a request, or 401 (no or a bad credential) / 403 (a cookie request
    /// that changes state without its CSRF token).
    pub async fn caller(&self, method: &Method, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let r = self.check(method, headers).await;
        if let Err(ApiError::Unauthorized(_)) = &r {
            self.counters.unauthenticated.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let text = auth.to_str().unwrap_or("");
            let Some(token) = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")).map(str::trim)
            else {
                return Err(ApiError::Unauthorized("expected `Authorization: Bearer <API token>`".into()));
            };
            let t = token.to_string();
            return match self.blocking(move |a| a.token(&t)).await? {
                Some(principal) => Ok(Caller { principal, via: Via::Token, csrf: None }),
                None => Err(ApiError::Unauthorized(
                    "the API token is not valid: unknown, revoked, or not a token (a project's ingest key grants ingest only)"
                        .into(),
                )),
            };
        }
        if let Some(value) = cookie(headers, COOKIE) {
            let v = value.clone();
            let Some(login) = self.blocking(move |a| a.session(&v)).await? else {
                return Err(ApiError::Unauthorized("the console login has ended; log in again".into()));
            };
            if !(method == Method::GET || method == Method::HEAD) {
                let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
                if !constant_eq(sent.as_bytes(), login.csrf.as_bytes()) {
                    self.counters.forbidden.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::Forbidden(
                        "a request with the console cookie that changes state needs the login's X-CSRF-Token header"
                            .into(),
                    ));
                }
            }
            return Ok(Caller { principal: login.principal, via: Via::Cookie(value), csrf: Some(login.csrf) });
        }
        let has_key = headers.contains_key("x-sightflow-key");
        Err(ApiError::Unauthorized(if has_key {
            "a project's ingest key grants ingest only; this endpoint needs `Authorization: Bearer <API token>` or a console login".into()
        } else {
            "this endpoint needs a credential: `Authorization: Bearer <API token>` or a console login".into()
        }))
    }

    /// Checks a login attempt against the rate limits, then the password. `Ok(None)` is a
    /// wrong email or password.
    pub async fn login(&self, ip: IpAddr, email: &str, password: &str) -> Result<Option<(String, Login)>, ApiError> {
        let email = email.trim().to_ascii_lowercase();
        if let Err(wait) = self.throttle(ip, &email) {
            return Err(ApiError::TooManyRequests {
                message: format!("too many login attempts; retry in {wait} s"),
                retry_after_s: wait,
            });
        }
        let (e, p, ttl) = (email.clone(), password.to_string(), self.session_ttl_ms);
        let r = self.blocking(move |a| a.login(&e, &p, ttl)).await?;
        match &r {
            Some(_) => {
                self.counters.logins.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%ip, %email, "login");
            }
            None => {
                self.counters.login_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%ip, %email, "login failed: wrong email or password");
            }
        }
        Ok(r)
    }

    /// Charges one password attempt from `ip` for `email` (lower-case) against the login
    /// limits, the console's and the Postgres port's alike; `Err(seconds to wait)` when
    /// either limit refuses (both are charged, whichever refuses).
    pub fn throttle(&self, ip: IpAddr, email: &str) -> Result<(), u64> {
        let refused = [self.per_ip.check_key(&ip).err(), self.per_email.check_key(&email.to_string()).err()];
        if self.per_ip.len() > 100_000 {
            self.per_ip.retain_recent();
        }
        if self.per_email.len() > 100_000 {
            self.per_email.retain_recent();
        }
        match refused.into_iter().flatten().next() {
            None => Ok(()),
            Some(refused) => {
                self.counters.login_throttled.fetch_add(1, Ordering::Relaxed);
                let wait = refused.wait_time_from(DefaultClock::default().now()).as_secs().max(1);
                tracing::warn!(%ip, %email, "login refused: too many attempts");
                Err(wait)
            }
        }
    }

    /// Ends a cookie's login.
    pub async fn logout(&self, cookie: String) -> Result<(), ApiError> {
        self.blocking(move |a| a.logout(&cookie)).await
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value of a login (`value` empty: one that ends it).
pub fn set_cookie(value: &str, max_age_s: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; sf_session=abc ; b=2"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let v = set_cookie("xyz", 60, true).unwrap();
        let v = v.to_str().unwrap();
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.ends_with("; Secure"), "{v}");
        assert!(!set_cookie("xyz", 60, false).unwrap().to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_eq(b"abc", b"abc"));
        assert!(!constant_eq(b"abc", b"abd"));
        assert!(!constant_eq(b"abc", b"ab"));
    }
}
