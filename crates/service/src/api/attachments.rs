//! Attachments (microversion 3.27+; `mode` 3.54+, `os-complete` 3.44+):
//! bodies, handlers and views.

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::volumes::Ctx;
use super::{body, query, truthy, Reply};
use crate::model::AttachMode;
use crate::AttachmentInfo;

const ATTACHMENTS: (u32, u32) = (3, 27);
const COMPLETE: (u32, u32) = (3, 44);
const MODE: (u32, u32) = (3, 54);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    attachment: Create,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    volume_uuid: String,
    #[serde(default)]
    instance_uuid: Option<String>,
    #[serde(default)]
    connector: Option<Value>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    attachment: Update,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    connector: Value,
}

/// The attachments API is not there below 3.27: Cinder answers 404.
fn check_version(c: &Ctx<'_>, least: (u32, u32)) -> Result<(), ApiError> {
    if c.mv < least {
        return Err(ApiError::not_found_path());
    }
    Ok(())
}

/// A connector, or `None` for an absent, null or empty one (cinderclient
/// sends `{}` when it has none, and Cinder treats that as none).
fn connector(v: Option<Value>) -> Result<Option<Value>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(ApiError::bad_request("Invalid input received: connector must be an object")),
    }
}

fn summary(a: &AttachmentInfo) -> Value {
    let a = &a.attachment;
    json!({ "id": a.id, "status": a.attach_status, "instance": a.instance_uuid, "volume_id": a.volume_id })
}

fn detail(info: &AttachmentInfo) -> Value {
    let mut v = summary(info);
    let a = &info.attachment;
    v["attached_at"] = json!(a.attach_time);
    v["detached_at"] = Value::Null;
    v["attach_mode"] = json!(a.attach_mode.as_str());
    v["connection_info"] = info.connection_info.clone().unwrap_or(Value::Null);
    v
}

pub(super) async fn list(c: &Ctx<'_>, uri: &Uri, full: bool) -> Reply {
    check_version(c, ATTACHMENTS)?;
    let q = query(uri);
    let volume = q.iter().find(|(k, _)| k == "volume_id").map(|(_, v)| v.as_str());
    let all = q.iter().any(|(k, v)| k == "all_tenants" && truthy(v));
    let list = c.svc.list_attachments(c.who, volume, all).await?;
    let out: Vec<Value> = list.iter().map(|a| if full { detail(a) } else { summary(a) }).collect();
    Ok((StatusCode::OK, json!({ "attachments": out })))
}

pub(super) async fn show(c: &Ctx<'_>, id: &str) -> Reply {
    check_version(c, ATTACHMENTS)?;
    let a = c.svc.get_attachment(c.who, id).await?;
    Ok((StatusCode::OK, json!({ "attachment": detail(&a) })))
}

pub(super) async fn create(c: &Ctx<'_>, bytes: &Bytes) -> Reply {
    check_version(c, ATTACHMENTS)?;
    let b: CreateBody = body(bytes)?;
    let a = b.attachment;
    let mode = match a.mode.as_deref() {
        None | Some("null") => AttachMode::Rw,
        Some(_) if c.mv < MODE => {
            return Err(ApiError::bad_request("Invalid input received: mode needs microversion 3.54 or later"));
        }
        Some(m) => AttachMode::parse(m)?,
    };
    let info = c.svc.create_attachment(c.who, &a.volume_uuid, a.instance_uuid, connector(a.connector)?, mode).await?;
    Ok((StatusCode::OK, json!({ "attachment": detail(&info) })))
}

pub(super) async fn update(c: &Ctx<'_>, id: &str, bytes: &Bytes) -> Reply {
    check_version(c, ATTACHMENTS)?;
    let b: UpdateBody = body(bytes)?;
    let conn = connector(Some(b.attachment.connector))?
        .ok_or_else(|| ApiError::bad_request("Invalid input received: an attachment update needs a connector"))?;
    let info = c.svc.update_attachment(c.who, id, conn).await?;
    Ok((StatusCode::OK, json!({ "attachment": detail(&info) })))
}

pub(super) async fn delete(c: &Ctx<'_>, id: &str) -> Reply {
    check_version(c, ATTACHMENTS)?;
    let left = c.svc.delete_attachment(c.who, id).await?;
    Ok((StatusCode::OK, json!({ "attachments": left.iter().map(summary).collect::<Vec<_>>() })))
}

/// `{"os-complete": {}}` (or `null`): 204.
pub(super) async fn action(c: &Ctx<'_>, id: &str, bytes: &Bytes) -> Reply {
    check_version(c, ATTACHMENTS)?;
    let actions: serde_json::Map<String, Value> = body(bytes)?;
    let mut it = actions.into_iter();
    match (it.next(), it.next()) {
        (Some((name, _)), None) if name == "os-complete" => {
            check_version(c, COMPLETE)?;
            c.svc.complete_attachment(c.who, id).await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        (Some((name, _)), None) => Err(ApiError::bad_request(format!("There is no such action: {name}"))),
        _ => Err(ApiError::bad_request("Invalid input received: the body must name exactly one action")),
    }
}
