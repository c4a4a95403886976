//! `GET /resource_filters` (3.33): which list filters each resource takes.
//! The lists here are the filters rekey's list handlers honour (not
//! Cinder's configurable defaults): a client that asks before filtering
//! learns what will be applied, and a filter not named is ignored.

use axum::http::{StatusCode, Uri};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{query, Reply};

/// The microversion resource filters came with.
const SINCE: (u32, u32) = (3, 33);

/// (resource, the filters its list applies).
const FILTERS: &[(&str, &[&str])] = &[
    ("volume", &["name", "status", "bootable", "availability_zone", "metadata", "project_id"]),
    ("snapshot", &["name", "status", "volume_id", "metadata"]),
    ("backup", &["volume_id"]),
    ("attachment", &["volume_id"]),
    ("pool", &["name"]),
];

pub(super) fn handle(uri: &Uri, mv: (u32, u32)) -> Reply {
    if mv < SINCE {
        return Err(ApiError::not_found_path());
    }
    let asked = query(uri).into_iter().rev().find(|(k, _)| k == "resource").map(|(_, v)| v);
    let view = |(r, f): &(&str, &[&str])| json!({ "resource": r, "filters": f });
    let list: Vec<Value> = match asked.as_deref() {
        None | Some("") => FILTERS.iter().map(view).collect(),
        Some(r) => FILTERS.iter().filter(|(name, _)| *name == r).map(view).collect(),
    };
    Ok((StatusCode::OK, json!({ "resource_filters": list })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_resource_or_all_and_nothing_before_3_33() {
        let uri: Uri = "/v3/resource_filters?resource=snapshot".parse().unwrap();
        let (_, v) = handle(&uri, (3, 33)).unwrap();
        assert_eq!(v, json!({"resource_filters": [{"resource": "snapshot", "filters": ["name", "status", "volume_id", "metadata"]}]}));
        let (_, v) = handle(&"/v3/resource_filters".parse().unwrap(), (3, 71)).unwrap();
        assert_eq!(v["resource_filters"].as_array().unwrap().len(), FILTERS.len());
        let (_, v) = handle(&"/v3/resource_filters?resource=nothing".parse().unwrap(), (3, 71)).unwrap();
        assert_eq!(v, json!({"resource_filters": []}));
        assert_eq!(handle(&"/v3/resource_filters".parse().unwrap(), (3, 32)).unwrap_err().status, 404);
    }
}
