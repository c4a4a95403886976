//! Block Storage v3 REST API. One dispatcher routes with the pure
//! [`endpoint::Route::parse`], identifies the caller ([`identity`]: noauth
//! or Keystone), checks Cinder's policy for the endpoint ([`policy`]) and
//! hands the request to its handler (`volumes`, `types`, [`paths`]), which
//! extracts and validates the body and calls one domain function; errors
//! become Cinder bodies in [`error`].

pub mod admin;
mod attachments;
mod defaults;
mod filters;
mod manageable;
pub mod openapi;
pub mod endpoint;
pub mod error;
pub mod group_types;
pub mod groups;
pub mod identity;
mod listing;
mod metadata;
pub mod paths;
pub mod policy;
pub mod quotas;
pub mod qos;
mod types;
pub mod views;
mod volumes;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::Caller;
use identity::{check_path_project, noauth_caller, AuthError, Identity};
use crate::service::{Service, DB_MAX_INT};
use endpoint::{Endpoint, Route};
use error::ApiError;
use views::{MAX_VERSION, MIN_VERSION};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// What every request needs: the domain, and who callers are.
struct Api {
    svc: Arc<Service>,
    identity: Identity,
}

/// The API as an axum router, with the identity strategy the service's
/// `[auth]` configuration names. Fails on an unusable `[auth]` section.
pub fn router(svc: Arc<Service>) -> Result<Router, String> {
    let identity = Identity::new(&svc.config().auth)?;
    Ok(Router::new()
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(Api { svc, identity })))
}

type Reply = Result<(StatusCode, Value), ApiError>;

async fn dispatch(State(api): State<Arc<Api>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    let base = base_url(&headers);
    let mv = microversion(&headers);
    let mut resp = match (Route::parse(&method, uri.path()), mv) {
        (Err(e), _) | (_, Err(e)) => e.into_response(),
        (Ok(route), Ok(mv)) => match handle(&api, route, &uri, &headers, &body, &base, mv).await {
            Ok(Handled::Json(status, Value::Null)) => status.into_response(),
            Ok(Handled::Json(status, v)) => (status, axum::Json(v)).into_response(),
            Ok(Handled::Raw(r)) => r,
            Err(e) => e.into_response(),
        },
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Ok(v) = HeaderValue::from_str(&allowed_methods(uri.path())) {
            resp.headers_mut().insert("allow", v);
        }
    }
    if resp.status() == StatusCode::UNAUTHORIZED {
        if let Some(v) = api.identity.www_authenticate().and_then(|v| HeaderValue::from_str(&v).ok()) {
            resp.headers_mut().insert("www-authenticate", v);
        }
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-openstack-request-id", v);
    }
    let mv = mv_or_min(&headers);
    if let Ok(v) = HeaderValue::from_str(&format!("volume {}.{}", mv.0, mv.1)) {
        h.insert("openstack-api-version", v);
    }
    h.insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
    tracing::debug!(%method, path = uri.path(), status = resp.status().as_u16(), %request_id, "request");
    resp
}

/// The methods `path` is served with, for a 405's `Allow` (RFC 9110).
fn allowed_methods(path: &str) -> String {
    [Method::GET, Method::POST, Method::PUT, Method::DELETE]
        .into_iter()
        .filter(|m| Route::parse(m, path).is_ok())
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

enum Handled {
    Json(StatusCode, Value),
    Raw(Response),
}

impl From<(StatusCode, Value)> for Handled {
    fn from((s, v): (StatusCode, Value)) -> Self {
        Handled::Json(s, v)
    }
}

/// `http://host:port` as the client addressed us (for links).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The microversion the client asked for (`OpenStack-API-Version: volume 3.X`).
fn microversion(headers: &HeaderMap) -> Result<(u32, u32), ApiError> {
    let raw = headers
        .get("openstack-api-version")
        .or_else(|| headers.get("x-openstack-volume-api-version"))
        .map(|v| v.to_str().unwrap_or("").trim().to_owned());
    let Some(raw) = raw else { return Ok(MIN_VERSION) };
    let v = raw.strip_prefix("volume").map(str::trim).unwrap_or(&raw);
    if v.eq_ignore_ascii_case("latest") {
        return Ok(MAX_VERSION);
    }
    let parsed = v.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some(mv) if (MIN_VERSION..=MAX_VERSION).contains(&mv) => Ok(mv),
        Some(_) => Err(ApiError::not_acceptable(format!(
            "Version {v} is not supported by the API. Minimum is {}.{} and maximum is {}.{}.",
            MIN_VERSION.0, MIN_VERSION.1, MAX_VERSION.0, MAX_VERSION.1
        ))),
        None => Err(ApiError::bad_request(format!("API Version String {v} is of invalid format. Must be of format MajorNum.MinorNum."))),
    }
}

fn mv_or_min(headers: &HeaderMap) -> (u32, u32) {
    microversion(headers).unwrap_or(MIN_VERSION)
}

/// The caller of a request: noauth rules, or the Keystone token in
/// `X-Auth-Token`. `None` = noauth and no identity at all.
async fn caller(identity: &Identity, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    let r = match identity {
        Identity::Noauth => noauth_caller(headers),
        Identity::Keystone(k) => {
            let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty());
            match token {
                None => Err(AuthError::Unauthorized(identity::UNAUTHORIZED)),
                Some(t) => k.validate(t).await.map(Some),
            }
        }
    };
    r.map_err(|e| match e {
        AuthError::Unauthorized(m) => ApiError { status: 401, message: m.into() },
        AuthError::Forbidden(m) => ApiError::forbidden(m),
        AuthError::BadRequest(m) => ApiError::bad_request(m),
        AuthError::Unavailable(m) => ApiError { status: 503, message: m },
    })
}

/// The request's query without `all_tenants`: Cinder ignores it for
/// non-admins, who see only their own project.
fn without_all_tenants(uri: &Uri) -> Uri {
    let Some(q) = uri.query() else { return uri.clone() };
    let kept: Vec<&str> = q.split('&').filter(|kv| kv.split('=').next() != Some("all_tenants")).collect();
    let pq = if kept.is_empty() { uri.path().to_owned() } else { format!("{}?{}", uri.path(), kept.join("&")) };
    pq.parse().unwrap_or_else(|_| uri.clone())
}

/// A body as JSON; Cinder's messages for a missing or malformed one.
fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Missing request body."));
    }
    serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("Malformed request body"))
}

/// Parses a JSON body into `T`; Cinder's messages for the failures.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_value(json_body(bytes)?).map_err(|e| ApiError::bad_request(format!("Invalid input received: {e}")))
}

/// The one action named in an action body, and its arguments.
fn one_action(bytes: &Bytes) -> Result<(String, Value), ApiError> {
    let actions: serde_json::Map<String, Value> = body(bytes)?;
    let mut it = actions.into_iter();
    match (it.next(), it.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(ApiError::bad_request("Invalid input received: the body must name exactly one action")),
    }
}

/// oslo's strict boolean strings (`strutils.bool_from_string(strict=True)`).
fn strict_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default()
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on" | "y" | "t")
}

/// A size as Cinder accepts it: a positive integer or a string of digits.
fn parse_size(v: &Value) -> Result<u64, ApiError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Some(s.parse::<u64>().unwrap_or(u64::MAX)),
        _ => None,
    };
    match n {
        Some(n) if (1..=DB_MAX_INT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "Invalid input received: size must be an integer between 1 and {DB_MAX_INT}, got {v}"
        ))),
    }
}

async fn handle(
    api: &Api,
    route: Route,
    uri: &Uri,
    headers: &HeaderMap,
    bytes: &Bytes,
    base: &str,
    mv: (u32, u32),
) -> Result<Handled, ApiError> {
    use Endpoint::*;
    let ok = |v: Value| Ok(Handled::Json(StatusCode::OK, v));
    match &route.endpoint {
        // Cinder's version list is a "300 Multiple Choices".
        Versions => return Ok(Handled::Json(StatusCode::MULTIPLE_CHOICES, views::versions(base))),
        V3Version => return ok(views::version(base)),
        OpenApi => return ok(openapi::json()),
        _ => {}
    }
    let svc = &api.svc;
    let Some(who) = caller(&api.identity, headers).await? else {
        // Cinder's noauth handshake: no identity at all gets a fake admin token.
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut().insert("x-auth-token", HeaderValue::from_static("admin:admin"));
        if let Ok(v) = HeaderValue::from_str(&format!("{base}/v3/admin")) {
            r.headers_mut().insert("x-server-management-url", v);
        }
        return Ok(Handled::Raw(r));
    };
    check_path_project(&api.identity, &who, route.path_project.as_deref())?;
    let noauth = matches!(api.identity, Identity::Noauth);
    policy::authorize(&who, &route.endpoint, noauth)?;
    let stripped;
    let uri = if who.admin {
        uri
    } else {
        stripped = without_all_tenants(uri);
        &stripped
    };
    let v = volumes::Ctx { svc, who: &who, base, mv };
    let r: Reply = match route.endpoint {
        // Answered above, before identity; repeated so the match stays exhaustive without a panic.
        Versions => return Ok(Handled::Json(StatusCode::MULTIPLE_CHOICES, views::versions(base))),
        V3Version => return ok(views::version(base)),
        OpenApi => return ok(openapi::json()),
        CreateVolume => volumes::create(&v, bytes).await,
        ListVolumes => volumes::list(&v, uri, false).await,
        ListVolumesDetail => volumes::list(&v, uri, true).await,
        ShowVolume(id) => volumes::show(&v, &id).await,
        UpdateVolume(id) => volumes::update(&v, &id, bytes).await,
        DeleteVolume(id) => volumes::delete(&v, &id, uri, noauth).await,
        VolumeAction(id) => volumes::action(&v, &id, bytes).await,
        VolumeEncryption(id) => volumes::encryption(&v, &id).await,
        ListAttachments => attachments::list(&v, uri, false).await,
        ListAttachmentsDetail => attachments::list(&v, uri, true).await,
        ShowAttachment(id) => attachments::show(&v, &id).await,
        CreateAttachment => attachments::create(&v, bytes).await,
        UpdateAttachment(id) => attachments::update(&v, &id, bytes).await,
        DeleteAttachment(id) => attachments::delete(&v, &id).await,
        AttachmentAction(id) => attachments::action(&v, &id, bytes).await,
        ListTypes => types::list(svc, &who).await,
        CreateType => types::create(svc, bytes).await,
        ShowType(id) => types::show(svc, &who, &id).await,
        UpdateType(id) => types::update(svc, &id, bytes).await,
        DeleteType(id) => types::delete(svc, &id).await,
        ListExtraSpecs(id) => types::list_specs(svc, &id).await,
        SetExtraSpecs(id) => types::set_specs(svc, &id, bytes).await,
        ShowExtraSpec(id, key) => types::show_spec(svc, &id, key).await,
        UpdateExtraSpec(id, key) => types::update_spec(svc, &id, &key, bytes).await,
        DeleteExtraSpec(id, key) => types::delete_spec(svc, &id, &key).await,
        ShowEncryption(id) => types::show_encryption(svc, &id).await,
        ShowEncryptionSpec(id, key) => types::show_encryption_spec(svc, &id, key).await,
        CreateEncryption(id) => types::put_encryption(svc, &id, bytes, true).await,
        UpdateEncryption(id) => types::put_encryption(svc, &id, bytes, false).await,
        DeleteEncryption(id) => types::delete_encryption(svc, &id).await,
        Paths(e) => paths::handle(svc, &who, e, uri, bytes, base, mv).await,
        Defaults(e) => defaults::handle(svc, e, bytes, mv).await,
        ResourceFilters => filters::handle(uri, mv),
        Manageable(e) => manageable::handle(svc, e, uri, mv).await,
        Quotas(e) => quotas::handle(svc, &who, e, uri, bytes).await,
        Operator(e) => admin::handle(svc, &who, e, uri, bytes, base, mv).await,
        Qos(e) => qos::handle(svc, &who, e, uri, bytes, base).await,
        GroupTypes(e) => group_types::handle(svc, e, uri, bytes, mv).await,
        Groups(e) => groups::handle(svc, &who, e, uri, bytes, base, mv).await,
    };
    r.map(Handled::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hdrs(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn all_tenants_is_stripped() {
        let u: Uri = "/v3/p/volumes/detail?all_tenants=1&name=x".parse().unwrap();
        assert_eq!(without_all_tenants(&u).to_string(), "/v3/p/volumes/detail?name=x");
        let u: Uri = "/v3/volumes?all_tenants=True".parse().unwrap();
        assert_eq!(without_all_tenants(&u).to_string(), "/v3/volumes");
        let u: Uri = "/v3/volumes".parse().unwrap();
        assert_eq!(without_all_tenants(&u).to_string(), "/v3/volumes");
    }

    #[test]
    fn a_405_names_the_methods_served() {
        assert_eq!(allowed_methods("/v3/p/volumes"), "GET, POST");
        assert_eq!(allowed_methods("/v3/volumes/x"), "GET, PUT, DELETE");
        assert_eq!(allowed_methods("/"), "GET");
    }

    #[test]
    fn microversions() {
        assert_eq!(microversion(&hdrs(&[])).unwrap(), (3, 0));
        assert_eq!(microversion(&hdrs(&[("openstack-api-version", "volume 3.64")])).unwrap(), (3, 64));
        assert_eq!(microversion(&hdrs(&[("openstack-api-version", "volume latest")])).unwrap(), MAX_VERSION);
        assert_eq!(microversion(&hdrs(&[("openstack-api-version", "volume 3.99")])).unwrap_err().status, 406);
        assert_eq!(microversion(&hdrs(&[("openstack-api-version", "volume x")])).unwrap_err().status, 400);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&json!(1)).unwrap(), 1);
        assert_eq!(parse_size(&json!("10")).unwrap(), 10);
        for bad in [json!(0), json!(-1), json!(1.5), json!("1e3"), json!(true), json!(1e30), json!("99999999999999999999999")] {
            assert_eq!(parse_size(&bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(body::<volumes::VolumeCreateBody>(&Bytes::from_static(b"{")).unwrap_err().message, "Malformed request body");
        let e = body::<volumes::VolumeCreateBody>(&Bytes::from_static(br#"{"volume": {"size": 1, "colour": "red"}}"#)).unwrap_err();
        assert!(e.message.contains("colour"), "{}", e.message);
        assert!(body::<volumes::VolumeCreateBody>(&Bytes::from_static(br#"{"volume": {"size": 1, "name": null}}"#)).is_ok());
    }
}
