//! HashiCorp Vault / OpenBao over the KV version 2 secrets engine, in the
//! layout castellan's Vault key manager uses, so keys move between a
//! castellan cloud and rekey unchanged:
//!
//! - a key lives at `<kv_mountpoint>/data/[<kv_path>/]<id>` where `<id>` is
//!   the key's UUID as 32 hex digits without dashes (`uuid4().hex`);
//! - its record is `{type: "symmetric", value: hex(key bytes), algorithm,
//!   bit_length, name, created}`; rekey adds `project_id`, which castellan
//!   ignores.
//!
//! Vault has no projects. A key rekey stores carries its `project_id` and is
//! refused (as not found) to other projects; a key without one (castellan
//! made it) is readable by every project, as it is to castellan — Vault's
//! own ACL on the path is then the only boundary. `list` returns only the
//! keys carrying the caller's project.
//!
//! Named keys (the job engine's) are also indexed, so that `find_named`
//! costs two reads instead of a walk over the folder: the entry
//! `[<kv_path>/]rekey-names/<sha256(project, name)>` holds `{project_id,
//! name, key_id}`. It is written before the key, so a crash between the two
//! leaves an entry naming a key that does not exist, which `find_named`
//! checks and ignores; it is removed after the key. castellan sees
//! `rekey-names/` as a folder and skips it. A name maps to the key most
//! recently made under it (the engine never makes two).
//!
//! Deleting destroys every version (`DELETE <mount>/metadata/...`), where
//! castellan only soft-deletes the latest version and leaves the bytes
//! undeletable.
//!
//! Every request is idempotent against Vault (a repeated write of the same
//! record to the same id only adds a version), so every transient failure —
//! unreachable, timeout, 429, 5xx, sealed — is retried with backoff; after
//! the last attempt the error says which.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::{sleep, Instant};
use zeroize::Zeroizing;

use crate::config::VaultConfig;
use crate::error::KeyError;
use crate::types::{check_name, check_spec, check_stored, KeyBytes, KeyId, Project};
use crate::KeyManager;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Renew (or log in again) once this fraction of a token's TTL has passed,
/// so a slow request never carries an expired token.
const RENEW_AT_NUM: u32 = 2;
const RENEW_AT_DEN: u32 = 3;

/// How the client proves itself to Vault.
enum Auth {
    Token(Zeroizing<String>),
    AppRole {
        role_id: Zeroizing<String>,
        secret_id: Zeroizing<String>,
    },
}

/// The token in use and when it needs renewing.
struct Session {
    token: Zeroizing<String>,
    /// When the TTL below was granted.
    since: Instant,
    /// `None`: the token does not expire (or its TTL is unknown).
    ttl: Option<Duration>,
    renewable: bool,
}

/// A client for one Vault KV v2 mount. Cheap to share: one connection pool.
pub struct VaultKeyManager {
    http: reqwest::Client,
    base: String,
    mount: String,
    /// `""` or `"<kv_path>/"`.
    prefix: String,
    namespace: Option<String>,
    auth: Auth,
    session: Mutex<Option<Session>>,
    retries: u32,
    backoff: Duration,
}

impl fmt::Debug for VaultKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKeyManager")
            .field("base", &self.base)
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field(
                "auth",
                &match self.auth {
                    Auth::Token(_) => "token([REDACTED])",
                    Auth::AppRole { .. } => "approle([REDACTED])",
                },
            )
            .finish_non_exhaustive()
    }
}

/// The record castellan writes, plus `project_id`.
#[derive(Serialize)]
struct NewRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
    algorithm: &'a str,
    bit_length: u32,
    name: Option<&'a str>,
    created: i64,
    project_id: &'a str,
}

#[derive(Serialize)]
struct Write<'a> {
    data: NewRecord<'a>,
}

/// A record as read back. Lenient where castellan is: its `name` may be a
/// number and `created` may be missing.
#[derive(Deserialize)]
struct Record {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<Zeroizing<String>>,
    #[serde(default)]
    name: Option<serde_json::Value>,
    #[serde(default)]
    created: Option<serde_json::Value>,
    #[serde(default)]
    project_id: Option<String>,
}

impl Record {
    fn name(&self) -> Option<&str> {
        self.name.as_ref().and_then(|v| v.as_str())
    }
    fn created(&self) -> i64 {
        self.created.as_ref().and_then(|v| v.as_i64()).unwrap_or(0)
    }
    /// Whether `project` may use this key (see the module docs).
    fn visible_to(&self, project: &Project) -> bool {
        self.project_id
            .as_deref()
            .is_none_or(|p| p == project.as_str())
    }
}

/// A name index entry (see the module docs).
#[derive(Serialize, Deserialize)]
struct NameEntry {
    project_id: String,
    name: String,
    key_id: String,
}

#[derive(Deserialize)]
struct ReadData {
    data: ReadInner,
}
#[derive(Deserialize)]
struct ReadInner {
    data: Record,
}

#[derive(Deserialize)]
struct ListData {
    data: ListInner,
}
#[derive(Deserialize)]
struct ListInner {
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct AuthAnswer {
    auth: AuthInner,
}
#[derive(Deserialize)]
struct AuthInner {
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct LookupAnswer {
    data: LookupInner,
}
#[derive(Deserialize)]
struct LookupInner {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct VaultErrors {
    #[serde(default)]
    errors: Vec<String>,
}

/// A Vault answer: status and body. The body of a read holds key bytes in
/// hex; it is wiped when dropped.
struct Answer {
    status: StatusCode,
    body: Zeroizing<Vec<u8>>,
}

impl Answer {
    /// Vault's `errors` list, for error messages (never key material: Vault
    /// does not echo request bodies).
    fn errors(&self) -> String {
        match serde_json::from_slice::<VaultErrors>(&self.body) {
            Ok(e) if !e.errors.is_empty() => e.errors.join("; "),
            _ => String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned(),
        }
    }
}

fn simple(id: &KeyId) -> String {
    // A KeyId is always a valid UUID.
    uuid::Uuid::try_parse(id.as_str())
        .map(|u| u.simple().to_string())
        .unwrap_or_else(|_| id.as_str().replace('-', ""))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn hex_decode(hex: &str) -> Option<KeyBytes> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Zeroizing::new(Vec::with_capacity(hex.len() / 2));
    for pair in hex.chunks_exact(2) {
        out.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    Some(KeyBytes::new(std::mem::take(&mut *out)))
}

impl VaultKeyManager {
    /// A client for the Vault in `config`. Nothing is sent yet; an AppRole
    /// login happens on first use.
    pub fn new(config: &VaultConfig) -> Result<Self, KeyError> {
        let base = crate::http::endpoint_base("vault url", &config.url)?;
        let auth = match (&config.token, &config.approle_role_id, &config.approle_secret_id) {
            (Some(t), None, None) if !t.is_empty() => Auth::Token(t.clone()),
            (None, Some(r), Some(s)) if !r.is_empty() && !s.is_empty() => Auth::AppRole {
                role_id: r.clone(),
                secret_id: s.clone(),
            },
            _ => {
                return Err(KeyError::invalid(
                    "vault auth",
                    "give either a token, or both approle_role_id and approle_secret_id",
                ))
            }
        };
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.split('/').all(|part| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                })
        };
        let mount = config.kv_mountpoint.trim_matches('/').to_string();
        if !segment_ok(&mount) {
            return Err(KeyError::invalid(
                "vault kv_mountpoint",
                format!("{mount:?} must be path segments of letters, digits, '-', '_' or '.'"),
            ));
        }
        let prefix = match config.kv_path.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(p) if segment_ok(p) => format!("{p}/"),
            Some(p) => {
                return Err(KeyError::invalid(
                    "vault kv_path",
                    format!("{p:?} must be path segments of letters, digits, '-', '_' or '.'"),
                ))
            }
        };
        if config.timeout_ms == 0 {
            return Err(KeyError::invalid("vault timeout", "must be at least 1 ms"));
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                KeyError::invalid("vault ca_file", format!("{}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                KeyError::invalid("vault ca_file", format!("{}: {e}", ca.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| KeyError::invalid("vault client", e.to_string()))?;
        Ok(VaultKeyManager {
            http,
            base,
            mount,
            prefix,
            namespace: config.namespace.clone().filter(|n| !n.is_empty()),
            auth,
            session: Mutex::new(None),
            retries: config.retries,
            backoff: Duration::from_millis(config.backoff_ms),
        })
    }

    fn data_path(&self, id: &KeyId) -> String {
        format!("/v1/{}/data/{}{}", self.mount, self.prefix, simple(id))
    }

    fn metadata_path(&self, id: &KeyId) -> String {
        format!("/v1/{}/metadata/{}{}", self.mount, self.prefix, simple(id))
    }

    /// `data/` or `metadata/` path of the name index entry of (`project`,
    /// `name`); hashed so any project id and name make one path segment.
    fn name_path(&self, kind: &str, project: &Project, name: &str) -> String {
        let mut input = Vec::with_capacity(project.as_str().len() + name.len() + 1);
        input.extend_from_slice(project.as_str().as_bytes());
        input.push(0);
        input.extend_from_slice(name.as_bytes());
        let digest: String = openssl::sha::sha256(&input).iter().map(|b| format!("{b:02x}")).collect();
        format!("/v1/{}/{kind}/{}rekey-names/{digest}", self.mount, self.prefix)
    }

    /// The key id the index names for (`project`, `name`), if any.
    async fn name_entry(&self, op: &'static str, project: &Project, name: &str) -> Result<Option<KeyId>, KeyError> {
        let answer = self
            .request(op, project, Method::GET, &self.name_path("data", project, name), None)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                #[derive(Deserialize)]
                struct Read {
                    data: ReadEntry,
                }
                #[derive(Deserialize)]
                struct ReadEntry {
                    data: NameEntry,
                }
                let e: Read = serde_json::from_slice(&answer.body)
                    .map_err(|e| protocol(op, format!("name index entry: {e}")))?;
                let e = e.data.data;
                if e.project_id != project.as_str() || e.name != name {
                    return Ok(None);
                }
                Ok(KeyId::parse(&e.key_id).ok())
            }
            s => Err(protocol(op, format!("HTTP {}: {}", s.as_u16(), answer.errors()))),
        }
    }

    /// One HTTP exchange with retries of transient failures. `token` is
    /// `None` for the login itself.
    async fn exchange(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Answer, KeyError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0u32;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(token) = token {
                let mut value = HeaderValue::from_str(token)
                    .map_err(|_| KeyError::invalid("vault token", "not a valid header value"))?;
                value.set_sensitive(true);
                req = req.header("X-Vault-Token", value);
            }
            if let Some(ns) = &self.namespace {
                req = req.header("X-Vault-Namespace", ns.as_str());
            }
            if let Some(body) = body {
                // reqwest owns (and frees) this copy; it cannot be wiped.
                req = req
                    .header("Content-Type", "application/json")
                    .body(body.to_vec());
            }
            let cause = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = match resp.bytes().await {
                        Ok(b) => Zeroizing::new(b.to_vec()),
                        Err(e) => Zeroizing::new(format!("{{\"errors\":[{:?}]}}", error_chain(&e)).into_bytes()),
                    };
                    let answer = Answer { status, body };
                    let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    if !transient {
                        tracing::debug!(op, %method, path, status = status.as_u16(), attempt, "vault answered");
                        return Ok(answer);
                    }
                    let errors = answer.errors();
                    if status == StatusCode::SERVICE_UNAVAILABLE && errors.contains("sealed") {
                        format!("Vault is sealed (HTTP 503: {errors})")
                    } else {
                        format!("HTTP {status}: {errors}")
                    }
                }
                Err(e) if e.is_timeout() => format!("no answer in time: {}", error_chain(&e)),
                Err(e) => format!("unreachable: {}", error_chain(&e)),
            };
            if attempt >= self.retries {
                tracing::warn!(op, %method, path, attempts = attempt + 1, %cause, "vault unavailable");
                return Err(KeyError::Unavailable {
                    op,
                    cause: format!(
                        "{cause} ({} attempt{} to {})",
                        attempt + 1,
                        if attempt == 0 { "" } else { "s" },
                        self.base
                    ),
                });
            }
            let delay = self
                .backoff
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_BACKOFF);
            tracing::warn!(op, %method, path, attempt, %cause, retry_in_ms = delay.as_millis() as u64, "vault request failed; retrying");
            sleep(delay).await;
            attempt += 1;
        }
    }

    /// A fresh session: an AppRole login, or the configured token with its
    /// TTL as `lookup-self` reports it.
    async fn open_session(&self, op: &'static str) -> Result<Session, KeyError> {
        match &self.auth {
            Auth::AppRole { role_id, secret_id } => {
                #[derive(Serialize)]
                struct Login<'a> {
                    role_id: &'a str,
                    secret_id: &'a str,
                }
                let body = Zeroizing::new(
                    serde_json::to_vec(&Login {
                        role_id,
                        secret_id,
                    })
                    .map_err(|e| KeyError::storage("encode login", e))?,
                );
                let since = Instant::now();
                let answer = self
                    .exchange(op, Method::POST, "/v1/auth/approle/login", None, Some(&body))
                    .await?;
                if !answer.status.is_success() {
                    return Err(KeyError::Forbidden {
                        op,
                        project: Project::new("vault").expect("static project"),
                        detail: format!(
                            "AppRole login refused (HTTP {}): {}",
                            answer.status.as_u16(),
                            answer.errors()
                        ),
                    });
                }
                let auth: AuthAnswer = serde_json::from_slice(&answer.body)
                    .map_err(|e| protocol(op, format!("AppRole login answer: {e}")))?;
                Ok(session_from(auth.auth.client_token, since, auth.auth.lease_duration, auth.auth.renewable))
            }
            Auth::Token(token) => {
                let since = Instant::now();
                let answer = self
                    .exchange(op, Method::GET, "/v1/auth/token/lookup-self", Some(token), None)
                    .await?;
                // A token whose policy denies lookup-self still works for the
                // KV paths; its TTL is then unknown and it is never renewed.
                let (ttl, renewable) = if answer.status.is_success() {
                    serde_json::from_slice::<LookupAnswer>(&answer.body)
                        .map(|l| (l.data.ttl, l.data.renewable))
                        .unwrap_or((0, false))
                } else {
                    (0, false)
                };
                Ok(session_from(token.clone(), since, ttl, renewable))
            }
        }
    }

    /// The token to send now, renewed (or re-obtained) once two thirds of
    /// its TTL have passed.
    async fn token(&self, op: &'static str) -> Result<Zeroizing<String>, KeyError> {
        let mut guard = self.session.lock().await;
        let due = match guard.as_ref() {
            None => true,
            Some(s) => s
                .ttl
                .is_some_and(|ttl| s.since.elapsed() >= ttl * RENEW_AT_NUM / RENEW_AT_DEN),
        };
        if due {
            // Renewal happens on use: a token idle past its TTL has expired
            // and only a new login helps.
            let renewed = match guard.take() {
                Some(s) if s.renewable && s.ttl.is_some_and(|ttl| s.since.elapsed() < ttl) => {
                    self.renew(op, s).await
                }
                Some(s) if matches!(self.auth, Auth::Token(_)) => Some(s),
                _ => None,
            };
            let session = match renewed {
                Some(s) => s,
                None => self.open_session(op).await?,
            };
            *guard = Some(session);
        }
        Ok(guard.as_ref().expect("session set above").token.clone())
    }

    /// `renew-self`; `None` when Vault refuses (max TTL reached, revoked),
    /// so the caller logs in again.
    async fn renew(&self, op: &'static str, session: Session) -> Option<Session> {
        let since = Instant::now();
        let answer = self
            .exchange(op, Method::POST, "/v1/auth/token/renew-self", Some(&session.token), Some(b"{}"))
            .await
            .ok()?;
        if !answer.status.is_success() {
            tracing::info!(op, status = answer.status.as_u16(), "vault token renewal refused; logging in again");
            return None;
        }
        let auth: AuthAnswer = serde_json::from_slice(&answer.body).ok()?;
        let granted = Duration::from_secs(auth.auth.lease_duration);
        // Near the max TTL Vault grants less than asked; once what is left
        // is too short to be useful, start over with a new login.
        if granted < Duration::from_secs(2) && matches!(self.auth, Auth::AppRole { .. }) {
            tracing::info!(op, "vault token is at its max TTL; logging in again");
            return None;
        }
        tracing::info!(op, ttl_s = granted.as_secs(), "vault token renewed");
        Some(session_from(auth.auth.client_token, since, auth.auth.lease_duration, auth.auth.renewable))
    }

    /// An authenticated request. A 403 with an AppRole token (expired,
    /// revoked) logs in again once before giving up.
    async fn request(
        &self,
        op: &'static str,
        project: &Project,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, KeyError> {
        let mut relogged = false;
        loop {
            let token = self.token(op).await?;
            let answer = self.exchange(op, method.clone(), path, Some(&token), body).await?;
            if answer.status == StatusCode::FORBIDDEN {
                if !relogged && matches!(self.auth, Auth::AppRole { .. }) {
                    tracing::info!(op, "vault refused the AppRole token; logging in again");
                    relogged = true;
                    *self.session.lock().await = None;
                    continue;
                }
                return Err(KeyError::Forbidden {
                    op,
                    project: project.clone(),
                    detail: format!("Vault denied {method} {path}: {}", answer.errors()),
                });
            }
            return Ok(answer);
        }
    }

    /// The record of `id`, or `None` if it does not exist (or was deleted).
    async fn read(
        &self,
        op: &'static str,
        project: &Project,
        id: &KeyId,
    ) -> Result<Option<Record>, KeyError> {
        let answer = self
            .request(op, project, Method::GET, &self.data_path(id), None)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let read: ReadData = serde_json::from_slice(&answer.body)
                    .map_err(|e| protocol(op, format!("record of key {id} is not KV v2 JSON ({:?} error at column {})", e.classify(), e.column())))?;
                Ok(Some(read.data.data))
            }
            s => Err(protocol(op, format!("HTTP {}: {}", s.as_u16(), answer.errors()))),
        }
    }

    /// The record of `id` if `project` may use it.
    async fn read_visible(
        &self,
        op: &'static str,
        project: &Project,
        id: &KeyId,
    ) -> Result<Option<Record>, KeyError> {
        Ok(self
            .read(op, project, id)
            .await?
            .filter(|r| r.visible_to(project)))
    }

    async fn write(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        const OP: &str = "store key";
        let id = KeyId::random();
        if let Some(name) = name {
            let entry = serde_json::json!({"data": NameEntry {
                project_id: project.as_str().to_owned(),
                name: name.to_owned(),
                key_id: id.to_string(),
            }});
            let body = serde_json::to_vec(&entry).map_err(|e| KeyError::storage("encode name entry", e))?;
            let answer = self
                .request(OP, project, Method::POST, &self.name_path("data", project, name), Some(&body))
                .await?;
            if !answer.status.is_success() {
                return Err(protocol(OP, format!("name index: HTTP {}: {}", answer.status.as_u16(), answer.errors())));
            }
        }
        let value = crate::passphrase::passphrase_hex(key);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let body = Zeroizing::new(
            serde_json::to_vec(&Write {
                data: NewRecord {
                    kind: "symmetric",
                    value: &value,
                    algorithm,
                    bit_length,
                    name,
                    created,
                    project_id: project.as_str(),
                },
            })
            .map_err(|e| KeyError::storage("encode record", e))?,
        );
        let answer = self
            .request(OP, project, Method::POST, &self.data_path(&id), Some(&body))
            .await?;
        if !answer.status.is_success() {
            return Err(protocol(
                OP,
                format!("HTTP {}: {}", answer.status.as_u16(), answer.errors()),
            ));
        }
        tracing::debug!(%project, %id, "vault key stored");
        Ok(id)
    }

    /// Every (id, record) `project` may list: those carrying its project id.
    async fn records(&self, op: &'static str, project: &Project) -> Result<Vec<(KeyId, Record)>, KeyError> {
        let path = format!("/v1/{}/metadata/{}?list=true", self.mount, self.prefix);
        let answer = self.request(op, project, Method::GET, &path, None).await?;
        let names = match answer.status {
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            s if s.is_success() => {
                serde_json::from_slice::<ListData>(&answer.body)
                    .map_err(|e| protocol(op, format!("list answer: {e}")))?
                    .data
                    .keys
            }
            s => return Err(protocol(op, format!("HTTP {}: {}", s.as_u16(), answer.errors()))),
        };
        let mut out = Vec::new();
        // Folders end in '/', other entries that are no UUID are not keys.
        for id in names.iter().filter_map(|n| KeyId::parse(n).ok()) {
            if let Some(record) = self.read(op, project, &id).await? {
                if record.project_id.as_deref() == Some(project.as_str()) {
                    out.push((id, record));
                }
            }
        }
        out.sort_by(|a, b| a.1.created().cmp(&b.1.created()).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }
}

fn session_from(token: Zeroizing<String>, since: Instant, ttl_s: u64, renewable: bool) -> Session {
    Session {
        token,
        since,
        ttl: (ttl_s > 0).then(|| Duration::from_secs(ttl_s)),
        renewable,
    }
}

fn protocol(op: &'static str, cause: impl Into<String>) -> KeyError {
    KeyError::Protocol {
        op,
        cause: cause.into(),
    }
}

#[async_trait]
impl KeyManager for VaultKeyManager {
    fn backend(&self) -> &'static str {
        "vault"
    }

    async fn create_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        if let Some(name) = name {
            check_name(name)?;
        }
        check_spec(algorithm, bit_length)?;
        // Generated here (as castellan does): KV has no key generation.
        let key = KeyBytes::random(bit_length as usize / 8)?;
        self.write(project, name, &key, algorithm, bit_length).await
    }

    async fn get_key(&self, project: &Project, id: &KeyId) -> Result<KeyBytes, KeyError> {
        const OP: &str = "get key";
        let record = self
            .read_visible(OP, project, id)
            .await?
            .ok_or_else(|| KeyError::NotFound {
                project: project.clone(),
                id: id.clone(),
            })?;
        if record.kind.as_deref() != Some("symmetric") {
            return Err(protocol(OP, format!("key {id} is not a symmetric key")));
        }
        let value = record
            .value
            .as_ref()
            .ok_or_else(|| protocol(OP, format!("key {id} has no value")))?;
        hex_decode(value).ok_or_else(|| protocol(OP, format!("the value of key {id} is not hex")))
    }

    async fn store_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        if let Some(name) = name {
            check_name(name)?;
        }
        check_stored(key, algorithm, bit_length)?;
        self.write(project, name, key, algorithm, bit_length).await
    }

    async fn find_named(&self, project: &Project, name: &str) -> Result<Option<KeyId>, KeyError> {
        const OP: &str = "find named key";
        check_name(name)?;
        let Some(id) = self.name_entry(OP, project, name).await? else {
            return Ok(None);
        };
        // The entry is written first: it may name a key a crash never made,
        // or one deleted since.
        let key = self.read(OP, project, &id).await?;
        Ok(key
            .filter(|r| r.project_id.as_deref() == Some(project.as_str()) && r.name() == Some(name))
            .map(|_| id))
    }

    async fn list_named(&self, project: &Project, prefix: &str) -> Result<Vec<(KeyId, String)>, KeyError> {
        Ok(self
            .records("list named keys", project)
            .await?
            .into_iter()
            .filter_map(|(id, r)| {
                let name = r.name()?;
                name.starts_with(prefix).then(|| (id, name.to_string()))
            })
            .collect())
    }

    async fn delete_key(&self, project: &Project, id: &KeyId) -> Result<(), KeyError> {
        const OP: &str = "delete key";
        let Some(record) = self.read_visible(OP, project, id).await? else {
            return Err(KeyError::NotFound {
                project: project.clone(),
                id: id.clone(),
            });
        };
        let answer = self
            .request(OP, project, Method::DELETE, &self.metadata_path(id), None)
            .await?;
        if !answer.status.is_success() {
            return Err(protocol(
                OP,
                format!("HTTP {}: {}", answer.status.as_u16(), answer.errors()),
            ));
        }
        tracing::debug!(%project, %id, "vault key destroyed (every version)");
        if let Some(name) = record.name().filter(|n| check_name(n).is_ok()) {
            if self.name_entry(OP, project, name).await? == Some(id.clone()) {
                // A failure here leaves an entry naming a key that is gone,
                // which `find_named` ignores.
                if let Err(e) = self
                    .request(OP, project, Method::DELETE, &self.name_path("metadata", project, name), None)
                    .await
                {
                    tracing::warn!(%project, %id, error = %e, "could not remove the name index entry of a deleted key");
                }
            }
        }
        Ok(())
    }

    async fn exists(&self, project: &Project, id: &KeyId) -> Result<bool, KeyError> {
        Ok(self.read_visible("key exists", project, id).await?.is_some())
    }

    async fn list(&self, project: &Project) -> Result<Vec<KeyId>, KeyError> {
        Ok(self
            .records("list keys", project)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let key = KeyBytes::from_slice(&[0, 1, 0x0a, 0xff]);
        let hex = crate::passphrase::passphrase_hex(&key);
        assert_eq!(hex.as_str(), "00010aff");
        assert_eq!(hex_decode(&hex).unwrap(), key);
        assert_eq!(hex_decode("00010AFF").unwrap(), key);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
    }

    #[test]
    fn castellan_records_without_project_are_shared() {
        let r: Record = serde_json::from_str(
            r#"{"type":"symmetric","value":"00","algorithm":"AES","bit_length":8,"name":1700000000,"created":null}"#,
        )
        .unwrap();
        let p = Project::new("p").unwrap();
        assert!(r.visible_to(&p));
        assert_eq!(r.name(), None, "a numeric castellan name is no rekey name");
        assert_eq!(r.created(), 0);
    }

    #[test]
    fn paths_follow_castellans_layout() {
        let mut c = VaultConfig::new("http://127.0.0.1:8200/v1/");
        c.token = Some(Zeroizing::new("t".into()));
        c.kv_path = Some("/cinder/keys/".into());
        let km = VaultKeyManager::new(&c).unwrap();
        let id = KeyId::parse("0f5a3d5e-9d0b-4c53-9d35-0e6a4b0e6f00").unwrap();
        assert_eq!(km.base, "http://127.0.0.1:8200");
        assert_eq!(
            km.data_path(&id),
            "/v1/secret/data/cinder/keys/0f5a3d5e9d0b4c539d350e6a4b0e6f00"
        );
        assert_eq!(
            km.metadata_path(&id),
            "/v1/secret/metadata/cinder/keys/0f5a3d5e9d0b4c539d350e6a4b0e6f00"
        );
        assert!(!format!("{km:?}").contains("\"t\""));
    }

    #[test]
    fn auth_must_be_one_of_token_or_approle() {
        let mut c = VaultConfig::new("http://127.0.0.1:8200");
        assert!(VaultKeyManager::new(&c).is_err(), "no auth");
        c.token = Some(Zeroizing::new("t".into()));
        c.approle_role_id = Some(Zeroizing::new("r".into()));
        assert!(VaultKeyManager::new(&c).is_err(), "both");
        c.token = None;
        assert!(VaultKeyManager::new(&c).is_err(), "role without secret");
        c.approle_secret_id = Some(Zeroizing::new("s".into()));
        assert!(VaultKeyManager::new(&c).is_ok());
        c.kv_path = Some("../x".into());
        assert!(VaultKeyManager::new(&c).is_err(), "dot-dot path");
    }
}
