//! `/os-quota-sets`, `/os-quota-class-sets` and `/limits`: routing, bodies
//! (validated with Cinder's messages) and views. The domain is
//! `crate::quotas`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::{body, policy, query, Reply};
use crate::model::Caller;
use crate::quotas::{is_id_key, Usage};
use crate::service::{Service, DB_MAX_INT};

/// Operations of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotasEndpoint {
    /// `GET /os-quota-sets/{project_id}[?usage=True]`.
    ShowQuotaSet(String),
    /// `GET /os-quota-sets/{project_id}/defaults`.
    QuotaDefaults(String),
    /// `PUT /os-quota-sets/{project_id}`.
    UpdateQuotaSet(String),
    /// `DELETE /os-quota-sets/{project_id}`: back to the defaults.
    DeleteQuotaSet(String),
    /// `GET /os-quota-class-sets/{class}`.
    ShowQuotaClass(String),
    /// `PUT /os-quota-class-sets/{class}`.
    UpdateQuotaClass(String),
    /// `GET /limits`.
    Limits,
}

/// Routes the path segments after `/v3[/{project}]`.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Result<QuotasEndpoint, ApiError> {
    use QuotasEndpoint::*;
    let s = |x: &&str| (*x).to_owned();
    let e = match (segs, m) {
        (["os-quota-sets", id], &Method::GET) => ShowQuotaSet(s(id)),
        (["os-quota-sets", id], &Method::PUT) => UpdateQuotaSet(s(id)),
        (["os-quota-sets", id], &Method::DELETE) => DeleteQuotaSet(s(id)),
        (["os-quota-sets", id, "defaults"], &Method::GET) => QuotaDefaults(s(id)),
        (["os-quota-class-sets", c], &Method::GET) => ShowQuotaClass(s(c)),
        (["os-quota-class-sets", c], &Method::PUT) => UpdateQuotaClass(s(c)),
        (["limits"], &Method::GET) => Limits,
        (["os-quota-sets", _] | ["os-quota-sets", _, "defaults"] | ["os-quota-class-sets", _] | ["limits"], _) => {
            return Err(ApiError::bad_method())
        }
        _ => return Err(ApiError::not_found_path()),
    };
    Ok(e)
}

/// Cinder's policy rule for `e` (`cinder/policies/quotas.py`,
/// `quota_class.py`, `limits.py`). Reading another project's quotas
/// needs admin too, which [`handle`] checks against the target.
pub(super) fn rule(e: &QuotasEndpoint) -> (policy::Rule, &'static str) {
    use policy::Rule::*;
    use QuotasEndpoint::*;
    match e {
        ShowQuotaSet(_) | QuotaDefaults(_) => (Reader, SHOW_POLICY),
        UpdateQuotaSet(_) => (Admin, "volume_extension:quotas:update"),
        DeleteQuotaSet(_) => (Admin, "volume_extension:quotas:delete"),
        ShowQuotaClass(_) => (Admin, "volume_extension:quota_classes"),
        UpdateQuotaClass(_) => (Admin, "volume_extension:quota_classes:update"),
        Limits => (Reader, "limits_extension:used_limits"),
    }
}

const SHOW_POLICY: &str = "volume_extension:quotas:show";

pub(super) async fn handle(svc: &Arc<Service>, who: &Caller, e: QuotasEndpoint, uri: &Uri, bytes: &Bytes) -> Reply {
    use QuotasEndpoint::*;
    let ok = |v: Value| Ok((StatusCode::OK, v));
    match e {
        ShowQuotaSet(project) => {
            own_or_admin(who, &project)?;
            let usage = match query(uri).into_iter().rev().find(|(k, _)| k == "usage") {
                None => false,
                Some((_, v)) => bool_param(&v, "usage")?,
            };
            let set = if usage {
                usage_view(&svc.quota_usage(&project).await?)
            } else {
                limits_view(&svc.quota_limits(&project).await?)
            };
            ok(json!({ "quota_set": with_id(set, &project) }))
        }
        QuotaDefaults(project) => {
            own_or_admin(who, &project)?;
            let set = limits_view(&svc.quota_class(crate::quotas::DEFAULT_CLASS).await?);
            ok(json!({ "quota_set": with_id(set, &project) }))
        }
        UpdateQuotaSet(project) => {
            check_name_length(&project, "quota_set_name")?;
            let changes = quota_set_body(bytes)?;
            ok(json!({ "quota_set": limits_view(&svc.update_quota_set(&project, changes).await?) }))
        }
        DeleteQuotaSet(project) => {
            svc.delete_quota_set(&project).await?;
            Ok((StatusCode::OK, Value::Null))
        }
        ShowQuotaClass(class) => {
            let set = limits_view(&svc.quota_class(&class).await?);
            ok(json!({ "quota_class_set": with_id(set, &class) }))
        }
        UpdateQuotaClass(class) => {
            check_name_length(&class, "quota_class_name")?;
            let changes = quota_class_body(bytes)?;
            ok(json!({ "quota_class_set": limits_view(&svc.update_quota_class(&class, changes).await?) }))
        }
        Limits => ok(absolute_limits(&svc.quota_usage(&who.project).await?)),
    }
}

/// A non-admin may read only its own project's quotas.
fn own_or_admin(who: &Caller, project: &str) -> Result<(), ApiError> {
    if who.admin || who.project == project {
        Ok(())
    } else {
        Err(policy::forbidden(SHOW_POLICY))
    }
}

fn check_name_length(name: &str, what: &str) -> Result<(), ApiError> {
    if name.chars().count() > 255 {
        return Err(ApiError::bad_request(format!("Invalid input received: {what} has more than 255 characters.")));
    }
    Ok(())
}

/// Cinder's `get_bool_param`.
fn bool_param(v: &str, name: &str) -> Result<bool, ApiError> {
    super::strict_bool(v).ok_or_else(|| ApiError::bad_request(format!("Value '{v}' for '{name}' is not a boolean.")))
}

fn with_id(mut set: Map<String, Value>, id: &str) -> Map<String, Value> {
    set.insert("id".into(), id.into());
    set
}

fn limits_view(limits: &BTreeMap<String, i64>) -> Map<String, Value> {
    limits.iter().map(|(k, v)| (k.clone(), (*v).into())).collect()
}

fn usage_view(usage: &BTreeMap<String, Usage>) -> Map<String, Value> {
    usage.iter().map(|(k, u)| (k.clone(), json!({ "limit": u.limit, "in_use": u.in_use, "reserved": 0 }))).collect()
}

/// `GET /limits`: the project's absolute limits and what it uses; no rate limits.
fn absolute_limits(usage: &BTreeMap<String, Usage>) -> Value {
    let get = |k: &str| usage.get(k).copied().unwrap_or(Usage { limit: -1, in_use: 0 });
    let mut absolute = Map::new();
    for (max, used, resource) in [
        ("maxTotalVolumes", "totalVolumesUsed", "volumes"),
        ("maxTotalSnapshots", "totalSnapshotsUsed", "snapshots"),
        ("maxTotalVolumeGigabytes", "totalGigabytesUsed", "gigabytes"),
        ("maxTotalBackups", "totalBackupsUsed", "backups"),
        ("maxTotalBackupGigabytes", "totalBackupGigabytesUsed", "backup_gigabytes"),
    ] {
        let u = get(resource);
        absolute.insert(max.into(), u.limit.into());
        absolute.insert(used.into(), u.in_use.into());
    }
    json!({ "limits": { "rate": [], "absolute": absolute } })
}

/// The object under `key` of a body with nothing else in it.
fn single_object(bytes: &Bytes, key: &str) -> Result<Map<String, Value>, ApiError> {
    let v: Value = body(bytes)?;
    let Value::Object(mut top) = v else {
        return Err(ApiError::bad_request(format!("Invalid input for field/attribute body. Value: {v}. {v} is not of type 'object'")));
    };
    if let Some(extra) = top.keys().find(|k| *k != key) {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    match top.remove(key) {
        None => Err(ApiError::bad_request(format!("'{key}' is a required property"))),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not of type 'object'"
        ))),
    }
}

/// `{"quota_set": {...}}`: at least one key; each resource's value an
/// integer from -1 to `DB_MAX_INT` (as a number or a string); `id` and
/// `tenant_id` are ignored (oslo's `validate_integer` messages).
fn quota_set_body(bytes: &Bytes) -> Result<BTreeMap<String, i64>, ApiError> {
    let set = single_object(bytes, "quota_set")?;
    if set.is_empty() {
        return Err(ApiError::bad_request("Invalid input for field/attribute quota_set. Value: {}. {} does not have enough properties"));
    }
    let mut out = BTreeMap::new();
    for (key, v) in set {
        if is_id_key(&key) {
            continue;
        }
        let text = match &v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            _ => String::new(),
        };
        let n: i64 = text.parse().map_err(|_| ApiError::bad_request(format!("{key} must be an integer")))?;
        if n < -1 {
            return Err(ApiError::bad_request(format!("{key} must be >= -1")));
        }
        if n > DB_MAX_INT as i64 {
            return Err(ApiError::bad_request(format!("{key} must be <= {DB_MAX_INT}")));
        }
        out.insert(key, n);
    }
    Ok(out)
}

/// `{"quota_class_set": {...}}`: each value an integer from -1 to
/// `DB_MAX_INT` or a string of digits (Cinder's JSON schema messages).
fn quota_class_body(bytes: &Bytes) -> Result<BTreeMap<String, i64>, ApiError> {
    let set = single_object(bytes, "quota_class_set")?;
    let mut out = BTreeMap::new();
    for (key, v) in set {
        let name_ok = (1..=300).contains(&key.chars().count())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c));
        if !name_ok {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute quota_class_set. Value: {}. Additional properties are not allowed ('{key}' was unexpected)",
                Value::Object(Map::new())
            )));
        }
        let bad = |why: String| ApiError::bad_request(format!("Invalid input for field/attribute {key}. Value: {v}. {why}"));
        let n = match &v {
            Value::Number(n) => n.as_i64().ok_or_else(|| bad(format!("{v} is not of type 'integer', 'string'")))?,
            Value::String(s) if s.is_empty() => return Err(bad("'' is too short".into())),
            Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<i64>().unwrap_or(i64::MAX),
            Value::String(s) => return Err(bad(format!("'{s}' does not match '^[0-9]*$'"))),
            _ => return Err(bad(format!("{v} is not of type 'integer', 'string'"))),
        };
        if n < -1 {
            return Err(bad(format!("{n} is less than the minimum of -1")));
        }
        if n > DB_MAX_INT as i64 {
            return Err(bad(format!("{n} is greater than the maximum of {DB_MAX_INT}")));
        }
        out.insert(key, n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(b: &str) -> Result<BTreeMap<String, i64>, ApiError> {
        quota_set_body(&Bytes::from(b.to_owned()))
    }
    fn class(b: &str) -> Result<BTreeMap<String, i64>, ApiError> {
        quota_class_body(&Bytes::from(b.to_owned()))
    }

    #[test]
    fn routes() {
        assert_eq!(resource(&Method::GET, &["os-quota-sets", "p"]).unwrap(), QuotasEndpoint::ShowQuotaSet("p".into()));
        assert_eq!(resource(&Method::GET, &["os-quota-sets", "p", "defaults"]).unwrap(), QuotasEndpoint::QuotaDefaults("p".into()));
        assert_eq!(resource(&Method::PUT, &["os-quota-class-sets", "default"]).unwrap(), QuotasEndpoint::UpdateQuotaClass("default".into()));
        assert_eq!(resource(&Method::POST, &["os-quota-sets", "p"]).unwrap_err().status, 405);
        assert_eq!(resource(&Method::GET, &["os-quota-sets"]).unwrap_err().status, 404);
        assert_eq!(resource(&Method::GET, &["limits"]).unwrap(), QuotasEndpoint::Limits);
    }

    #[test]
    fn quota_set_values() {
        let ok = set(r#"{"quota_set": {"volumes": 5, "gigabytes": "-1", "tenant_id": "x", "snapshots": " 7 "}}"#).unwrap();
        assert_eq!(ok, [("gigabytes".to_owned(), -1), ("snapshots".to_owned(), 7), ("volumes".to_owned(), 5)].into());
        for (b, msg) in [
            (r#"{"quota_set": {"volumes": -2}}"#, "volumes must be >= -1"),
            (r#"{"quota_set": {"volumes": 2147483648}}"#, "volumes must be <= 2147483647"),
            (r#"{"quota_set": {"volumes": "ten"}}"#, "volumes must be an integer"),
            (r#"{"quota_set": {"volumes": 1.5}}"#, "volumes must be an integer"),
            (r#"{"quota_set": {"volumes": true}}"#, "volumes must be an integer"),
            (r#"{"quota_set": {"volumes": null}}"#, "volumes must be an integer"),
        ] {
            let e = set(b).unwrap_err();
            assert_eq!((e.status, e.message.as_str()), (400, msg), "{b}");
        }
        assert_eq!(set(r#"{"quota_set": {}}"#).unwrap_err().status, 400);
        assert_eq!(set(r#"{"quota_set": {"volumes": 1}, "x": 1}"#).unwrap_err().status, 400);
        assert_eq!(set(r#"{"quotas": {"volumes": 1}}"#).unwrap_err().status, 400);
        assert_eq!(set(r#"[1]"#).unwrap_err().status, 400);
    }

    #[test]
    fn quota_class_values() {
        assert_eq!(class(r#"{"quota_class_set": {"volumes": "12", "gigabytes": -1}}"#).unwrap().len(), 2);
        for b in [
            r#"{"quota_class_set": {"volumes": -2}}"#,
            r#"{"quota_class_set": {"volumes": "-1"}}"#,
            r#"{"quota_class_set": {"volumes": ""}}"#,
            r#"{"quota_class_set": {"volumes": 1.5}}"#,
            r#"{"quota_class_set": {"volumes": [1]}}"#,
            r#"{"quota_class_set": {"bad/key": 1}}"#,
            r#"{"quota_class_set": {"volumes": 2147483648}}"#,
        ] {
            assert_eq!(class(b).unwrap_err().status, 400, "{b}");
        }
    }

    #[test]
    fn limits_view_has_exactly_cinders_fields() {
        let u: BTreeMap<String, Usage> = [("volumes".to_owned(), Usage { limit: 10, in_use: 1 })].into();
        let v = absolute_limits(&u);
        let a = v["limits"]["absolute"].as_object().unwrap();
        assert_eq!(a.len(), 10);
        assert_eq!((a["maxTotalVolumes"].as_i64(), a["totalVolumesUsed"].as_i64()), (Some(10), Some(1)));
        assert_eq!(v["limits"]["rate"], json!([]));
    }
}
