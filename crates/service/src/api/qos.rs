//! `/qos-specs`: create, list, show, delete, set and unset keys, and the
//! associations with volume types. Routing, bodies and views; the domain is
//! [`crate::qos`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{json_body, query, truthy, Reply};
use crate::model::Caller;
use crate::qos::QosSpecs;
use crate::service::Service;

/// Operations of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QosEndpoint {
    /// `GET /qos-specs`.
    List,
    /// `POST /qos-specs`.
    Create,
    /// `GET /qos-specs/{id}`.
    Show(String),
    /// `PUT /qos-specs/{id}`: set keys.
    SetKeys(String),
    /// `DELETE /qos-specs/{id}[?force=True]`.
    Delete(String),
    /// `PUT /qos-specs/{id}/delete_keys`.
    UnsetKeys(String),
    /// `GET /qos-specs/{id}/associations`.
    Associations(String),
    /// `GET /qos-specs/{id}/associate?vol_type_id=`.
    Associate(String),
    /// `GET /qos-specs/{id}/disassociate?vol_type_id=`.
    Disassociate(String),
    /// `GET /qos-specs/{id}/disassociate_all`.
    DisassociateAll(String),
}

/// The first path segment this module answers.
pub(super) const COLLECTION: &str = "qos-specs";

/// Routes the path segments after `/v3[/{project}]`.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Result<QosEndpoint, ApiError> {
    use QosEndpoint::*;
    let s = |x: &&str| (*x).to_owned();
    let e = match (segs, m) {
        ([COLLECTION], &Method::GET) => List,
        ([COLLECTION], &Method::POST) => Create,
        ([COLLECTION, id], &Method::GET) => Show(s(id)),
        ([COLLECTION, id], &Method::PUT) => SetKeys(s(id)),
        ([COLLECTION, id], &Method::DELETE) => Delete(s(id)),
        ([COLLECTION, id, "delete_keys"], &Method::PUT) => UnsetKeys(s(id)),
        ([COLLECTION, id, "associations"], &Method::GET) => Associations(s(id)),
        ([COLLECTION, id, "associate"], &Method::GET) => Associate(s(id)),
        ([COLLECTION, id, "disassociate"], &Method::GET) => Disassociate(s(id)),
        ([COLLECTION, id, "disassociate_all"], &Method::GET) => DisassociateAll(s(id)),
        ([COLLECTION] | [COLLECTION, _], _)
        | ([COLLECTION, _, "delete_keys" | "associations" | "associate" | "disassociate" | "disassociate_all"], _) => {
            return Err(ApiError::bad_method())
        }
        _ => return Err(ApiError::not_found_path()),
    };
    Ok(e)
}

/// `{"qos_specs": {k: "v", ...}}` as a map of strings.
fn specs_of(b: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(obj) = b.get("qos_specs").and_then(Value::as_object) else {
        return Err(ApiError::bad_request("Invalid input received: 'qos_specs' is a required object"));
    };
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(ApiError::bad_request(format!("Invalid input received: {k} {other} is not a string"))),
        })
        .collect()
}

fn view(q: &QosSpecs) -> Value {
    json!({ "id": q.id, "name": q.name, "consumer": q.consumer, "specs": q.specs })
}

fn vol_type_id(uri: &Uri) -> Result<String, ApiError> {
    query(uri)
        .into_iter()
        .find(|(k, _)| k == "vol_type_id")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("Volume Type id must not be None."))
}

pub(super) async fn handle(svc: &Arc<Service>, who: &Caller, e: QosEndpoint, uri: &Uri, bytes: &Bytes, base: &str) -> Reply {
    use QosEndpoint::*;
    let accepted = Ok((StatusCode::ACCEPTED, Value::Null));
    match e {
        List => {
            let all = svc.list_qos().await?;
            Ok((StatusCode::OK, json!({ "qos_specs": all.iter().map(view).collect::<Vec<_>>() })))
        }
        Create => {
            let mut specs = specs_of(&json_body(bytes)?)?;
            let name = specs.remove("name").ok_or_else(|| ApiError::bad_request("Invalid input received: name is required"))?;
            let consumer = specs.remove("consumer");
            let q = svc.create_qos(&name, consumer, specs).await?;
            Ok((StatusCode::OK, json!({ "qos_specs": view(&q), "links": super::views::links(base, &who.project, "qos-specs", &q.id) })))
        }
        Show(id) => {
            let q = svc.get_qos(&id).await?;
            Ok((StatusCode::OK, json!({ "qos_specs": view(&q), "links": super::views::links(base, &who.project, "qos-specs", &q.id) })))
        }
        SetKeys(id) => {
            let specs = specs_of(&json_body(bytes)?)?;
            svc.set_qos_keys(&id, specs.clone()).await?;
            Ok((StatusCode::OK, json!({ "qos_specs": specs })))
        }
        Delete(id) => {
            let force = query(uri).iter().any(|(k, v)| k == "force" && truthy(v));
            svc.delete_qos(&id, force).await?;
            accepted
        }
        UnsetKeys(id) => {
            let b = json_body(bytes)?;
            let keys: Vec<String> = b
                .get("keys")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|k| k.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| ApiError::bad_request("Invalid input received: 'keys' must be a list of strings"))?;
            svc.unset_qos_keys(&id, &keys).await?;
            accepted
        }
        Associations(id) => {
            let a = svc.qos_associations(&id).await?;
            let out: Vec<Value> =
                a.iter().map(|a| json!({ "association_type": "volume_type", "id": a.type_id, "name": a.type_name })).collect();
            Ok((StatusCode::OK, json!({ "qos_associations": out })))
        }
        Associate(id) => {
            svc.associate_qos(&id, &vol_type_id(uri)?).await?;
            accepted
        }
        Disassociate(id) => {
            svc.disassociate_qos(&id, Some(&vol_type_id(uri)?)).await?;
            accepted
        }
        DisassociateAll(id) => {
            svc.disassociate_qos(&id, None).await?;
            accepted
        }
    }
}
