//! `/volumes/{id}/metadata[/{key}]` and `/snapshots/{id}/metadata[/{key}]`:
//! Cinder's bodies (`{"metadata": {...}}` for the set, `{"meta": {k: v}}`
//! for one key) and its 400s for a body that does not match the URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::paths::{MetaOf, MetaOp};
use super::{body, Reply};
use crate::model::Caller;
use crate::paths::actions::MetaChange;
use crate::service::Service;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaBody {
    meta: BTreeMap<String, String>,
}

/// Handles one metadata request.
pub(super) async fn handle(svc: &Arc<Service>, who: &Caller, of: MetaOf, id: &str, op: MetaOp, bytes: &Bytes) -> Reply {
    let change = match op {
        MetaOp::List => return Ok((StatusCode::OK, json!({ "metadata": read(svc, who, of, id).await? }))),
        MetaOp::Show(key) => {
            let m = read(svc, who, of, id).await?;
            let v = m.get(&key).ok_or_else(|| ApiError { status: 404, message: format!("Metadata item was not found: {key}") })?;
            return Ok((StatusCode::OK, json!({ "meta": { key: v } })));
        }
        MetaOp::Merge => MetaChange::Merge(body::<MetadataBody>(bytes)?.metadata),
        MetaOp::Replace => MetaChange::Replace(body::<MetadataBody>(bytes)?.metadata),
        MetaOp::Set(key) => {
            let meta = body::<MetaBody>(bytes)?.meta;
            let mut it = meta.into_iter();
            match (it.next(), it.next()) {
                (Some((k, v)), None) if k == key => MetaChange::Set(k, v),
                (Some(_), None) => return Err(ApiError::bad_request("Request body and URI mismatch")),
                (None, _) => return Err(ApiError::bad_request("Malformed request body: meta must name one key")),
                _ => return Err(ApiError::bad_request("Request body contains too many items")),
            }
        }
        MetaOp::Delete(key) => MetaChange::Delete(key),
    };
    let one = match &change {
        MetaChange::Set(k, v) => Some((k.clone(), v.clone())),
        _ => None,
    };
    let deleting = matches!(change, MetaChange::Delete(_));
    let m = match of {
        MetaOf::Volume => svc.change_volume_metadata(who, id, change).await?,
        MetaOf::Snapshot => svc.change_snapshot_metadata(who, id, change).await?,
    };
    Ok(match (one, deleting) {
        (_, true) => (StatusCode::OK, Value::Null),
        (Some((k, v)), _) => (StatusCode::OK, json!({ "meta": { k: v } })),
        (None, _) => (StatusCode::OK, json!({ "metadata": m })),
    })
}

async fn read(svc: &Service, who: &Caller, of: MetaOf, id: &str) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(match of {
        MetaOf::Volume => svc.volume_metadata(who, id).await?,
        MetaOf::Snapshot => svc.snapshot_metadata(who, id).await?,
    })
}
