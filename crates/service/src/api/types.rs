//! Volume types, their extra specs and their encryption: bodies and
//! handlers (admin-only changes are refused earlier, in `super::policy`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{body, parse_size, truthy, views, Reply};
use crate::error::ServiceError;
use crate::model::Caller;
use crate::service::{EncryptionSpec, Service};

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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TypeBody {
    volume_type: TypeFields,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TypeFields {
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SpecsBody {
    extra_specs: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EncryptionBody {
    encryption: EncryptionFields,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EncryptionFields {
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


pub(super) async fn list(svc: &Arc<Service>, who: &Caller) -> Reply {
    let mut types = Vec::new();
    for t in svc.list_types().await? {
        if svc.type_visible(who, &t).await? {
            types.push(t);
        }
    }
    Ok((StatusCode::OK, json!({ "volume_types": types.iter().map(views::volume_type).collect::<Vec<_>>() })))
}

pub(super) async fn create(svc: &Arc<Service>, bytes: &Bytes) -> Reply {
    let b: TypeBody = body(bytes)?;
    let f = b.volume_type;
    let name = f.name.ok_or_else(|| ApiError::bad_request("Invalid input received: name is required"))?;
    let public = bool_value(&f.access_is_public)?.or(bool_value(&f.is_public)?).unwrap_or(true);
    let t = svc.create_type(name, f.description, public, specs(f.extra_specs.unwrap_or_default())?).await?;
    Ok((StatusCode::OK, json!({ "volume_type": views::volume_type_created(&t) })))
}

pub(super) async fn show(svc: &Arc<Service>, who: &Caller, id: &str) -> Reply {
    let t = svc.get_type(id).await?;
    if !svc.type_visible(who, &t).await? {
        return Err(ServiceError::not_found("Volume type", id).into());
    }
    Ok((StatusCode::OK, json!({ "volume_type": views::volume_type(&t) })))
}

pub(super) async fn update(svc: &Arc<Service>, id: &str, bytes: &Bytes) -> Reply {
    let b: TypeBody = body(bytes)?;
    let f = b.volume_type;
    if f.extra_specs.is_some() {
        return Err(ApiError::bad_request("Invalid input received: extra_specs are set through /extra_specs"));
    }
    let public = bool_value(&f.is_public)?.or(bool_value(&f.access_is_public)?);
    let t = svc.update_type(id, f.name, f.description, public).await?;
    Ok((StatusCode::OK, json!({ "volume_type": views::volume_type_updated(&t) })))
}

pub(super) async fn delete(svc: &Arc<Service>, id: &str) -> Reply {
    svc.delete_type(id).await?;
    Ok((StatusCode::ACCEPTED, Value::Null))
}

pub(super) async fn list_specs(svc: &Arc<Service>, id: &str) -> Reply {
    Ok((StatusCode::OK, json!({ "extra_specs": svc.get_type(id).await?.extra_specs })))
}

pub(super) async fn set_specs(svc: &Arc<Service>, id: &str, bytes: &Bytes) -> Reply {
    let b: SpecsBody = body(bytes)?;
    let s = specs(b.extra_specs)?;
    svc.set_extra_specs(id, s.clone()).await?;
    Ok((StatusCode::OK, json!({ "extra_specs": s })))
}

pub(super) async fn show_spec(svc: &Arc<Service>, id: &str, key: String) -> Reply {
    let t = svc.get_type(id).await?;
    match t.extra_specs.get(&key) {
        Some(v) => Ok((StatusCode::OK, json!({ key: v }))),
        None => Err(ServiceError::not_found("Volume type extra spec", key).into()),
    }
}

pub(super) async fn update_spec(svc: &Arc<Service>, id: &str, key: &str, bytes: &Bytes) -> Reply {
    let b: BTreeMap<String, Value> = body(bytes)?;
    if b.len() != 1 || !b.contains_key(key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    let s = specs(b)?;
    svc.set_extra_specs(id, s.clone()).await?;
    Ok((StatusCode::OK, json!(s)))
}

pub(super) async fn delete_spec(svc: &Arc<Service>, id: &str, key: &str) -> Reply {
    svc.delete_extra_spec(id, key).await?;
    Ok((StatusCode::ACCEPTED, Value::Null))
}

pub(super) async fn show_encryption(svc: &Arc<Service>, id: &str) -> Reply {
    match svc.get_encryption(id).await? {
        Some(e) => Ok((StatusCode::OK, views::encryption(&e))),
        None => Ok((StatusCode::OK, json!({}))),
    }
}

pub(super) async fn show_encryption_spec(svc: &Arc<Service>, id: &str, key: String) -> Reply {
    let e = svc
        .get_encryption(id)
        .await?
        .ok_or_else(|| ServiceError::not_found("Volume type encryption for type", id.to_owned()))?;
    let view = views::encryption(&e);
    match view.get(&key) {
        Some(v) => Ok((StatusCode::OK, json!({ key: v }))),
        None => Err(ServiceError::not_found("Volume type encryption spec", key).into()),
    }
}

/// `POST` (`create`) or `PUT` of a type's encryption.
pub(super) async fn put_encryption(svc: &Arc<Service>, id: &str, bytes: &Bytes, create: bool) -> Reply {
    let b: EncryptionBody = body(bytes)?;
    let given: Vec<&'static str> = [
        ("provider", b.encryption.provider.is_some()),
        ("cipher", b.encryption.cipher.is_some()),
        ("key_size", b.encryption.key_size.is_some()),
        ("control_location", b.encryption.control_location.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    let e = svc.put_encryption(id, encryption_spec(b.encryption)?, create).await?;
    let mut view = views::encryption_written(&e);
    if !create {
        // Cinder's update answers with the fields it was given, as stored.
        if let Some(m) = view.as_object_mut() {
            m.retain(|k, _| given.contains(&k.as_str()));
        }
    }
    Ok((StatusCode::OK, json!({ "encryption": view })))
}

pub(super) async fn delete_encryption(svc: &Arc<Service>, id: &str) -> Reply {
    svc.delete_encryption(id).await?;
    Ok((StatusCode::ACCEPTED, Value::Null))
}
