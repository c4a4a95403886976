//! The operator surface (availability zones, extensions, services, hosts,
//! pools, capabilities) through the real `cinder` CLI, with its bad inputs:
//! Cinder's 4xx bodies and nothing changed afterwards.

use std::process::Output;

use serde_json::Value;

use crate::harness::*;

fn start() -> (Server, tempfile::TempDir) {
    venv();
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[]);
    (srv, dir)
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CLI call that must fail, with `status` in Cinder's words on stderr.
fn refused(out: &Output, status: u16) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a refusal, got:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(&format!("HTTP {status}")), "expected HTTP {status}:\n{err}");
    err
}

/// A CLI call refused because the thing is not there: the server's 404, or
/// the client's own lookup (by id, then name) finding nothing.
fn not_found(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a refusal, got:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("HTTP 404") || err.contains("with a name or ID of"), "expected not found:\n{err}");
}

fn services(srv: &Server, query: &str) -> Vec<Value> {
    let (st, v) = srv.http("GET", &format!("/v3/os-services{query}"), None);
    assert_eq!(st, 200, "{v}");
    v["services"].as_array().unwrap().clone()
}

fn volume_service(srv: &Server) -> Value {
    let s = services(srv, "?binary=cinder-volume");
    assert_eq!(s.len(), 1, "{s:?}");
    s[0].clone()
}

#[test]
fn zones_and_extensions() {
    let (srv, _d) = start();
    let out = stdout(&srv.cinder(&["availability-zone-list"]));
    let row = out.lines().find(|l| l.contains("nova")).unwrap_or_else(|| panic!("no zone nova:\n{out}"));
    assert!(row.contains("available"), "{row}");
    let out = stdout(&srv.cinder(&["list-extensions"]));
    for alias in ["os-hosts", "os-services", "scheduler-stats", "os-availability-zone"] {
        assert!(out.contains(alias), "no {alias} in:\n{out}");
    }
    let (st, v) = srv.http("POST", "/v3/os-availability-zone", Some(b"{}"));
    assert_eq!((st, v["badMethod"]["code"].as_u64()), (405, Some(405)), "{v}");
}

#[test]
fn services_list_filter_enable_disable() {
    let (srv, _d) = start();
    let out = stdout(&srv.cinder(&["service-list"]));
    let row = out.lines().find(|l| l.contains("cinder-volume")).unwrap_or_else(|| panic!("no cinder-volume:\n{out}"));
    for want in ["rekey@file", "nova", "enabled", "up"] {
        assert!(row.contains(want), "{want} missing in {row}");
    }
    for binary in ["cinder-scheduler", "cinder-backup"] {
        assert!(out.contains(binary), "no {binary}:\n{out}");
    }
    // Cinder's host filter: the host or any backend on it.
    let on_rekey = services(&srv, "?host=rekey");
    assert_eq!(on_rekey.len(), 1, "{on_rekey:?}");
    assert_eq!(on_rekey[0]["host"], "rekey@file");
    assert_eq!(services(&srv, "?host=rekey&binary=cinder-scheduler").len(), 0);
    assert_eq!(services(&srv, "?host=nohost").len(), 0);
    let out = stdout(&srv.cinder(&["service-list", "--binary", "cinder-scheduler"]));
    assert!(!out.contains("cinder-volume") && out.contains("cinder-scheduler"), "{out}");

    // Disable with a reason, then enable: both seen in the list.
    stdout(&srv.cinder(&["service-disable", "--reason", "disk swap", "rekey@file", "cinder-volume"]));
    let s = volume_service(&srv);
    assert_eq!((s["status"].as_str(), s["disabled_reason"].as_str()), (Some("disabled"), Some("disk swap")), "{s}");
    // The scheduler passes over a disabled volume service.
    let (st, v) = srv.http("POST", "/v3/volumes", Some(br#"{"volume": {"size": 1}}"#));
    assert_eq!(st, 202, "{v}");
    let v = srv.wait_settled(v["volume"]["id"].as_str().unwrap());
    assert_eq!(v["status"], "error", "{v}");
    let out = stdout(&srv.cinder(&["service-enable", "rekey@file", "cinder-volume"]));
    assert!(out.contains("enabled"), "{out}");
    let s = volume_service(&srv);
    assert_eq!((s["status"].as_str(), s["disabled_reason"].as_str()), (Some("enabled"), None), "{s}");
    assert_eq!(srv.create_volume(serde_json::json!({"volume": {"size": 1}}))["status"], "available");

    // Bad inputs: unknown host or binary (404), no reason, unknown action,
    // no host (400); the service is as it was.
    refused(&srv.cinder(&["service-disable", "invalid_host", "cinder-volume"]), 404);
    refused(&srv.cinder(&["service-enable", "rekey@file", "invalid_binary"]), 404);
    let bad: &[(&str, &str, u16)] = &[
        ("disable-log-reason", r#"{"host": "rekey@file", "binary": "cinder-volume", "disabled_reason": null}"#, 400),
        ("disable-log-reason", r#"{"host": "rekey@file", "binary": "cinder-volume", "disabled_reason": "   "}"#, 400),
        ("enable", r#"{"binary": "cinder-volume"}"#, 400),
        ("enable", r#"{"host": "rekey@file"}"#, 400),
        ("enable", "{", 400),
        ("reboot", r#"{"host": "rekey@file", "binary": "cinder-volume"}"#, 400),
        ("disable", r#"{"host": "rekey@file", "binary": "cinder-nothing"}"#, 404),
    ];
    for (action, body, status) in bad {
        let (st, v) = srv.http("PUT", &format!("/v3/os-services/{action}"), Some(body.as_bytes()));
        assert_eq!(st, *status, "{action} {body}: {v}");
        let key = if *status == 400 { "badRequest" } else { "itemNotFound" };
        assert_eq!(v[key]["code"].as_u64(), Some(u64::from(*status)), "{v}");
    }
    let long = "x".repeat(256);
    let body = serde_json::json!({"host": "rekey@file", "binary": "cinder-volume", "disabled_reason": long});
    let (st, v) = srv.http("PUT", "/v3/os-services/disable-log-reason", Some(body.to_string().as_bytes()));
    assert_eq!(st, 400, "{v}");
    let s = volume_service(&srv);
    assert_eq!((s["status"].as_str(), s["disabled_reason"].as_str()), (Some("enabled"), None), "{s}");
}

#[test]
fn freeze_and_thaw() {
    let (srv, _d) = start();
    stdout(&srv.cinder(&["freeze-host", "rekey@file"]));
    assert_eq!(volume_service(&srv)["frozen"], true);
    stdout(&srv.cinder(&["thaw-host", "rekey@file"]));
    assert_eq!(volume_service(&srv)["frozen"], false);
    let err = refused(&srv.cinder(&["freeze-host", "invalid_host"]), 400);
    assert!(err.contains("No service found with host=invalid_host"), "{err}");
    refused(&srv.cinder(&["thaw-host", "invalid_host"]), 400);
    let (st, v) = srv.http("PUT", "/v3/os-services/freeze", Some(b"{}"));
    assert_eq!((st, v["badRequest"]["code"].as_u64()), (400, Some(400)), "{v}");
    assert_eq!(volume_service(&srv)["frozen"], false);
}

#[test]
fn hosts_pools_capabilities() {
    let (srv, _d) = start();
    srv.create_volume(serde_json::json!({"volume": {"size": 2, "name": "h1"}}));
    let (st, v) = srv.http("GET", "/v3/os-hosts", None);
    assert_eq!(st, 200, "{v}");
    let hosts = v["hosts"].as_array().unwrap();
    let vol = hosts.iter().find(|h| h["service"] == "cinder-volume").unwrap_or_else(|| panic!("{v}"));
    assert_eq!((vol["host_name"].as_str(), vol["service-state"].as_str()), (Some("rekey@file"), Some("enabled")));
    assert_eq!(vol["service-status"], "available");
    let (st, v) = srv.http("GET", "/v3/os-hosts/rekey@file", None);
    assert_eq!(st, 200, "{v}");
    let total = &v["host"][0]["resource"];
    assert_eq!((total["project"].as_str(), total["volume_count"].as_str()), (Some("(total)"), Some("1")), "{v}");
    assert_eq!(total["total_volume_gb"], "2");
    let mine = &v["host"][1]["resource"];
    assert_eq!(mine["project"].as_str(), Some(PROJECT), "{v}");
    let (st, v) = srv.http("GET", "/v3/os-hosts/invalid_host", None);
    assert_eq!((st, v["itemNotFound"]["code"].as_u64()), (404, Some(404)), "{v}");

    let out = stdout(&srv.cinder(&["get-pools"]));
    assert!(out.contains("rekey@file#file"), "{out}");
    let out = stdout(&srv.cinder(&["get-pools", "--detail"]));
    for want in ["Open Source", "total_capacity_gb", "free_capacity_gb", "nbd"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let (st, v) = srv.http("GET", "/v3/scheduler-stats/get_pools?detail=True", None);
    assert_eq!(st, 200, "{v}");
    let caps = &v["pools"][0]["capabilities"];
    let (total, free) = (caps["total_capacity_gb"].as_f64().unwrap(), caps["free_capacity_gb"].as_f64().unwrap());
    assert!(total > 0.0 && free <= total, "{caps}");
    let (st, v) = srv.http("GET", "/v3/scheduler-stats/get_pools?detail=maybe", None);
    assert_eq!((st, v["badRequest"]["code"].as_u64()), (400, Some(400)), "{v}");

    let out = stdout(&srv.cinder(&["get-capabilities", "rekey@file"]));
    for want in ["OS::Storage::Capabilities::rekey@file", "Open Source", "nbd", "thin_provisioning"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    refused(&srv.cinder(&["get-capabilities", "invalid_host"]), 404);
}

fn qos(srv: &Server, id: &str) -> (u16, Value) {
    srv.http("GET", &format!("/v3/qos-specs/{id}"), None)
}

fn type_qos(srv: &Server, type_id: &str) -> Value {
    let (st, v) = srv.http("GET", &format!("/v3/types/{type_id}"), None);
    assert_eq!(st, 200, "{v}");
    v["volume_type"].get("qos_specs_id").cloned().unwrap_or(Value::Null)
}

#[test]
fn qos_specs_keys_and_associations() {
    let (srv, _d) = start();
    let id = table_field(&srv.cinder(&["qos-create", "gold", "consumer=front-end", "read_iops_sec=2000"]), "id");
    let out = stdout(&srv.cinder(&["qos-list"]));
    assert!(out.contains("gold") && out.contains("front-end") && out.contains("read_iops_sec"), "{out}");
    stdout(&srv.cinder(&["qos-key", &id, "set", "iops_bytes=500"]));
    let (st, v) = qos(&srv, &id);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["qos_specs"]["specs"], serde_json::json!({"read_iops_sec": "2000", "iops_bytes": "500"}));
    assert!(v["links"][0]["href"].as_str().unwrap().ends_with(&format!("/qos-specs/{id}")), "{v}");
    stdout(&srv.cinder(&["qos-key", &id, "unset", "iops_bytes"]));
    assert_eq!(qos(&srv, &id).1["qos_specs"]["specs"], serde_json::json!({"read_iops_sec": "2000"}));

    // Bad inputs, each leaving the specs as they were.
    refused(&srv.cinder(&["qos-create", "gold", "a=b"]), 409);
    refused(&srv.cinder(&["qos-create", "silver", "consumer=everyone"]), 400);
    refused(&srv.cinder(&["qos-key", &id, "unset", "no_such_key"]), 400);
    let out = srv.cinder(&["qos-show", "00000000-0000-0000-0000-000000000000"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No qosspecs"), "{out:?}");
    let (st, v) = qos(&srv, "00000000-0000-0000-0000-000000000000");
    assert_eq!((st, v["itemNotFound"]["code"].as_u64()), (404, Some(404)), "{v}");
    let bad: &[(&str, &str, &str, u16)] = &[
        ("POST", "/v3/qos-specs", r#"{"qos_specs": {"name": "x", "iops": 5}}"#, 400),
        ("POST", "/v3/qos-specs", r#"{"qos_specs": {"consumer": "both"}}"#, 400),
        ("POST", "/v3/qos-specs", r#"{"qos_specs": {"name": "   "}}"#, 400),
        ("POST", "/v3/qos-specs", "[]", 400),
        ("PUT", "/v3/qos-specs/ID", r#"{"qos_specs": {"consumer": "nobody"}}"#, 400),
        ("PUT", "/v3/qos-specs/ID/delete_keys", r#"{"keys": "read_iops_sec"}"#, 400),
        ("GET", "/v3/qos-specs/ID/associate", "", 400),
        ("GET", "/v3/qos-specs/ID/associate?vol_type_id=nope", "", 404),
    ];
    for (m, path, body, status) in bad {
        let path = path.replace("ID", &id);
        let (st, v) = srv.http(m, &path, (!body.is_empty()).then_some(body.as_bytes()));
        assert_eq!(st, *status, "{m} {path} {body}: {v}");
    }
    let (_, v) = qos(&srv, &id);
    assert_eq!((v["qos_specs"]["consumer"].as_str(), &v["qos_specs"]["specs"]), (Some("front-end"), &serde_json::json!({"read_iops_sec": "2000"})));
    let (_, all) = srv.http("GET", "/v3/qos-specs", None);
    assert_eq!(all["qos_specs"].as_array().unwrap().len(), 1, "{all}");

    // Associations: the type's view follows them; one specs per type.
    let t1 = srv.create_type("qt1", None, &[]);
    let t2 = srv.create_type("qt2", None, &[]);
    assert_eq!(type_qos(&srv, &t1), Value::Null);
    stdout(&srv.cinder(&["qos-associate", &id, &t1]));
    stdout(&srv.cinder(&["qos-associate", &id, &t2]));
    assert_eq!(type_qos(&srv, &t1), id.as_str());
    let out = stdout(&srv.cinder(&["qos-get-association", &id]));
    assert!(out.contains(&t1) && out.contains(&t2) && out.contains("volume_type"), "{out}");
    let other = table_field(&srv.cinder(&["qos-create", "bronze", "consumer=both"]), "id");
    refused(&srv.cinder(&["qos-associate", &other, &t1]), 400);
    assert_eq!(type_qos(&srv, &t1), id.as_str());
    refused(&srv.cinder(&["qos-delete", &id]), 400);
    assert_eq!(qos(&srv, &id).0, 200);
    stdout(&srv.cinder(&["qos-disassociate", &id, &t1]));
    assert_eq!(type_qos(&srv, &t1), Value::Null);
    assert_eq!(type_qos(&srv, &t2), id.as_str());
    stdout(&srv.cinder(&["qos-disassociate-all", &id]));
    assert_eq!(type_qos(&srv, &t2), Value::Null);
    stdout(&srv.cinder(&["qos-associate", &id, &t1]));
    stdout(&srv.cinder(&["qos-delete", "--force", "True", &id]));
    assert_eq!(qos(&srv, &id).0, 404);
    assert_eq!(type_qos(&srv, &t1), Value::Null);
    stdout(&srv.cinder(&["qos-delete", &other]));
    let (_, all) = srv.http("GET", "/v3/qos-specs", None);
    assert_eq!(all["qos_specs"], serde_json::json!([]));
}

/// A create no backend can take (its type asks for another protocol) is
/// accepted, ends in `error` with nothing made on the backend and no key
/// left, and the project is told why in a user message; a type naming
/// what the pool reports still works.
#[test]
fn unschedulable_create_leaves_a_user_message() {
    let (srv, _d) = start();
    let good = srv.create_type("fits", Some("luks"), &[("storage_protocol", "nbd"), ("vendor_name", "Open Source")]);
    let v = srv.create_volume(serde_json::json!({"volume": {"size": 1, "volume_type": good}}));
    assert_eq!(v["status"], "available", "{v}");

    let bad = srv.create_type("elsewhere", Some("luks"), &[("storage_protocol", "iSCSI"), ("capabilities:vendor_name", "ACME")]);
    let id = table_field(&srv.cinder(&["create", "--volume-type", &bad, "--name", "nowhere", "1"]), "id");
    let v = srv.wait_settled(&id);
    assert_eq!(v["status"], "error", "{v}");
    assert!(!volume_path(srv.data_dir.as_path(), &id).exists(), "a backend volume was made");
    assert_no_orphan_keys(&srv.data_dir, "unschedulable create");

    let out = stdout(&srv.cinder(&["message-list"]));
    let row = out.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("no message for {id}:\n{out}"));
    assert!(row.contains("VOLUME_VOLUME_001_003"), "{row}");
    let (st, v) = srv.http("GET", "/v3/messages", None);
    assert_eq!(st, 200, "{v}");
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "only the failed create has a message: {v}");
    let mid = msgs[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(msgs[0]["user_message"], "schedule allocate volume:Could not find any available weighted backend.");
    assert_eq!((msgs[0]["resource_type"].as_str(), msgs[0]["message_level"].as_str()), (Some("VOLUME"), Some("ERROR")));
    let out = stdout(&srv.cinder(&["message-show", &mid]));
    assert!(out.contains(&id) && out.contains("guaranteed_until"), "{out}");

    // Another project sees none of it; before 3.3 there are no messages.
    let (st, v) = srv.http_as("someone-else", "GET", "/v3/messages", None);
    assert_eq!((st, v["messages"].as_array().map(Vec::len)), (200, Some(0)), "{v}");
    let (st, v) = srv.http_as("someone-else", "DELETE", &format!("/v3/messages/{mid}"), None);
    assert_eq!((st, v["itemNotFound"]["code"].as_u64()), (404, Some(404)), "{v}");
    let (st, _) = http(srv.port, "GET", "/v3/messages", &[("X-Auth-Token", "u:notused"), ("OpenStack-API-Version", "volume 3.0")], None).unwrap();
    assert_eq!(st, 404);
    not_found(&srv.cinder(&["message-show", "00000000-0000-0000-0000-000000000000"]));

    stdout(&srv.cinder(&["message-delete", &mid]));
    let (st, v) = srv.http("GET", &format!("/v3/messages/{mid}"), None);
    assert_eq!((st, v["itemNotFound"]["code"].as_u64()), (404, Some(404)), "{v}");
    let out = srv.cinder(&["message-delete", &mid]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Unable to delete"), "{out:?}");
    let (st, v) = srv.http("DELETE", &format!("/v3/messages/{mid}"), None);
    assert_eq!((st, v["itemNotFound"]["code"].as_u64()), (404, Some(404)), "{v}");
}

fn group_type(srv: &Server, id: &str) -> (u16, Value) {
    srv.http("GET", &format!("/v3/group_types/{id}"), None)
}

#[test]
fn group_types_and_specs() {
    let (srv, _d) = start();
    let out = stdout(&srv.cinder(&["group-type-create", "--description", "first", "gold-group"]));
    let (_, v) = srv.http("GET", "/v3/group_types", None);
    let id = v["group_types"][0]["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
    assert!(out.contains(&id) && out.contains("gold-group"), "{out}");
    let out = stdout(&srv.cinder(&["group-type-list"]));
    assert!(out.contains("gold-group") && out.contains(&id), "{out}");
    stdout(&srv.cinder(&["group-type-key", &id, "set", "consistent_group_snapshot_enabled=<is> False", "k2=v2"]));
    let out = stdout(&srv.cinder(&["group-specs-list"]));
    assert!(out.contains("consistent_group_snapshot_enabled") && out.contains("k2"), "{out}");
    stdout(&srv.cinder(&["group-type-key", &id, "unset", "k2"]));
    let (st, v) = srv.http("GET", &format!("/v3/group_types/{id}/group_specs"), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["group_specs"], serde_json::json!({"consistent_group_snapshot_enabled": "<is> False"}));
    stdout(&srv.cinder(&["group-type-update", "--name", "silver-group", "--is-public", "false", &id]));
    let (_, v) = group_type(&srv, &id);
    assert_eq!((v["group_type"]["name"].as_str(), v["group_type"]["is_public"].as_bool()), (Some("silver-group"), Some(false)), "{v}");
    // Private types are listed only when asked for.
    let (_, v) = srv.http("GET", "/v3/group_types", None);
    assert!(!v["group_types"].as_array().unwrap().iter().any(|t| t["id"] == id.as_str()), "{v}");
    let (_, v) = srv.http("GET", "/v3/group_types?is_public=None", None);
    assert!(v["group_types"].as_array().unwrap().iter().any(|t| t["id"] == id.as_str()), "{v}");

    // Bad inputs; the type is as it was.
    refused(&srv.cinder(&["group-type-create", "silver-group"]), 409);
    let bad: &[(&str, &str, &str, u16)] = &[
        ("POST", "/v3/group_types", r#"{"group_type": {"description": "no name"}}"#, 400),
        ("POST", "/v3/group_types", r#"{"group_type": {"name": "x", "group_specs": {"a": 1}}}"#, 400),
        ("POST", "/v3/group_types", r#"{"group_type": {"name": "x", "is_public": "perhaps"}}"#, 400),
        ("PUT", "/v3/group_types/ID", r#"{"group_type": {}}"#, 400),
        ("PUT", "/v3/group_types/ID/group_specs/a", r#"{"b": "c"}"#, 400),
        ("GET", "/v3/group_types/ID/group_specs/nope", "", 404),
        ("DELETE", "/v3/group_types/ID/group_specs/nope", "", 404),
        ("GET", "/v3/group_types/00000000-0000-0000-0000-000000000000", "", 404),
        ("GET", "/v3/group_types/default", "", 404),
        ("GET", "/v3/group_types?sort=size", "", 400),
    ];
    for (m, path, body, status) in bad {
        let path = path.replace("ID", &id);
        let (st, v) = srv.http(m, &path, (!body.is_empty()).then_some(body.as_bytes()));
        assert_eq!(st, *status, "{m} {path} {body}: {v}");
    }
    let (st, _) = http(srv.port, "GET", "/v3/group_types", &[("X-Auth-Token", "u:notused"), ("OpenStack-API-Version", "volume 3.10")], None).unwrap();
    assert_eq!(st, 404, "group types before 3.11");
    let (_, v) = group_type(&srv, &id);
    assert_eq!(v["group_type"]["group_specs"], serde_json::json!({"consistent_group_snapshot_enabled": "<is> False"}));
    let (_, all) = srv.http("GET", "/v3/group_types?is_public=None", None);
    assert_eq!(all["group_types"].as_array().unwrap().len(), 1, "{all}");

    stdout(&srv.cinder(&["group-type-delete", &id]));
    assert_eq!(group_type(&srv, &id).0, 404);
}
