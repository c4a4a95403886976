//! Manageable lists (3.8): `GET /manageable_volumes[/detail]` and
//! `/manageable_snapshots[/detail]`, admin only — the back end's images on a
//! volume host, each with the rekey record it is (`cinder_id`) and why it is
//! not safe to manage (see [`crate::manageable`]).

use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{query, Reply};
use crate::manageable::Manageable;
use crate::service::Service;

/// The microversion manageable lists came with.
const SINCE: (u32, u32) = (3, 8);
/// From this microversion a `cluster` may name the back end instead of `host`.
const CLUSTER_SINCE: (u32, u32) = (3, 17);

/// Operations of this module: (snapshots rather than volumes, detail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageableEndpoint {
    /// `manageable_snapshots` rather than `manageable_volumes`.
    pub snapshots: bool,
    /// The `/detail` list.
    pub detail: bool,
}

/// Routes the path segments after `/v3[/{project}]`, `None` if not this
/// module's.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Option<Result<ManageableEndpoint, ApiError>> {
    let snapshots = match segs.first() {
        Some(&"manageable_volumes") => false,
        Some(&"manageable_snapshots") => true,
        _ => return None,
    };
    let detail = match &segs[1..] {
        [] => false,
        ["detail"] => true,
        _ => return Some(Err(ApiError::not_found_path())),
    };
    if m != Method::GET {
        return Some(Err(ApiError::bad_method()));
    }
    Some(Ok(ManageableEndpoint { snapshots, detail }))
}

fn view(m: &Manageable, snapshots: bool, detail: bool) -> Value {
    let mut v = json!({ "reference": {"source-name": m.reference}, "size": m.size_gb, "safe_to_manage": false });
    if snapshots {
        v["source_reference"] = json!({"source-name": m.source_reference});
    }
    if detail {
        v["reason_not_safe"] = json!(m.reason_not_safe());
        v["cinder_id"] = json!(m.cinder_id);
        v["extra_info"] = Value::Null;
    }
    v
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

pub(super) async fn handle(svc: &Arc<Service>, e: ManageableEndpoint, uri: &Uri, mv: (u32, u32)) -> Reply {
    if mv < SINCE {
        return Err(ApiError::not_found_path());
    }
    let q = query(uri);
    let get = |k: &str| q.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let host = if mv >= CLUSTER_SINCE {
        match (get("host"), get("cluster")) {
            (Some(h), None) | (None, Some(h)) => h,
            _ => return Err(bad("Invalid input received: One and only one of cluster and host must be set.")),
        }
    } else {
        get("host").ok_or_else(|| bad("Invalid input received: Host field is missing."))?
    };
    // `sort=key[:dir],…`, or the older `sort_key`/`sort_dir` (Cinder's get_sort_params).
    let (sort_keys, sort_dirs): (Vec<&str>, Vec<&str>) = match get("sort") {
        Some(s) => s.split(',').map(str::trim).map(|p| p.split_once(':').map_or((p, "desc"), |(k, d)| (k.trim(), d.trim()))).unzip(),
        None => (
            get("sort_key").or(get("sort_keys")).map_or(vec!["reference"], |s| s.split(',').map(str::trim).collect()),
            get("sort_dir").or(get("sort_dirs")).map_or(vec!["desc"], |s| s.split(',').map(str::trim).collect()),
        ),
    };
    let bad_keys: Vec<&str> = sort_keys.iter().copied().filter(|k| !matches!(*k, "reference" | "size")).collect();
    if !bad_keys.is_empty() {
        return Err(bad(format!("Invalid input received: Invalid sort keys passed: {}", bad_keys.join(", "))));
    }
    let bad_dirs: Vec<&str> = sort_dirs.iter().copied().filter(|d| !matches!(*d, "asc" | "desc")).collect();
    if !bad_dirs.is_empty() {
        return Err(bad(format!("Invalid input received: Invalid sort dirs passed: {}", bad_dirs.join(", "))));
    }
    let number = |k: &str| -> Result<Option<usize>, ApiError> {
        get(k).map(|v| v.parse::<usize>().map_err(|_| bad(format!("Invalid input received: {k} must be a non-negative integer")))).transpose()
    };
    let (limit, offset) = (number("limit")?, number("offset")?.unwrap_or(0));
    let mut rows = svc.manageable(host, e.snapshots).await?;
    rows.sort_by(|a, b| {
        for (i, k) in sort_keys.iter().enumerate() {
            let o = match *k {
                "size" => a.size_gb.cmp(&b.size_gb),
                _ => a.reference.cmp(&b.reference),
            };
            let o = if sort_dirs.get(i).or(sort_dirs.last()) == Some(&"desc") { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let start = match get("marker") {
        None => 0,
        Some(m) => rows.iter().position(|r| r.reference == m).map(|i| i + 1).ok_or_else(|| ApiError {
            status: 404,
            message: format!("Marker {m} could not be found."),
        })?,
    };
    let page: Vec<Value> =
        rows.iter().skip(start + offset).take(limit.unwrap_or(usize::MAX)).map(|r| view(r, e.snapshots, e.detail)).collect();
    let key = if e.snapshots { "manageable-snapshots" } else { "manageable-volumes" };
    Ok((StatusCode::OK, json!({ key: page })))
}
