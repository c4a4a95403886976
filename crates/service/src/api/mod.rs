//! Block Storage v3 REST API. One handler routes with the pure
//! [`endpoint::Route::parse`], identifies the caller ([`identity`]: noauth
//! or Keystone), checks Cinder's policy for the endpoint ([`policy`]),
//! extracts microversion and body, validates their shape, and calls a domain
//! function; errors become Cinder bodies in [`error`].

pub mod endpoint;
pub mod error;
pub mod identity;
pub mod paths;
pub mod policy;
pub mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{Caller, RekeyMode};
use identity::{check_path_project, noauth_caller, AuthError, Identity};
use crate::service::{CreateVolume, EncryptionSpec, Service, VolumeFilter, DB_MAX_INT};
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

/// Parses a JSON body into `T`; Cinder's messages for the failures.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Missing request body."));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("Malformed request body"))?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("Invalid input received: {e}")))
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

/// Extra-spec values: strings, or scalars Cinder stringifies.
fn spec_value(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(if *b { "True" } else { "False" }.into()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ApiError::bad_request(format!("Invalid input received: extra spec value {v} must be a string"))),
    }
}

fn specs(map: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    map.into_iter().map(|(k, v)| Ok((k, spec_value(&v)?))).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeCreateBody {
    volume: VolumeCreate,
    #[serde(rename = "OS-SCH-HNT:scheduler_hints", default)]
    _hints: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeCreate {
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    display_description: Option<String>,
    #[serde(default)]
    volume_type: Option<String>,
    #[serde(default)]
    source_volid: Option<String>,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    backup_id: Option<String>,
    #[serde(rename = "imageRef", default)]
    image_ref: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    consistencygroup_id: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    multiattach: Option<bool>,
    #[serde(default)]
    scheduler_hints: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeUpdateBody {
    volume: VolumeUpdate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeUpdate {
    #[serde(default, with = "double_option")]
    name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    display_name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    description: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    display_description: Option<Option<String>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeBody {
    volume_type: TypeFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "os-volume-type-access:is_public", default)]
    access_is_public: Option<Value>,
    #[serde(default)]
    is_public: Option<Value>,
    #[serde(default)]
    extra_specs: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecsBody {
    extra_specs: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionBody {
    encryption: EncryptionFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionFields {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    cipher: Option<String>,
    #[serde(default)]
    key_size: Option<Value>,
    #[serde(default)]
    control_location: Option<String>,
}

fn bool_value(v: &Option<Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if matches!(s.to_ascii_lowercase().as_str(), "true" | "false") => Ok(Some(truthy(s))),
        Some(v) => Err(ApiError::bad_request(format!("Invalid input received: {v} is not a boolean"))),
    }
}

fn encryption_spec(f: EncryptionFields) -> Result<EncryptionSpec, ApiError> {
    let key_size = match &f.key_size {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            parse_size(v)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ApiError::bad_request(format!("Invalid input received: key_size {v} is not a positive integer")))?,
        ),
    };
    Ok(EncryptionSpec { provider: f.provider, cipher: f.cipher, key_size, control_location: f.control_location })
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
        Versions => return ok(views::versions(base)),
        V3Version => return ok(views::version(base)),
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
    let create_encryption = matches!(route.endpoint, CreateEncryption(_));
    let r: Reply = match route.endpoint {
        Versions | V3Version => unreachable!("answered above"),
        CreateVolume => create_volume(svc, &who, bytes, base, mv).await,
        ListVolumes | ListVolumesDetail => {
            let mut f = VolumeFilter::default();
            for (k, v) in query(uri) {
                match k.as_str() {
                    "name" | "display_name" => f.name = Some(v),
                    "status" => f.status = Some(v),
                    "all_tenants" => f.all_tenants = truthy(&v),
                    _ => {}
                }
            }
            let vols = svc.list_volumes(&who, &f).await?;
            let detail = route.endpoint == ListVolumesDetail;
            let mut out = Vec::with_capacity(vols.len());
            for v in &vols {
                out.push(if detail { detail_view(svc, &who, base, v, mv).await? } else { views::volume_summary(base, v) });
            }
            Ok((StatusCode::OK, json!({ "volumes": out })))
        }
        ShowVolume(id) => {
            let v = svc.get_volume(&who, &id).await?;
            Ok((StatusCode::OK, json!({ "volume": detail_view(svc, &who, base, &v, mv).await? })))
        }
        UpdateVolume(id) => {
            let b: VolumeUpdateBody = body(bytes)?;
            let u = crate::service::UpdateVolume {
                name: b.volume.name.or(b.volume.display_name),
                description: b.volume.description.or(b.volume.display_description),
                metadata: b.volume.metadata,
            };
            let v = svc.update_volume(&who, &id, u).await?;
            Ok((StatusCode::OK, json!({ "volume": detail_view(svc, &who, base, &v, mv).await? })))
        }
        DeleteVolume(id) => {
            let force = query(uri).iter().any(|(k, v)| k == "force" && truthy(v));
            if force && !noauth && !who.admin {
                return Err(policy::forbidden("volume:force_delete"));
            }
            let cascade = query(uri).iter().any(|(k, v)| k == "cascade" && truthy(v));
            svc.get_volume(&who, &id).await?;
            svc.delete_volume_snapshots(&who, &id, cascade).await?;
            let job = svc.delete_volume(&who, &id, force).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        VolumeAction(id) => volume_action(svc, &who, &id, bytes).await,
        VolumeEncryption(id) => {
            let (v, e) = svc.volume_encryption(&who, &id).await?;
            Ok((StatusCode::OK, views::volume_encryption(&v, e.as_ref())))
        }
        ListTypes => {
            let types = svc.list_types().await?;
            Ok((StatusCode::OK, json!({ "volume_types": types.iter().map(views::volume_type).collect::<Vec<_>>() })))
        }
        CreateType => {
            let b: TypeBody = body(bytes)?;
            let f = b.volume_type;
            let name = f.name.ok_or_else(|| ApiError::bad_request("Invalid input received: name is required"))?;
            let public = bool_value(&f.access_is_public)?.or(bool_value(&f.is_public)?).unwrap_or(true);
            let t = svc.create_type(name, f.description, public, specs(f.extra_specs.unwrap_or_default())?).await?;
            Ok((StatusCode::OK, json!({ "volume_type": views::volume_type(&t) })))
        }
        ShowType(id) => Ok((StatusCode::OK, json!({ "volume_type": views::volume_type(&svc.get_type(&id).await?) }))),
        UpdateType(id) => {
            let b: TypeBody = body(bytes)?;
            let f = b.volume_type;
            if f.extra_specs.is_some() {
                return Err(ApiError::bad_request("Invalid input received: extra_specs are set through /extra_specs"));
            }
            let public = bool_value(&f.is_public)?.or(bool_value(&f.access_is_public)?);
            let t = svc.update_type(&id, f.name, f.description, public).await?;
            Ok((StatusCode::OK, json!({ "volume_type": views::volume_type(&t) })))
        }
        DeleteType(id) => svc.delete_type(&id).await.map(|()| (StatusCode::ACCEPTED, Value::Null)).map_err(Into::into),
        ListExtraSpecs(id) => Ok((StatusCode::OK, json!({ "extra_specs": svc.get_type(&id).await?.extra_specs }))),
        SetExtraSpecs(id) => {
            let b: SpecsBody = body(bytes)?;
            let s = specs(b.extra_specs)?;
            svc.set_extra_specs(&id, s.clone()).await?;
            Ok((StatusCode::OK, json!({ "extra_specs": s })))
        }
        ShowExtraSpec(id, key) => {
            let t = svc.get_type(&id).await?;
            match t.extra_specs.get(&key) {
                Some(v) => Ok((StatusCode::OK, json!({ key: v }))),
                None => Err(crate::error::ServiceError::not_found("Volume type extra spec", key).into()),
            }
        }
        UpdateExtraSpec(id, key) => {
            let b: BTreeMap<String, Value> = body(bytes)?;
            if b.len() != 1 || !b.contains_key(&key) {
                return Err(ApiError::bad_request("Request body and URI mismatch"));
            }
            let s = specs(b)?;
            svc.set_extra_specs(&id, s.clone()).await?;
            Ok((StatusCode::OK, json!(s)))
        }
        DeleteExtraSpec(id, key) => {
            svc.delete_extra_spec(&id, &key).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        ShowEncryption(id) => match svc.get_encryption(&id).await? {
            Some(e) => Ok((StatusCode::OK, views::encryption(&e))),
            None => Ok((StatusCode::OK, json!({}))),
        },
        ShowEncryptionSpec(id, key) => {
            let e = svc
                .get_encryption(&id)
                .await?
                .ok_or_else(|| crate::error::ServiceError::not_found("Volume type encryption for type", id.clone()))?;
            let view = views::encryption(&e);
            match view.get(&key) {
                Some(v) => Ok((StatusCode::OK, json!({ key: v }))),
                None => Err(crate::error::ServiceError::not_found("Volume type encryption spec", key).into()),
            }
        }
        CreateEncryption(id) | UpdateEncryption(id) => {
            let b: EncryptionBody = body(bytes)?;
            let e = svc.put_encryption(&id, encryption_spec(b.encryption)?, create_encryption).await?;
            Ok((StatusCode::OK, json!({ "encryption": views::encryption(&e) })))
        }
        DeleteEncryption(id) => {
            svc.delete_encryption(&id).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        Paths(e) => paths::handle(svc, &who, e, uri, bytes, base, mv).await,
    };
    r.map(Handled::from)
}

/// `POST /volumes/{id}/action` with `{"os-rekey": {"mode": "volume-key"|"keyslot"}}`
/// (`mode` defaults to `volume-key`, the fix the audit names for a shared
/// volume key): 202 and the volume goes `maintenance` until rekeyed.
async fn volume_action(svc: &Arc<Service>, who: &Caller, id: &str, bytes: &Bytes) -> Reply {
    let actions: serde_json::Map<String, Value> = body(bytes)?;
    let mut it = actions.into_iter();
    let (name, args) = match (it.next(), it.next()) {
        (Some(one), None) => one,
        _ => return Err(ApiError::bad_request("Invalid input received: the body must name exactly one action")),
    };
    match name.as_str() {
        "os-rekey" => {
            let a: RekeyAction = match args {
                Value::Null => RekeyAction::default(),
                v => serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("Invalid input received: os-rekey: {e}")))?,
            };
            let mode = match a.mode.as_deref() {
                None => RekeyMode::VolumeKey,
                Some(m) => m.parse::<RekeyMode>().map_err(|_| {
                    ApiError::bad_request(format!("Invalid input received: os-rekey mode must be keyslot or volume-key, not {m:?}"))
                })?,
            };
            let job = svc.rekey_volume(who, id, mode).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        other => Err(ApiError::bad_request(format!("There is no such action: {other}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RekeyAction {
    #[serde(default)]
    mode: Option<String>,
}

async fn detail_view(svc: &Service, who: &Caller, base: &str, v: &crate::model::Volume, mv: (u32, u32)) -> Result<Value, ApiError> {
    let (t, enc) = svc.type_of(v).await?;
    Ok(views::volume_detail(base, v, t.as_ref().map(|t| t.name.as_str()), enc, mv, who.admin))
}

async fn create_volume(svc: &Arc<Service>, who: &Caller, bytes: &Bytes, base: &str, mv: (u32, u32)) -> Reply {
    let b: VolumeCreateBody = body(bytes)?;
    let v = b.volume;
    if v.backup_id.is_some() && mv < (3, 47) {
        return Err(ApiError::bad_request("Invalid input received: backup_id needs microversion 3.47 or later"));
    }
    let sources = [v.source_volid.is_some(), v.snapshot_id.is_some(), v.backup_id.is_some()];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(ApiError::bad_request(
            "Invalid input received: only one of source_volid, snapshot_id and backup_id may be given",
        ));
    }
    let unsupported = [
        ("imageRef", v.image_ref.is_some()),
        ("consistencygroup_id", v.consistencygroup_id.is_some()),
        ("group_id", v.group_id.is_some()),
        ("multiattach", v.multiattach == Some(true)),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(ApiError::bad_request(format!("Invalid input received: {field} is not supported by this service yet")));
    }
    let _ = (&v.availability_zone, &v.scheduler_hints);
    let size_gb = match &v.size {
        None | Some(Value::Null) => None,
        Some(s) => Some(parse_size(s)?),
    };
    if size_gb.is_none() && !sources.iter().any(|s| *s) {
        return Err(ApiError::bad_request("Invalid input received: size is required"));
    }
    let req = CreateVolume {
        size_gb,
        name: v.name.or(v.display_name),
        description: v.description.or(v.display_description),
        volume_type: v.volume_type,
        source_volid: v.source_volid,
        metadata: v.metadata.unwrap_or_default(),
    };
    let (vol, job) = match (v.snapshot_id, v.backup_id) {
        (Some(snap), _) => svc.create_volume_from_snapshot(who, req, &snap).await?,
        (_, Some(backup)) => svc.create_volume_from_backup(who, req, &backup).await?,
        _ => svc.create_volume(who, req).await?,
    };
    crate::engine::spawn(svc.clone(), job);
    Ok((StatusCode::ACCEPTED, json!({ "volume": detail_view(svc, who, base, &vol, mv).await? })))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(body::<VolumeCreateBody>(&Bytes::from_static(b"{")).unwrap_err().message, "Malformed request body");
        let e = body::<VolumeCreateBody>(&Bytes::from_static(br#"{"volume": {"size": 1, "colour": "red"}}"#)).unwrap_err();
        assert!(e.message.contains("colour"), "{}", e.message);
        assert!(body::<VolumeCreateBody>(&Bytes::from_static(br#"{"volume": {"size": 1, "name": null}}"#)).is_ok());
    }
}
