//! Bad input gets Cinder-style 4xx answers, never a 5xx, and leaves nothing
//! half-created behind.

use std::time::Duration;

use serde_json::{json, Value};

use rekey_service::fault::{Point, Step};

use crate::harness::*;

fn start() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[]);
    (srv, dir)
}

/// Asserts a Cinder error body: `{"<key>": {"code": status, "message": ...}}`.
#[track_caller]
fn expect_error(got: (u16, Value), status: u16, key: &str, needle: &str) {
    let (st, body) = got;
    assert_eq!(st, status, "{body}");
    let inner = &body[key];
    assert_eq!(inner["code"], status, "body {body} should carry {key}.code");
    let msg = inner["message"].as_str().unwrap_or_else(|| panic!("no message in {body}"));
    assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("volumes")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn malformed_and_invalid_create_requests() {
    let (srv, _d) = start();
    srv.create_type("LUKS", Some("luks"), &[]);
    let post = |b: &[u8]| srv.http("POST", "/v3/volumes", Some(b));
    expect_error(post(b"{\"volume\": {\"size\": 1"), 400, "badRequest", "Malformed request body");
    expect_error(post(b"not json at all"), 400, "badRequest", "Malformed request body");
    expect_error(post(b""), 400, "badRequest", "Missing request body");
    expect_error(post(b"[1, 2]"), 400, "badRequest", "Invalid input");
    expect_error(post(br#"{"volume": {"size": 1, "colour": "red"}}"#), 400, "badRequest", "colour");
    expect_error(post(br#"{"volume": {"size": 1}, "extra": 1}"#), 400, "badRequest", "extra");
    expect_error(post(br#"{"volume": {"name": "x"}}"#), 400, "badRequest", "size");
    for size in ["-1", "0", "1.5", "\"abc\"", "true", "1e30", "99999999999", "-99999999999999999999"] {
        let b = format!(r#"{{"volume": {{"size": {size}}}}}"#);
        expect_error(post(b.as_bytes()), 400, "badRequest", "size");
    }
    // Over the per-volume limit but a valid integer: Cinder's 413.
    expect_error(post(br#"{"volume": {"size": 5000}}"#), 413, "overLimit", "larger than maximum");
    expect_error(post(br#"{"volume": {"size": 1, "volume_type": "nope"}}"#), 404, "itemNotFound", "nope");
    let bogus = "00000000-0000-0000-0000-000000000000";
    let b = format!(r#"{{"volume": {{"source_volid": "{bogus}"}}}}"#);
    expect_error(post(b.as_bytes()), 404, "itemNotFound", bogus);
    // Snapshots exist now: an unknown one is Cinder's 404, not a 400.
    expect_error(post(br#"{"volume": {"size": 1, "snapshot_id": "x"}}"#), 404, "itemNotFound", "Snapshot x");
    assert_eq!(srv.volume_count(PROJECT), 0, "a rejected request left a volume record");
    assert_eq!(files_in(&srv.data_dir), 0, "a rejected request left a backing file");

    // The real client shows our message and fails.
    let out = srv.cinder(&["create", "--source-volid", bogus, "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not be found"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(srv.volume_count(PROJECT), 0);
}

#[test]
fn another_projects_source_is_not_found_and_not_cloned() {
    let (srv, _d) = start();
    srv.create_type("LUKS", Some("luks"), &[]);
    let theirs = srv.create_volume(json!({"volume": {"size": 1, "volume_type": "LUKS"}}));
    let id = theirs["id"].as_str().unwrap();
    let b = json!({"volume": {"source_volid": id}}).to_string();
    expect_error(srv.http_as("intruder", "POST", "/v3/volumes", Some(b.as_bytes())), 404, "itemNotFound", id);
    expect_error(srv.http_as("intruder", "GET", &format!("/v3/volumes/{id}"), None), 404, "itemNotFound", id);
    expect_error(srv.http_as("intruder", "DELETE", &format!("/v3/volumes/{id}"), None), 404, "itemNotFound", id);
    expect_error(srv.http_as("intruder", "GET", &format!("/v3/volumes/{id}/encryption"), None), 404, "itemNotFound", id);
    // The project in the path must be the caller's.
    expect_error(srv.http_as("intruder", "GET", &format!("/v3/{PROJECT}/volumes"), None), 403, "forbidden", "does not match");
    assert_eq!(srv.volume_count("intruder"), 0);
    assert_eq!(srv.volume_count(PROJECT), 1);
    assert_eq!(files_in(&srv.data_dir), 1);
}

#[test]
fn deleting_a_volume_being_cloned_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Hold every clone for 20 s after its new key is recorded (the real
    // client below can take seconds to start on a loaded machine).
    let srv = Server::start(&dir.path().join("data"), &[("REKEY_STALL_AT", &format!("{}:20000", Point::recorded(Step::CloneData)))]);
    srv.create_type("LUKS", Some("luks2"), &[]);
    let src = srv.create_volume(json!({"volume": {"size": 1, "volume_type": "LUKS"}}));
    let src_id = src["id"].as_str().unwrap();
    let b = json!({"volume": {"source_volid": src_id, "name": "clone"}}).to_string();
    let (st, clone) = srv.http("POST", "/v3/volumes", Some(b.as_bytes()));
    assert_eq!(st, 202, "{clone}");
    let clone_id = clone["volume"]["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.volume(clone_id)["status"], "creating");
    expect_error(srv.http("DELETE", &format!("/v3/volumes/{src_id}"), None), 400, "badRequest", "clone in progress");
    expect_error(srv.http("DELETE", &format!("/v3/volumes/{clone_id}"), None), 400, "badRequest", "creating");
    // The real client reports the refusal too.
    let out = srv.openstack(&["volume", "delete", src_id]);
    assert!(!out.status.success(), "openstack volume delete of a source being cloned must fail");
    assert_eq!(srv.wait_settled(clone_id)["status"], "available");
    assert_eq!(srv.volume(src_id)["status"], "available");
    let (st, _) = srv.http("DELETE", &format!("/v3/volumes/{src_id}?cascade=False&force=False"), None);
    assert_eq!(st, 202, "once the clone is done the source can be deleted");
}

#[test]
fn types_and_encryption_types_refuse_bad_changes() {
    let (srv, _d) = start();
    let post = |path: &str, b: Value| srv.http("POST", path, Some(b.to_string().as_bytes()));
    expect_error(post("/v3/types", json!({"volume_type": {"name": "x", "extra_specs": {"rekey:mode": "sometimes"}}})), 400, "badRequest", "rekey:mode");
    expect_error(post("/v3/types", json!({"volume_type": {"description": "no name"}})), 400, "badRequest", "name");
    let id = srv.create_type("T", None, &[]);
    expect_error(post("/v3/types", json!({"volume_type": {"name": "T"}})), 409, "conflictingRequest", "exists");
    let enc = |p: Value| post(&format!("/v3/types/{id}/encryption"), json!({"encryption": p}));
    // Cinder takes any provider for a type; rekey refuses a volume of one it cannot format, and makes nothing.
    let (st, body) = enc(json!({"provider": "plain", "cipher": "aes-cbc-essiv:sha256", "key_size": 128}));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["encryption"]["provider"], "plain", "{body}");
    let before = srv.volume_count(PROJECT);
    expect_error(post("/v3/volumes", json!({"volume": {"size": 1, "volume_type": "T"}})), 400, "badRequest", "provider");
    assert_eq!(srv.volume_count(PROJECT), before, "a refused create left a volume");
    let (st, body) = srv.http("DELETE", &format!("/v3/types/{id}/encryption/x"), None);
    assert_eq!(st, 202, "{body}");
    expect_error(enc(json!({"provider": "luks", "cipher": "rot13"})), 400, "badRequest", "cipher");
    expect_error(enc(json!({"provider": "luks", "key_size": 100})), 400, "badRequest", "key_size");
    expect_error(enc(json!({"provider": "luks", "key_size": -256})), 400, "badRequest", "key_size");
    expect_error(enc(json!({"provider": "luks", "control_location": "middle"})), 400, "badRequest", "control_location");
    expect_error(enc(json!({"provider": "luks", "colour": 1})), 400, "badRequest", "colour");
    let (st, _) = enc(json!({"provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}));
    assert_eq!(st, 200);
    // An update answers with the fields it was given, as Cinder's does.
    let (st, body) = srv.http("PUT", &format!("/v3/types/{id}/encryption/x"), Some(json!({"encryption": {"key_size": 512}}).to_string().as_bytes()));
    assert_eq!((st, body), (200, json!({"encryption": {"key_size": 512}})));
    srv.create_volume(json!({"volume": {"size": 1, "volume_type": "T"}}));
    let put = srv.http("PUT", &format!("/v3/types/{id}/encryption/x"), Some(json!({"encryption": {"key_size": 512}}).to_string().as_bytes()));
    expect_error(put, 400, "badRequest", "in use");
    expect_error(srv.http("DELETE", &format!("/v3/types/{id}/encryption/x"), None), 400, "badRequest", "in use");
    expect_error(srv.http("DELETE", &format!("/v3/types/{id}"), None), 400, "badRequest", "volumes present");
    expect_error(srv.http("GET", "/v3/types/nope", None), 404, "itemNotFound", "nope");
}

#[test]
fn protocol_errors() {
    let (srv, _d) = start();
    expect_error(srv.http("GET", "/v3/snapshots/x/y/z", None), 404, "itemNotFound", "could not be found");
    expect_error(srv.http("PATCH", "/v3/volumes/x", None), 405, "badMethod", "not allowed");
    let h = [("X-Auth-Token", "u:p"), ("OpenStack-API-Version", "volume 3.99")];
    expect_error(http(srv.port, "GET", "/v3/volumes", &h, None).unwrap(), 406, "notAcceptable", "3.71");
    let h = [("X-Auth-Token", "u:p"), ("OpenStack-API-Version", "volume three")];
    expect_error(http(srv.port, "GET", "/v3/volumes", &h, None).unwrap(), 400, "badRequest", "invalid format");
    // noauth handshake: no identity at all → 204 with a fake admin token.
    let (st, _) = http(srv.port, "GET", "/v3/volumes", &[], None).unwrap();
    assert_eq!(st, 204);
    // Garbage of every kind never gets a 5xx.
    for body in [&b"\xff\xfe\x00"[..], b"{}", b"null", b"{\"volume\": null}", b"{\"volume\": []}", b"{\"volume\": {\"metadata\": 5}}"] {
        for path in ["/v3/volumes", "/v3/types"] {
            let (st, v) = srv.http("POST", path, Some(body));
            assert!((400..500).contains(&st), "POST {path} {body:?} → {st} {v}");
        }
    }
    assert_eq!(srv.volume_count(PROJECT), 0);
}
