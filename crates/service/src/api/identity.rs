//! Who the caller is: Cinder's noauth rules, or a Keystone token validated
//! the way keystonemiddleware's `auth_token` does it.
//!
//! Keystone: the service user's own token (password, project scope) is
//! fetched once and renewed [`RENEW_MARGIN`] before it expires; each caller
//! token is checked with `GET /v3/auth/tokens` (`X-Auth-Token`: ours,
//! `X-Subject-Token`: theirs). A valid answer is cached under the SHA-256 of
//! the token until min(token expiry, `token_cache_seconds`), so a revoked
//! token keeps working for at most that long, as with keystonemiddleware's
//! `token_cache_time`. Tokens never reach a log line: only [`token_tag`], a
//! hash prefix, does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rekey_keys::keystone_time_left;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::ApiError;
use crate::config::{AuthConfig, AuthStrategy};
use crate::model::Caller;

/// How long before its expiry the service token is replaced.
pub const RENEW_MARGIN: Duration = Duration::from_secs(120);
/// keystonemiddleware's message for a missing or refused token.
pub const UNAUTHORIZED: &str = "The request you have made requires authentication.";
/// Most tokens kept in the cache; past it, expired entries go, then all.
const CACHE_MAX: usize = 10_000;

/// A failed identification, before it becomes an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or one Keystone does not accept: 401.
    Unauthorized(&'static str),
    /// The token is valid but not usable here (no project scope): 403.
    Forbidden(&'static str),
    /// Keystone could not answer in time, or refused our own credentials: 503.
    Unavailable(String),
    /// A noauth identity that is malformed: 400.
    BadRequest(&'static str),
}

/// The identity strategy in force for one running API.
pub enum Identity {
    /// Cinder's noauth.
    Noauth,
    /// Keystone tokens.
    Keystone(Box<Keystone>),
}

impl Identity {
    /// Builds the strategy `config` names (Keystone is not contacted yet).
    pub fn new(config: &AuthConfig) -> Result<Identity, String> {
        match config.strategy {
            AuthStrategy::Noauth => Ok(Identity::Noauth),
            AuthStrategy::Keystone => Keystone::new(config).map(|k| Identity::Keystone(Box::new(k))),
        }
    }

    /// The `WWW-Authenticate` value sent with a 401.
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            Identity::Noauth => None,
            Identity::Keystone(k) => Some(format!("Keystone uri=\"{}\"", k.public_uri)),
        }
    }
}

/// The first 16 hex digits of the token's SHA-256: what logs may show.
pub fn token_tag(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

/// Identity under noauth, as Cinder's middleware reads it: `X-Auth-Token:
/// user:project`, a token without a colon is both; else `X-Project-Id`
/// (+ `X-User-Id`). Every noauth caller may do admin-only operations, but
/// volumes stay scoped to the caller's project. `None` = no identity at all.
pub fn noauth_caller(headers: &HeaderMap) -> Result<Option<Caller>, AuthError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    let (user, project) = match (get("x-auth-token"), get("x-project-id")) {
        (Some(tok), _) => match tok.split_once(':') {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => (tok.to_owned(), tok.to_owned()),
        },
        (None, Some(p)) => (get("x-user-id").unwrap_or(p).to_owned(), p.to_owned()),
        (None, None) => return Ok(None),
    };
    if rekey_keys::Project::new(project.clone()).is_err() {
        return Err(AuthError::BadRequest("Malformed project id in the auth token"));
    }
    Ok(Some(Caller::noauth(user, project, true)))
}

/// Checks `{project_id}` in the path against the caller's project. noauth
/// keeps its 403; with Keystone it is Cinder's 400 "Malformed request url".
pub fn check_path_project(identity: &Identity, who: &Caller, path_project: Option<&str>) -> Result<(), ApiError> {
    let Some(pp) = path_project else { return Ok(()) };
    if pp == who.project {
        return Ok(());
    }
    Err(match identity {
        Identity::Noauth => {
            ApiError::forbidden(format!("Project {pp} in the URL does not match the caller's project {}.", who.project))
        }
        Identity::Keystone(_) => ApiError::bad_request("Malformed request url"),
    })
}

/// The Keystone client: service credentials, its token, the cache.
pub struct Keystone {
    http: reqwest::Client,
    /// `.../v3`, no trailing slash.
    auth_url: String,
    /// What a 401 points clients at (the identity root, as keystonemiddleware's `www_authenticate_uri`).
    public_uri: String,
    username: String,
    password: Zeroizing<String>,
    project_name: String,
    user_domain_name: String,
    project_domain_name: String,
    cache_time: Duration,
    service_token: tokio::sync::Mutex<Option<ServiceToken>>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

struct ServiceToken {
    token: Zeroizing<String>,
    renew_at: Instant,
}

/// A validation result: the caller, or `None` for a token Keystone refused
/// (cached too, as keystonemiddleware does, so a flood of forged tokens
/// does not become a flood of Keystone requests; such a token never turns
/// valid).
#[derive(Clone)]
struct Cached {
    caller: Option<Caller>,
    valid_until: Instant,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    user: Named,
    #[serde(default)]
    project: Option<ProjectInfo>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ProjectInfo {
    id: String,
    #[serde(default)]
    domain: Option<Named>,
}

impl Keystone {
    fn new(config: &AuthConfig) -> Result<Keystone, String> {
        let need = |v: &Option<String>, k: &str| v.clone().ok_or_else(|| format!("[auth] strategy = \"keystone\" needs {k}"));
        let auth_url = need(&config.auth_url, "auth_url")?.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&auth_url).map_err(|e| format!("[auth] auth_url {auth_url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!("[auth] auth_url {auth_url:?} is not an http(s) URL with a host"));
        }
        let auth_url = if auth_url.ends_with("/v3") { auth_url } else { format!("{auth_url}/v3") };
        let public_uri = auth_url.trim_end_matches("/v3").to_owned();
        let timeout = Duration::from_secs(config.timeout_seconds.max(1));
        let mut b = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(ca) = &config.cafile {
            let pem = std::fs::read(ca).map_err(|e| format!("[auth] cafile {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("[auth] cafile {}: {e}", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| format!("keystone client: {e}"))?;
        Ok(Keystone {
            http,
            auth_url,
            public_uri,
            username: need(&config.username, "username")?,
            password: config.password.clone().ok_or("[auth] strategy = \"keystone\" needs password")?,
            project_name: need(&config.project_name, "project_name")?,
            user_domain_name: config.user_domain_name.clone(),
            project_domain_name: config.project_domain_name.clone(),
            cache_time: Duration::from_secs(config.token_cache_seconds),
            service_token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The caller behind `token`, from the cache or from Keystone.
    pub async fn validate(&self, token: &str) -> Result<Caller, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some(c) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if now < c.valid_until {
                return c.caller.clone().ok_or(AuthError::Unauthorized(UNAUTHORIZED));
            }
        }
        let tag = token_tag(token);
        let mut renewed = false;
        loop {
            let service = self.service_token(renewed).await?;
            let resp = self
                .http
                .get(format!("{}/auth/tokens", self.auth_url))
                .header("X-Auth-Token", service.as_str())
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(|e| unavailable("validating a token", &e))?;
            match resp.status().as_u16() {
                200 => {
                    let body: TokenBody = resp.json().await.map_err(|e| unavailable("reading a token", &e))?;
                    let (caller, expires) = caller_of(body.token)?;
                    let ttl = expires.min(self.cache_time);
                    self.remember(key, Cached { caller: Some(caller.clone()), valid_until: now + ttl });
                    tracing::debug!(token = %tag, user = %caller.user, project = %caller.project, "token validated");
                    return Ok(caller);
                }
                404 => {
                    tracing::info!(token = %tag, "token refused by keystone (invalid, expired or revoked)");
                    self.remember(key, Cached { caller: None, valid_until: now + self.cache_time });
                    return Err(AuthError::Unauthorized(UNAUTHORIZED));
                }
                // Our own token was revoked or expired early: fetch another once.
                401 if !renewed => {
                    tracing::warn!("keystone refused the service token; renewing it");
                    *self.service_token.lock().await = None;
                    renewed = true;
                }
                s => {
                    tracing::error!(status = s, "keystone refused to validate a token with the service credentials");
                    return Err(AuthError::Unavailable(format!("Keystone answered HTTP {s} to a token validation")));
                }
            }
        }
    }

    fn remember(&self, key: [u8; 32], entry: Cached) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, c| c.valid_until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, entry);
    }

    /// Our own token, fetched anew when missing, about to expire or `force`d.
    async fn service_token(&self, force: bool) -> Result<Zeroizing<String>, AuthError> {
        let mut slot = self.service_token.lock().await;
        if let Some(t) = slot.as_ref() {
            if !force && Instant::now() < t.renew_at {
                return Ok(t.token.clone());
            }
        }
        let body = Zeroizing::new(
            serde_json::json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": self.username, "domain": {"name": self.user_domain_name},
                    "password": self.password.as_str()}}},
                "scope": {"project": {"name": self.project_name, "domain": {"name": self.project_domain_name}}}
            }})
            .to_string(),
        );
        let resp = self
            .http
            .post(format!("{}/auth/tokens", self.auth_url))
            .header("Content-Type", "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| unavailable("authenticating the service user", &e))?;
        let status = resp.status().as_u16();
        if status != 201 {
            tracing::error!(status, user = %self.username, "keystone refused the service user's credentials");
            return Err(AuthError::Unavailable(format!("Keystone refused the service credentials (HTTP {status})")));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(|s| Zeroizing::new(s.to_owned()))
            .ok_or_else(|| AuthError::Unavailable("Keystone issued no X-Subject-Token".into()))?;
        let info: TokenBody = resp.json().await.map_err(|e| unavailable("reading the service token", &e))?;
        let lifetime = keystone_time_left(&info.token.expires_at)
            .ok_or_else(|| AuthError::Unavailable("Keystone sent an unreadable expires_at".into()))?;
        let margin = RENEW_MARGIN.min(lifetime / 2);
        tracing::info!(token = %token_tag(&token), lifetime_s = lifetime.as_secs(), "service token obtained");
        *slot = Some(ServiceToken { token: token.clone(), renew_at: Instant::now() + lifetime - margin });
        Ok(token)
    }
}

fn unavailable(what: &str, e: &reqwest::Error) -> AuthError {
    tracing::error!(error = %e, "keystone unreachable while {what}");
    AuthError::Unavailable(format!("Keystone is unavailable ({what})"))
}

/// The caller a validated token names, and how long it stays valid.
fn caller_of(t: TokenInfo) -> Result<(Caller, Duration), AuthError> {
    let expires = keystone_time_left(&t.expires_at).ok_or(AuthError::Unauthorized("The token has expired."))?;
    let project = t.project.ok_or(AuthError::Forbidden("A project-scoped token is required."))?;
    let roles: Vec<String> = t.roles.into_iter().filter_map(|r| r.name).collect();
    let admin = roles.iter().any(|r| r.eq_ignore_ascii_case("admin"));
    let _ = t.user.name;
    Ok((
        Caller { user: t.user.id, project: project.id, admin, roles, domain: project.domain.map(|d| d.id) },
        expires,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hdrs(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn noauth_identity_rules() {
        let c = noauth_caller(&hdrs(&[("x-auth-token", "u:p")])).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.project.as_str()), ("u", "p"));
        let c = noauth_caller(&hdrs(&[("x-auth-token", "notused")])).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.project.as_str()), ("notused", "notused"));
        let c = noauth_caller(&hdrs(&[("x-project-id", "p2"), ("x-user-id", "u2")])).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.project.as_str()), ("u2", "p2"));
        assert!(noauth_caller(&hdrs(&[])).unwrap().is_none());
        let c = noauth_caller(&hdrs(&[("x-auth-token", "u:p")])).unwrap().unwrap();
        assert_eq!(check_path_project(&Identity::Noauth, &c, Some("other")).unwrap_err().status, 403);
        assert!(check_path_project(&Identity::Noauth, &c, Some("p")).is_ok());
    }

    #[test]
    fn token_info_becomes_a_caller() {
        let body: TokenBody = serde_json::from_value(serde_json::json!({"token": {
            "expires_at": "2999-01-01T00:00:00.000000Z",
            "user": {"id": "u1", "name": "member-a"},
            "project": {"id": "p1", "name": "a", "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}],
            "catalog": []
        }}))
        .unwrap();
        let (c, ttl) = caller_of(body.token).unwrap();
        assert_eq!((c.user.as_str(), c.project.as_str(), c.admin), ("u1", "p1", false));
        assert!(c.has_role("Member") && c.has_role("reader"));
        assert_eq!(c.domain.as_deref(), Some("default"));
        assert!(ttl > Duration::from_secs(3600));
        let unscoped: TokenBody = serde_json::from_value(serde_json::json!({"token": {
            "expires_at": "2999-01-01T00:00:00Z", "user": {"id": "u1"}, "roles": []}}))
        .unwrap();
        assert!(matches!(caller_of(unscoped.token), Err(AuthError::Forbidden(_))));
    }

    #[test]
    fn token_tags_are_short_and_stable() {
        let t = token_tag("gAAAAABsecret");
        assert_eq!(t.len(), 16);
        assert_eq!(t, token_tag("gAAAAABsecret"));
        assert!(!t.contains("secret"));
    }
}
