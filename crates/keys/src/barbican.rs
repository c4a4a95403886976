//! OpenStack Barbican over its v1 REST API.
//!
//! - store: `POST /v1/secrets` with a base64 `application/octet-stream`
//!   payload;
//! - create: `POST /v1/orders` of type `key`, poll the order until ACTIVE and
//!   take its `secret_ref` (as castellan does, so Barbican generates the key),
//!   then delete the order, which castellan once forgot (bug 1638018);
//! - get: `GET /v1/secrets/{id}/payload` with `Accept:
//!   application/octet-stream`; delete: `DELETE /v1/secrets/{id}`; exists:
//!   `GET /v1/secrets/{id}` (metadata); list: `GET /v1/secrets?limit&offset`.
//!
//! Only UUIDs are taken from Barbican's refs; every URL is built from the
//! configured endpoint, so a Barbican whose `host_href` is wrong still works.
//!
//! Behind Keystone ([`BarbicanAuth::Keystone`]): rekey authenticates as its
//! own service user, with a token scoped to the project that owns the key
//! (the service user holds a role there, e.g. `member` inherited on the
//! domain). So a secret belongs to the volume's project, as Cinder's do, and
//! a background step (a clone's rekey, a late key deletion) never depends on
//! the caller's token, which may have expired or been revoked by then. Tokens
//! are cached per project and renewed before they expire, or at once when
//! Barbican answers 401.
//!
//! Retries: a request that Barbican cannot have acted on (connection refused,
//! 502/503/504) is retried for every method; a timeout, a reset or another
//! 5xx is retried only for GET and DELETE, because a POST that timed out may
//! have created a secret, and resending it would leave a second one behind.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use reqwest::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, Instant};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{BarbicanAuth, BarbicanConfig};
use crate::error::KeyError;
use crate::http::{endpoint_base, keystone_time_left};
use crate::types::{check_name, check_spec, check_stored, KeyBytes, KeyId, Project, MAX_BIT_LENGTH};
use crate::KeyManager;

const OCTET_STREAM: &str = "application/octet-stream";
const JSON: &str = "application/json";
/// Barbican's `max_limit_paging` default.
const PAGE: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A client for one Barbican endpoint. Cheap to share: one connection pool.
pub struct BarbicanKeyManager {
    http: reqwest::Client,
    base: String,
    auth: BarbicanAuth,
    /// Keystone tokens of the service user, one per project.
    tokens: tokio::sync::Mutex<HashMap<String, ProjectToken>>,
    retries: u32,
    backoff: Duration,
    order_timeout: Duration,
}

impl fmt::Debug for BarbicanKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarbicanKeyManager")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct NewSecret<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    payload: &'a str,
    payload_content_type: &'static str,
    payload_content_encoding: &'static str,
    algorithm: &'a str,
    bit_length: u32,
    secret_type: &'static str,
}

#[derive(Serialize)]
struct NewOrder<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    meta: OrderMeta<'a>,
}

#[derive(Serialize)]
struct OrderMeta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    algorithm: &'a str,
    bit_length: u32,
    payload_content_type: &'static str,
}

#[derive(Deserialize)]
struct SecretRef {
    secret_ref: String,
}

#[derive(Deserialize)]
struct OrderRef {
    order_ref: String,
}

#[derive(Deserialize)]
struct Order {
    status: String,
    secret_ref: Option<String>,
    error_status_code: Option<serde_json::Value>,
    error_reason: Option<String>,
}

#[derive(Deserialize)]
struct SecretEntry {
    secret_ref: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct SecretList {
    secrets: Vec<SecretEntry>,
    total: Option<usize>,
}

/// How long before its expiry a project token is replaced.
const RENEW_MARGIN: Duration = Duration::from_secs(120);

/// The Keystone service user rekey signs in to Barbican as.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeystoneCredentials {
    /// Keystone's v3 endpoint, e.g. `http://127.0.0.1:5000/v3`.
    pub auth_url: String,
    /// The service user; it needs a role in every project whose keys it keeps.
    pub username: String,
    /// Its password.
    pub password: Zeroizing<String>,
    /// Its domain.
    #[serde(default = "default_domain")]
    pub user_domain_name: String,
}

fn default_domain() -> String {
    "Default".into()
}

impl KeystoneCredentials {
    /// Credentials of `username` (domain Default) at `auth_url`.
    pub fn new(auth_url: impl Into<String>, username: impl Into<String>, password: Zeroizing<String>) -> Self {
        KeystoneCredentials {
            auth_url: auth_url.into(),
            username: username.into(),
            password,
            user_domain_name: default_domain(),
        }
    }

    /// In another user domain.
    pub fn with_user_domain(mut self, domain: impl Into<String>) -> Self {
        self.user_domain_name = domain.into();
        self
    }
}

impl fmt::Debug for KeystoneCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoneCredentials")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("user_domain_name", &self.user_domain_name)
            .finish()
    }
}

struct ProjectToken {
    token: Zeroizing<String>,
    renew_at: Instant,
}

/// One attempt's failure that may be worth another attempt.
struct Transient {
    cause: String,
    /// True when Barbican cannot have acted on the request.
    not_delivered: bool,
}

impl BarbicanKeyManager {
    /// A client for the endpoint in `config`. Nothing is sent yet.
    pub fn new(config: &BarbicanConfig) -> Result<Self, KeyError> {
        let base = endpoint_base("barbican url", &config.url)?;
        if config.timeout_ms == 0 {
            return Err(KeyError::invalid(
                "barbican timeout",
                "must be at least 1 ms",
            ));
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| KeyError::invalid("barbican client", e.to_string()))?;
        Ok(BarbicanKeyManager {
            http,
            base,
            auth: config.auth.clone(),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            retries: config.retries,
            backoff: Duration::from_millis(config.backoff_ms),
            order_timeout: Duration::from_millis(config.order_timeout_ms),
        })
    }

    /// Sends one request, retrying transient failures with exponential
    /// backoff. Returns the first answer that is not a retryable 5xx, and
    /// whether an earlier attempt may have reached Barbican.
    async fn send(
        &self,
        op: &'static str,
        project: &Project,
        method: Method,
        path: &str,
        accept: &'static str,
        body: Option<&[u8]>,
    ) -> Result<(Response, bool), KeyError> {
        let idempotent = method == Method::GET || method == Method::DELETE;
        let url = format!("{}{path}", self.base);
        let mut maybe_delivered = false;
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-Project-Id", project.as_str())
                .header("Accept", accept);
            match &self.auth {
                BarbicanAuth::Noauth => {}
                BarbicanAuth::Token { token } => req = req.header("X-Auth-Token", token.as_str()),
                BarbicanAuth::Keystone(k) => {
                    let token = self.project_token(k, op, project, renewed).await?;
                    req = req.header("X-Auth-Token", token.as_str());
                }
            }
            if let Some(body) = body {
                // reqwest owns (and frees) this copy; it cannot be wiped.
                req = req.header("Content-Type", JSON).body(body.to_vec());
            }
            let transient = match req.send().await {
                // Our token expired or was revoked early: one more try with a new one.
                Ok(resp)
                    if resp.status() == StatusCode::UNAUTHORIZED
                        && !renewed
                        && matches!(self.auth, BarbicanAuth::Keystone(_)) =>
                {
                    tracing::info!(op, %project, "barbican refused our keystone token; renewing it");
                    renewed = true;
                    continue;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let unserved = matches!(status.as_u16(), 502..=504);
                    if status.is_server_error() && (idempotent || unserved) {
                        let cause = format!("HTTP {status}: {}", describe(resp, None).await);
                        Transient {
                            cause,
                            not_delivered: unserved,
                        }
                    } else {
                        tracing::debug!(op, %method, path, status = status.as_u16(), attempt, "barbican answered");
                        return Ok((resp, maybe_delivered));
                    }
                }
                Err(e) => Transient {
                    cause: error_chain(&e),
                    not_delivered: e.is_connect(),
                },
            };
            maybe_delivered |= !transient.not_delivered;
            let retry = attempt < self.retries && (idempotent || transient.not_delivered);
            if !retry {
                tracing::warn!(op, %method, path, attempts = attempt + 1, cause = %transient.cause, "barbican unavailable");
                return Err(KeyError::Unavailable {
                    op,
                    cause: format!(
                        "{} ({} attempt{} to {})",
                        transient.cause,
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
            tracing::warn!(op, %method, path, attempt, cause = %transient.cause, retry_in_ms = delay.as_millis() as u64, "barbican request failed; retrying");
            sleep(delay).await;
            attempt += 1;
        }
    }

    /// The service user's token for `project`, renewed when `force`d or
    /// within [`RENEW_MARGIN`] of its expiry.
    async fn project_token(
        &self,
        k: &KeystoneCredentials,
        op: &'static str,
        project: &Project,
        force: bool,
    ) -> Result<Zeroizing<String>, KeyError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(project.as_str()) {
            if !force && Instant::now() < t.renew_at {
                return Ok(t.token.clone());
            }
        }
        let body = Zeroizing::new(
            serde_json::json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": k.username, "domain": {"name": k.user_domain_name},
                    "password": k.password.as_str()}}},
                "scope": {"project": {"id": project.as_str()}}
            }})
            .to_string(),
        );
        let url = format!("{}/auth/tokens", k.auth_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", JSON)
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| KeyError::Unavailable {
                op,
                cause: format!("keystone: {}", error_chain(&e)),
            })?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(KeyError::Unavailable {
                op,
                cause: format!("keystone answered HTTP {status}"),
            });
        }
        if status != StatusCode::CREATED {
            return Err(KeyError::Forbidden {
                op,
                project: project.clone(),
                detail: format!(
                    "keystone gave user {} no token for the project (HTTP {status}); it needs a role there",
                    k.username
                ),
            });
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| Zeroizing::new(v.to_owned()))
            .ok_or_else(|| KeyError::Protocol {
                op,
                cause: "keystone issued no X-Subject-Token".into(),
            })?;
        #[derive(Deserialize)]
        struct Issued {
            token: IssuedToken,
        }
        #[derive(Deserialize)]
        struct IssuedToken {
            expires_at: String,
        }
        let issued: Issued = json(resp, op).await?;
        let lifetime = keystone_time_left(&issued.token.expires_at).unwrap_or(Duration::ZERO);
        let renew_at = Instant::now() + lifetime - RENEW_MARGIN.min(lifetime / 2);
        tracing::debug!(%project, lifetime_s = lifetime.as_secs(), "keystone token for barbican obtained");
        tokens.insert(project.as_str().to_owned(), ProjectToken { token: token.clone(), renew_at });
        Ok(token)
    }

    async fn create_order(
        &self,
        project: &Project,
        name: Option<&str>,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        const OP: &str = "create key";
        let body = serde_json::to_vec(&NewOrder {
            kind: "key",
            meta: OrderMeta {
                name,
                algorithm,
                bit_length,
                payload_content_type: OCTET_STREAM,
            },
        })
        .map_err(|e| KeyError::Protocol {
            op: OP,
            cause: e.to_string(),
        })?;
        let (resp, _) = self
            .send(OP, project, Method::POST, "/v1/orders", JSON, Some(&body))
            .await?;
        let resp = check(resp, OP, project, None, None).await?;
        let order: OrderRef = json(resp, OP).await?;
        ref_uuid(&order.order_ref, "orders", OP)
    }

    /// Polls order `order` until it is ACTIVE (→ its secret) or ERROR.
    async fn wait_order(&self, project: &Project, order: &KeyId) -> Result<KeyId, KeyError> {
        const OP: &str = "create key";
        let deadline = Instant::now() + self.order_timeout;
        let mut pause = Duration::from_millis(25);
        loop {
            let (resp, _) = self
                .send(
                    OP,
                    project,
                    Method::GET,
                    &format!("/v1/orders/{order}"),
                    JSON,
                    None,
                )
                .await?;
            let resp = check(resp, OP, project, Some(order), None).await?;
            let state: Order = json(resp, OP).await?;
            match state.status.as_str() {
                "ACTIVE" => {
                    let secret = state.secret_ref.ok_or_else(|| KeyError::Protocol {
                        op: OP,
                        cause: format!("order {order} is ACTIVE without a secret_ref"),
                    })?;
                    return ref_uuid(&secret, "secrets", OP);
                }
                "ERROR" => {
                    let code = state
                        .error_status_code
                        .map(|c| c.to_string().trim_matches('"').to_string())
                        .unwrap_or_default();
                    let reason = state.error_reason.unwrap_or_default();
                    let cause = format!("order {order} failed with status {code}: {reason}");
                    return Err(if code.starts_with('4') {
                        KeyError::invalid("key order", cause)
                    } else {
                        KeyError::Protocol { op: OP, cause }
                    });
                }
                _ if Instant::now() >= deadline => {
                    return Err(KeyError::Unavailable {
                        op: OP,
                        cause: format!(
                            "order {order} still {} after {:?}",
                            state.status, self.order_timeout
                        ),
                    })
                }
                _ => {
                    sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Deletes a finished order; a leftover order holds no key, so failing
    /// here is logged, not returned.
    async fn delete_order(&self, project: &Project, order: &KeyId) {
        match self
            .send(
                "delete order",
                project,
                Method::DELETE,
                &format!("/v1/orders/{order}"),
                JSON,
                None,
            )
            .await
        {
            Ok((resp, _))
                if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND =>
            {
                tracing::debug!(%project, order_id = %order, "deleted key order");
            }
            Ok((resp, _)) => {
                tracing::warn!(%project, order_id = %order, status = resp.status().as_u16(), "could not delete key order")
            }
            Err(e) => {
                tracing::warn!(%project, order_id = %order, error = %e, "could not delete key order")
            }
        }
    }
}

#[async_trait]
impl KeyManager for BarbicanKeyManager {
    fn backend(&self) -> &'static str {
        "barbican"
    }

    async fn create_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        check_spec(algorithm, bit_length)?;
        name.map(check_name).transpose()?;
        let order = self.create_order(project, name, algorithm, bit_length).await?;
        let result = self.wait_order(project, &order).await;
        self.delete_order(project, &order).await;
        let id = result?;
        tracing::info!(backend = "barbican", %project, key_id = %id, order_id = %order, algorithm, bit_length, "created key");
        Ok(id)
    }

    async fn get_key(&self, project: &Project, id: &KeyId) -> Result<KeyBytes, KeyError> {
        const OP: &str = "get key";
        let (resp, _) = self
            .send(
                OP,
                project,
                Method::GET,
                &format!("/v1/secrets/{id}/payload"),
                OCTET_STREAM,
                None,
            )
            .await?;
        let mut resp = check(resp, OP, project, Some(id), None).await?;
        let limit = MAX_BIT_LENGTH as usize / 8;
        let mut key = Zeroizing::new(Vec::with_capacity(limit));
        loop {
            let chunk = resp.chunk().await.map_err(|e| KeyError::Unavailable {
                op: OP,
                cause: error_chain(&e),
            })?;
            let Some(chunk) = chunk else { break };
            if key.len() + chunk.len() > limit {
                return Err(KeyError::Protocol {
                    op: OP,
                    cause: format!("secret {id} is larger than {limit} bytes"),
                });
            }
            key.extend_from_slice(&chunk);
            // Wipe the transport's copy when we hold the only reference.
            if let Ok(mut owned) = chunk.try_into_mut() {
                owned.zeroize();
            }
        }
        if key.is_empty() {
            return Err(KeyError::Protocol {
                op: OP,
                cause: format!("secret {id} has an empty payload"),
            });
        }
        tracing::debug!(backend = "barbican", %project, key_id = %id, "read key");
        Ok(KeyBytes::new(std::mem::take(&mut *key)))
    }

    async fn store_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        const OP: &str = "store key";
        check_stored(key, algorithm, bit_length)?;
        name.map(check_name).transpose()?;
        let payload =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
        let body = Zeroizing::new(
            serde_json::to_vec(&NewSecret {
                name,
                payload: &payload,
                payload_content_type: OCTET_STREAM,
                payload_content_encoding: "base64",
                algorithm,
                bit_length,
                secret_type: "symmetric",
            })
            .map_err(|e| KeyError::Protocol {
                op: OP,
                cause: e.to_string(),
            })?,
        );
        let (resp, _) = self
            .send(OP, project, Method::POST, "/v1/secrets", JSON, Some(&body))
            .await?;
        let resp = check(resp, OP, project, None, Some(&payload)).await?;
        let created: SecretRef = json(resp, OP).await?;
        let id = ref_uuid(&created.secret_ref, "secrets", OP)?;
        tracing::info!(backend = "barbican", %project, key_id = %id, algorithm, bit_length, "stored key");
        Ok(id)
    }

    async fn delete_key(&self, project: &Project, id: &KeyId) -> Result<(), KeyError> {
        const OP: &str = "delete key";
        let (resp, maybe_delivered) = self
            .send(
                OP,
                project,
                Method::DELETE,
                &format!("/v1/secrets/{id}"),
                JSON,
                None,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND && maybe_delivered {
            // An earlier attempt timed out after Barbican had deleted it.
            tracing::info!(backend = "barbican", %project, key_id = %id, "key already gone after a retried delete");
            return Ok(());
        }
        check(resp, OP, project, Some(id), None).await?;
        tracing::info!(backend = "barbican", %project, key_id = %id, "deleted key");
        Ok(())
    }

    async fn exists(&self, project: &Project, id: &KeyId) -> Result<bool, KeyError> {
        const OP: &str = "look up key";
        let (resp, _) = self
            .send(
                OP,
                project,
                Method::GET,
                &format!("/v1/secrets/{id}"),
                JSON,
                None,
            )
            .await?;
        // Another project's secret is 403: it does not exist for this project.
        match resp.status() {
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(false),
            _ => check(resp, OP, project, Some(id), None).await.map(|_| true),
        }
    }

    async fn list(&self, project: &Project) -> Result<Vec<KeyId>, KeyError> {
        let all = self.list_page_all(project, None).await?;
        Ok(all.into_iter().map(|(id, _)| id).collect())
    }

    async fn find_named(&self, project: &Project, name: &str) -> Result<Option<KeyId>, KeyError> {
        check_name(name)?;
        // Barbican filters by exact name; the name's characters need no escaping.
        let found = self.list_page_all(project, Some(name)).await?;
        Ok(found.into_iter().find(|(_, n)| n.as_deref() == Some(name)).map(|(id, _)| id))
    }

    async fn list_named(&self, project: &Project, prefix: &str) -> Result<Vec<(KeyId, String)>, KeyError> {
        let all = self.list_page_all(project, None).await?;
        Ok(all
            .into_iter()
            .filter_map(|(id, n)| n.filter(|n| n.starts_with(prefix)).map(|n| (id, n)))
            .collect())
    }
}

impl BarbicanKeyManager {
    /// Every secret of `project` (with the given name, if any) as (id, name),
    /// page by page.
    async fn list_page_all(&self, project: &Project, name: Option<&str>) -> Result<Vec<(KeyId, Option<String>)>, KeyError> {
        const OP: &str = "list keys";
        let filter = name.map(|n| format!("&name={n}")).unwrap_or_default();
        let mut out = Vec::new();
        loop {
            let path = format!("/v1/secrets?limit={PAGE}&offset={}{filter}", out.len());
            let (resp, _) = self
                .send(OP, project, Method::GET, &path, JSON, None)
                .await?;
            let resp = check(resp, OP, project, None, None).await?;
            let page: SecretList = json(resp, OP).await?;
            let n = page.secrets.len();
            for s in page.secrets {
                out.push((ref_uuid(&s.secret_ref, "secrets", OP)?, s.name));
            }
            if n < PAGE || page.total.is_some_and(|t| out.len() >= t) {
                return Ok(out);
            }
        }
    }
}

/// Maps a non-2xx answer to an error; passes 2xx through.
async fn check(
    resp: Response,
    op: &'static str,
    project: &Project,
    id: Option<&KeyId>,
    scrub: Option<&str>,
) -> Result<Response, KeyError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let detail = describe(resp, scrub).await;
    Err(match (status, id) {
        (StatusCode::NOT_FOUND, Some(id)) => KeyError::NotFound {
            project: project.clone(),
            id: id.clone(),
        },
        (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED, _) => KeyError::Forbidden {
            op,
            project: project.clone(),
            detail: format!("HTTP {status}: {detail}"),
        },
        (
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _,
        ) => KeyError::Invalid {
            what: "request",
            reason: format!("barbican refused {op}: HTTP {status}: {detail}"),
        },
        (s, _) if s.is_server_error() => KeyError::Unavailable {
            op,
            cause: format!("HTTP {status}: {detail}"),
        },
        _ => KeyError::Protocol {
            op,
            cause: format!("HTTP {status}: {detail}"),
        },
    })
}

/// Barbican's error description (or title), shortened, with `scrub` (the
/// base64 payload we sent) removed in case a schema error echoed it.
async fn describe(resp: Response, scrub: Option<&str>) -> String {
    #[derive(Deserialize)]
    struct Body {
        title: Option<String>,
        description: Option<String>,
    }
    let text = resp.text().await.unwrap_or_default();
    let mut out = match serde_json::from_str::<Body>(&text) {
        Ok(b) => b.description.or(b.title).unwrap_or_default(),
        Err(_) => String::new(),
    };
    if let Some(secret) = scrub.filter(|s| !s.is_empty()) {
        out = out.replace(secret, "[REDACTED]");
    }
    if out.len() > 300 {
        let mut end = 300;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    if out.is_empty() {
        "no description".into()
    } else {
        out
    }
}

async fn json<T: for<'de> Deserialize<'de>>(
    resp: Response,
    op: &'static str,
) -> Result<T, KeyError> {
    let bytes = resp.bytes().await.map_err(|e| KeyError::Unavailable {
        op,
        cause: error_chain(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| KeyError::Protocol {
        op,
        cause: format!("bad JSON: {e}"),
    })
}

/// The UUID at the end of a Barbican `.../v1/{kind}/{uuid}` ref.
fn ref_uuid(href: &str, kind: &str, op: &'static str) -> Result<KeyId, KeyError> {
    let bad = || KeyError::Protocol {
        op,
        cause: format!("unexpected {kind} ref {href:?}"),
    };
    let mut parts = href.trim_end_matches('/').rsplit('/');
    let last = parts.next().ok_or_else(bad)?;
    if parts.next() != Some(kind) {
        return Err(bad());
    }
    KeyId::parse(last).map_err(|_| bad())
}

/// `e` and its causes on one line ("error sending request ...: connection
/// refused"), since reqwest's own message omits the root cause.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyManagerConfig;

    #[test]
    fn keystone_auth_parses_and_hides_its_password() {
        let c: KeyManagerConfig = toml::from_str(
            "backend = \"barbican\"\nurl = \"http://127.0.0.1:9311\"\n[auth]\ntype = \"keystone\"\n\
             auth_url = \"http://127.0.0.1:5000/v3\"\nusername = \"rekey\"\npassword = \"s3cret-pw\"\n",
        )
        .unwrap();
        let KeyManagerConfig::Barbican(b) = c else { panic!("not barbican") };
        let BarbicanAuth::Keystone(k) = &b.auth else { panic!("not keystone: {:?}", b.auth) };
        assert_eq!((k.username.as_str(), k.user_domain_name.as_str()), ("rekey", "Default"));
        assert!(!format!("{b:?}").contains("s3cret"));
    }
}
