//! Per-project default volume types (3.62) with the real `cinder` CLI
//! (`default-type-set`, `default-type-list`, `default-type-unset`): a create
//! that names no type gets the project's default, a default type cannot be
//! deleted, and bad requests change nothing.

use std::process::Output;

use serde_json::Value;

use crate::harness::*;

fn cinder_ok(srv: &Server, args: &[&str]) -> String {
    let mut all = vec!["--os-volume-api-version", "3.62"];
    all.extend_from_slice(args);
    let o: Output = srv.cinder(&all);
    assert!(o.status.success(), "cinder {args:?}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn at(mv: &str) -> [(&'static str, String); 2] {
    [("X-Auth-Token", format!("u:{PROJECT}")), ("OpenStack-API-Version", format!("volume {mv}"))]
}

fn call(srv: &Server, mv: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let h = at(mv);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http(srv.port, method, path, &h, body.map(str::as_bytes)).unwrap()
}

fn new_volume_type(srv: &Server) -> String {
    let v = srv.create_volume(serde_json::json!({"volume": {"size": 1, "name": "untyped"}}));
    v["volume_type_id"].as_str().unwrap_or_else(|| panic!("no volume_type_id: {v}")).to_owned()
}

#[test]
fn a_projects_default_type_is_set_listed_used_protected_and_unset_with_the_cinder_cli() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let gold = srv.create_type("gold", None, &[]);
    let builtin = new_volume_type(&srv);
    assert_ne!(builtin, gold);

    let out = cinder_ok(&srv, &["default-type-set", "gold", PROJECT]);
    assert!(out.contains(&gold) && out.contains(PROJECT), "{out}");
    let out = cinder_ok(&srv, &["default-type-list"]);
    assert!(out.contains(&gold) && out.contains(PROJECT), "{out}");
    let out = cinder_ok(&srv, &["default-type-list", "--project-id", PROJECT]);
    assert!(out.contains(&gold), "{out}");

    // A default type cannot be deleted.
    let o = srv.cinder(&["type-delete", "gold"]);
    assert!(!o.status.success(), "deleted a project's default type");
    let (st, body) = call(&srv, "3.62", "DELETE", &format!("/v3/{PROJECT}/types/{gold}"), None);
    assert_eq!(st, 400, "{body}");
    assert!(body["badRequest"]["message"].as_str().unwrap().contains("default volume type"), "{body}");

    assert_eq!(new_volume_type(&srv), gold, "a create naming no type gets the project's default");

    // Bad requests change nothing.
    for (mv, body, want) in [
        ("3.62", r#"{"default_type": {"volume_type": "no-such-type"}}"#, 400),
        ("3.62", r#"{"default_type": {}}"#, 400),
        ("3.62", r#"{"default_type": {"volume_type": "gold", "colour": "red"}}"#, 400),
        ("3.62", r#"{"default_type": {"volume_type": ""}}"#, 400),
        ("3.62", "{", 400),
        ("3.61", r#"{"default_type": {"volume_type": "gold"}}"#, 404),
    ] {
        let (st, b) = call(&srv, mv, "PUT", &format!("/v3/default-types/{PROJECT}"), Some(body));
        assert_eq!(st, want, "{mv} {body}: {b}");
        let key = if want == 400 { "badRequest" } else { "itemNotFound" };
        assert!(b[key]["message"].is_string(), "{mv} {body}: {b}");
    }
    let o = srv.cinder(&["--os-volume-api-version", "3.62", "default-type-set", "no-such-type", PROJECT]);
    assert!(!o.status.success(), "set a default to a type that does not exist");
    let (st, b) = call(&srv, "3.62", "GET", &format!("/v3/default-types/{PROJECT}"), None);
    assert_eq!((st, b["default_type"]["volume_type_id"].as_str()), (200, Some(gold.as_str())), "{b}");
    let (st, _) = call(&srv, "3.62", "POST", "/v3/default-types", Some("{}"));
    assert_eq!(st, 405);

    cinder_ok(&srv, &["default-type-unset", PROJECT]);
    let (st, b) = call(&srv, "3.62", "GET", &format!("/v3/default-types/{PROJECT}"), None);
    assert_eq!(st, 404, "{b}");
    assert_eq!(b["itemNotFound"]["message"], format!("Default type for project {PROJECT} not found."), "{b}");
    let (st, b) = call(&srv, "3.62", "GET", "/v3/default-types", None);
    assert_eq!((st, b["default_types"].clone()), (200, serde_json::json!([])), "{b}");
    assert_eq!(new_volume_type(&srv), builtin, "after unset, creates get the service's default again");
    let (st, b) = call(&srv, "3.62", "DELETE", &format!("/v3/{PROJECT}/types/{gold}"), None);
    let msg = b["badRequest"]["message"].as_str().unwrap_or_default();
    assert!(st == 400 && msg.contains("volumes present") && !msg.contains("default"), "no longer a default, only its volume keeps it: {b}");
}

/// `cinder list-filters` (3.33) names the filters the lists apply; a filter
/// it names for volumes really filters.
#[test]
fn list_filters_with_the_cinder_cli_names_what_the_lists_apply() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut args = vec!["--os-volume-api-version", "3.33", "list-filters", "--resource", "volume"];
    let o = srv.cinder(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("volume") && out.contains("status") && out.contains("bootable"), "{out}");
    assert!(!out.contains("snapshot"), "only the volume filters were asked for: {out}");
    args.truncate(3);
    let out = String::from_utf8_lossy(&srv.cinder(&args).stdout).into_owned();
    for r in ["volume", "snapshot", "backup", "attachment", "pool"] {
        assert!(out.contains(r), "{r} missing: {out}");
    }
    let (st, b) = call(&srv, "3.32", "GET", "/v3/resource_filters", None);
    assert_eq!(st, 404, "before 3.33: {b}");
    let (st, _) = call(&srv, "3.33", "POST", "/v3/resource_filters", Some("{}"));
    assert_eq!(st, 405);
    srv.create_volume(serde_json::json!({"volume": {"size": 1, "name": "a"}}));
    srv.create_volume(serde_json::json!({"volume": {"size": 1, "name": "b"}}));
    let (st, b) = call(&srv, "3.33", "GET", "/v3/volumes?name=b", None);
    assert_eq!(st, 200);
    let names: Vec<&str> = b["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b"], "{b}");
}
