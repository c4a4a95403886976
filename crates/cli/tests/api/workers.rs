//! `POST /workers/cleanup` (3.24) with the real `cinder work-cleanup`: a
//! node killed with its job half done (and a lease of ten minutes) has its
//! job taken up by a live node at once once an operator asks, instead of
//! when the lease runs out; Cinder's filters select which services, and bad
//! filters are Cinder's 400s.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use rekey_service::fault::{Point, Step};

use crate::harness::*;

fn post(srv: &Server, mv: &str, body: &str) -> (u16, Value) {
    let tok = format!("u:{PROJECT}");
    let mv = format!("volume {mv}");
    http(srv.port, "POST", "/v3/workers/cleanup", &[("X-Auth-Token", &tok), ("OpenStack-API-Version", &mv)], Some(body.as_bytes())).unwrap()
}

#[test]
fn work_cleanup_hands_a_dead_nodes_job_to_a_live_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lease = ["--lease-seconds", "600"];
    // node-a holds its job in the new-key step for a minute, then is killed.
    let stall = format!("{}:60000", Point::recorded(Step::CloneData));
    let mut a = Server::start_with(&data, &[&lease[..], &["--node-name", "node-a"]].concat(), &[("REKEY_STALL_AT", &stall)]);
    a.create_type("LUKS", Some("luks2"), &[]);
    let src = a.create_volume(json!({"volume": {"size": 1, "name": "src", "volume_type": "LUKS"}}));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let (st, v) = a.http("POST", "/v3/volumes", Some(json!({"volume": {"source_volid": src_id, "name": "clone"}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{v}");
    let clone = v["volume"]["id"].as_str().unwrap().to_owned();
    let t = Instant::now();
    while sql_value(&data, &format!("SELECT step FROM jobs WHERE target_id = '{clone}'")) != "add_keyslot" {
        assert!(t.elapsed() < Duration::from_secs(60), "the clone never reached add_keyslot");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill9();
    let b = Server::start_with(&data, &[&lease[..], &["--node-name", "node-b"]].concat(), &[]);
    // node-a's services are down once its heartbeat is a minute old; here
    // it is made so rather than waited for.
    sql_value(&data, "UPDATE services SET heartbeat_ms = 0 WHERE host = 'node-a'");
    assert_eq!(sql_value(&data, &format!("SELECT lease_owner FROM jobs WHERE target_id = '{clone}'")), "node-a");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(b.volume(&clone)["status"], "creating", "node-b took the job without a cleanup, within the lease");

    // Bad filters: Cinder's 400s, nothing released.
    for (body, why) in [
        (r#"{"binary": "cinder-backup"}"#, "binary"),
        (r#"{"resource_type": "Backup"}"#, "Resource type Backup not valid"),
        (r#"{"resource_id": "not-a-uuid"}"#, "resource_id"),
        (r#"{"is_up": "maybe"}"#, "is_up"),
        (r#"{"colour": "red"}"#, "colour"),
        (r#"{"resource_id": "0b0b0b0b-1111-4222-8333-444444444444"}"#, "no resource with UUID"),
    ] {
        let (st, e) = post(&b, "3.24", body);
        assert_eq!(st, 400, "{body}: {e}");
        assert!(e["badRequest"]["message"].as_str().unwrap_or("").contains(why), "{body}: {e}");
    }
    assert_eq!(post(&b, "3.23", "{}").0, 404, "before 3.24");
    // Up services only: node-a is not one, nothing is released.
    let (st, r) = post(&b, "3.24", r#"{"is_up": true, "host": "node-a"}"#);
    assert_eq!((st, r["cleaning"].clone()), (202, json!([])), "{r}");
    assert_eq!(sql_value(&data, &format!("SELECT lease_owner FROM jobs WHERE target_id = '{clone}'")), "node-a");

    let out = b.cinder(&["--os-volume-api-version", "3.24", "work-cleanup", "--host", "node-a"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Following services will be cleaned") && text.contains("node-a") && text.contains("cinder-scheduler"), "{text}");
    assert!(!text.contains("node-b"), "a live node was selected: {text}");
    let v = b.wait_settled(&clone);
    assert_eq!(v["status"], "available", "{v}");
    let key = v["encryption_key_id"].as_str().unwrap().to_owned();
    assert_ne!(key, src["encryption_key_id"].as_str().unwrap(), "the clone has its own key");
    assert!(cryptsetup_opens(&volume_path(&data, &clone), &passphrase(&data, &key)));
    let owners = sql_value(&data, &format!("SELECT DISTINCT node FROM step_log WHERE job_id IN (SELECT job_id FROM step_log WHERE node = 'node-a') ORDER BY node"));
    assert!(owners.contains("node-b"), "node-b did not finish node-a's job: {owners}");
}
