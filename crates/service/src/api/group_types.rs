//! `/group_types` and their `group_specs` (3.11+): routing, bodies, views;
//! the domain is [`crate::group_types`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{json_body, query, Reply};
use crate::group_types::{GroupType, Visibility};
use crate::service::Service;

/// Operations of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupTypesEndpoint {
    /// `GET /group_types`.
    ListTypes,
    /// `POST /group_types`.
    CreateType,
    /// `GET /group_types/default`.
    DefaultType,
    /// `GET /group_types/{id}`.
    ShowType(String),
    /// `PUT /group_types/{id}`.
    UpdateType(String),
    /// `DELETE /group_types/{id}`.
    DeleteType(String),
    /// `GET /group_types/{id}/group_specs`.
    ListSpecs(String),
    /// `POST /group_types/{id}/group_specs`.
    SetSpecs(String),
    /// `GET /group_types/{id}/group_specs/{key}`.
    ShowSpec(String, String),
    /// `PUT /group_types/{id}/group_specs/{key}`.
    UpdateSpec(String, String),
    /// `DELETE /group_types/{id}/group_specs/{key}`.
    DeleteSpec(String, String),
}

/// The first path segment this module answers.
pub(super) const COLLECTION: &str = "group_types";

/// Routes the path segments after `/v3[/{project}]`.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Result<GroupTypesEndpoint, ApiError> {
    use GroupTypesEndpoint::*;
    let s = |x: &&str| (*x).to_owned();
    let e = match (segs, m) {
        ([COLLECTION], &Method::GET) => ListTypes,
        ([COLLECTION], &Method::POST) => CreateType,
        ([COLLECTION, "default"], &Method::GET) => DefaultType,
        ([COLLECTION, id], &Method::GET) => ShowType(s(id)),
        ([COLLECTION, id], &Method::PUT) => UpdateType(s(id)),
        ([COLLECTION, id], &Method::DELETE) => DeleteType(s(id)),
        ([COLLECTION, id, "group_specs"], &Method::GET) => ListSpecs(s(id)),
        ([COLLECTION, id, "group_specs"], &Method::POST) => SetSpecs(s(id)),
        ([COLLECTION, id, "group_specs", k], &Method::GET) => ShowSpec(s(id), s(k)),
        ([COLLECTION, id, "group_specs", k], &Method::PUT) => UpdateSpec(s(id), s(k)),
        ([COLLECTION, id, "group_specs", k], &Method::DELETE) => DeleteSpec(s(id), s(k)),
        ([COLLECTION] | [COLLECTION, _] | [COLLECTION, _, "group_specs"] | [COLLECTION, _, "group_specs", _], _) => {
            return Err(ApiError::bad_method())
        }
        _ => return Err(ApiError::not_found_path()),
    };
    Ok(e)
}

fn strings(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(v) = v else { return Ok(BTreeMap::new()) };
    let obj = v.as_object().ok_or_else(|| ApiError::bad_request(format!("Invalid input received: {what} must be an object")))?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(ApiError::bad_request(format!("Invalid input received: {what} {k} {other} is not a string"))),
        })
        .collect()
}

/// `true`/`false` as JSON or as oslo's strings.
fn boolean(v: &Value, what: &str) -> Result<bool, ApiError> {
    let bad = || ApiError::bad_request(format!("Invalid input received: {what} {v} is not a boolean"));
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => super::strict_bool(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn view(t: &GroupType) -> Value {
    json!({ "id": t.id, "name": t.name, "description": t.description, "is_public": t.is_public, "group_specs": t.group_specs })
}

fn optional_string(b: &Value, key: &str) -> Result<Option<Option<String>>, ApiError> {
    match b.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.len() <= 255 => Ok(Some(Some(s.clone()))),
        Some(v) => Err(ApiError::bad_request(format!("Invalid input received: {key} {v} must be a string of at most 255 characters"))),
    }
}

pub(super) async fn handle(svc: &Arc<Service>, e: GroupTypesEndpoint, uri: &Uri, bytes: &Bytes, mv: (u32, u32)) -> Reply {
    use GroupTypesEndpoint::*;
    if mv < (3, 11) {
        return Err(ApiError { status: 404, message: "API version 3.11 or later is needed for group types.".into() });
    }
    let ok = |v: Value| Ok((StatusCode::OK, v));
    match e {
        ListTypes => {
            let q = query(uri);
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            // Cinder's default is public only; `None`/`all` ask for both.
            let visibility = match get("is_public") {
                None => Visibility::Public,
                Some(v) if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("all") => Visibility::All,
                Some(v) => {
                    if boolean(&json!(v), "is_public")? {
                        Visibility::Public
                    } else {
                        Visibility::Private
                    }
                }
            };
            let descending = match get("sort").or(get("sort_key")) {
                None | Some("name") | Some("name:asc") => get("sort_dir") == Some("desc"),
                Some("name:desc") => true,
                Some(other) => return Err(ApiError::bad_request(format!("Invalid input received: sort {other} is not name[:asc|:desc]"))),
            };
            let all = svc.list_group_types(visibility, descending).await?;
            ok(json!({ "group_types": all.iter().map(view).collect::<Vec<_>>() }))
        }
        CreateType => {
            let b = json_body(bytes)?;
            let f = b.get("group_type").filter(|f| f.is_object()).ok_or_else(|| {
                ApiError::bad_request("Invalid input received: 'group_type' is a required object")
            })?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("Invalid input received: name is required"))?;
            let description = optional_string(f, "description")?.flatten();
            let is_public = f.get("is_public").map(|v| boolean(v, "is_public")).transpose()?.unwrap_or(true);
            let specs = strings(f.get("group_specs"), "group_specs")?;
            let t = svc.create_group_type(name, description, is_public, specs).await?;
            Ok((StatusCode::ACCEPTED, json!({ "group_type": view(&t) })))
        }
        DefaultType => Err(ApiError { status: 404, message: "Default group type not found.".into() }),
        ShowType(id) => ok(json!({ "group_type": view(&svc.get_group_type(&id).await?) })),
        UpdateType(id) => {
            let b = json_body(bytes)?;
            let f = b.get("group_type").filter(|f| f.is_object()).ok_or_else(|| {
                ApiError::bad_request("Invalid input received: 'group_type' is a required object")
            })?;
            let name = optional_string(f, "name")?.map(|n| n.unwrap_or_default());
            let description = optional_string(f, "description")?;
            let is_public = f.get("is_public").map(|v| boolean(v, "is_public")).transpose()?;
            if name.is_none() && description.is_none() && is_public.is_none() {
                return Err(ApiError::bad_request("Invalid input received: name, description or is_public must be given"));
            }
            let t = svc.update_group_type(&id, name, description, is_public).await?;
            ok(json!({ "group_type": view(&t) }))
        }
        DeleteType(id) => {
            svc.delete_group_type(&id).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        ListSpecs(id) => ok(json!({ "group_specs": svc.get_group_type(&id).await?.group_specs })),
        SetSpecs(id) => {
            let b = json_body(bytes)?;
            let specs = match b.get("group_specs") {
                Some(v) => strings(Some(v), "group_specs")?,
                None => return Err(ApiError::bad_request("Invalid input received: 'group_specs' is a required object")),
            };
            svc.set_group_specs(&id, &specs).await?;
            Ok((StatusCode::ACCEPTED, json!({ "group_specs": specs })))
        }
        ShowSpec(id, key) => {
            let v = svc.group_spec(&id, &key).await?;
            ok(json!({ key: v }))
        }
        UpdateSpec(id, key) => {
            let b = json_body(bytes)?;
            let specs = strings(Some(&b), "body")?;
            if specs.len() != 1 || !specs.contains_key(&key) {
                return Err(ApiError::bad_request("Invalid input received: Request body and URI mismatch"));
            }
            svc.set_group_specs(&id, &specs).await?;
            ok(json!(specs))
        }
        DeleteSpec(id, key) => {
            svc.delete_group_spec(&id, &key).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
    }
}
