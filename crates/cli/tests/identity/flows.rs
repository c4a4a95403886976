//! The identity-independent flows of the API suite (clone, snapshot, volume
//! from snapshot, backup and restore, transfer to another project) under
//! Keystone: every volume made from another gets a key of its own, in the
//! project that owns it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{keystone_url, token, Server, Setup};

fn wait(srv: &Server, tok: &str, path: &str, field: &str) -> Value {
    let start = Instant::now();
    loop {
        // A transferred volume is the recipient's (404 before) once its rekey is done.
        let a = srv.call(tok, "GET", path, None);
        let st = a.body[field]["status"].as_str().unwrap_or("").to_owned();
        if a.status == 200 && !matches!(st.as_str(), "creating" | "deleting" | "maintenance" | "restoring" | "restoring-backup") {
            return a.body[field].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{path} stuck: {} {}", a.status, a.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(srv: &Server, tok: &str, path: &str, body: Value, mv: &str) -> Value {
    let a = crate::harness::request(
        "POST",
        &format!("{}{path}", srv.base()),
        &[("X-Auth-Token", tok), ("OpenStack-API-Version", mv)],
        Some(&body),
    )
    .unwrap();
    assert_eq!(a.status, 202, "POST {path}: {}", a.body);
    a.body
}

#[test]
fn clone_snapshot_backup_restore_and_transfer_under_keystone_each_get_their_own_key() {
    let ks = keystone_url();
    let srv = Server::start(Setup::new(&ks));
    let (admin, pa) = token("admin-a", "rekey-a");
    let (member, _) = token("member-a", "rekey-a");
    let (other, pb) = token("member-b", "rekey-b");
    let ty = srv.encrypted_type(&admin, &pa, "luks-flows");
    let mv = "volume 3.70";
    let vol = |id: &str, tok: &str, p: &str| wait(&srv, tok, &format!("/v3/{p}/volumes/{id}"), "volume");
    let src = srv.volume(&member, &pa, json!({"volume": {"size": 1, "name": "src", "volume_type": ty}}));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let mut keys = vec![src["encryption_key_id"].as_str().unwrap().to_owned()];
    let mut record = |v: &Value| {
        assert_eq!(v["status"], "available", "{v}");
        let k = v["encryption_key_id"].as_str().expect("encrypted").to_owned();
        assert!(!keys.contains(&k), "key {k} reused: {keys:?}");
        keys.push(k);
    };

    let c = post(&srv, &member, &format!("/v3/{pa}/volumes"), json!({"volume": {"name": "clone", "source_volid": src_id}}), mv);
    record(&vol(c["volume"]["id"].as_str().unwrap(), &member, &pa));

    let s = post(&srv, &member, &format!("/v3/{pa}/snapshots"), json!({"snapshot": {"volume_id": src_id, "name": "s"}}), mv);
    let sid = s["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(wait(&srv, &member, &format!("/v3/{pa}/snapshots/{sid}"), "snapshot")["status"], "available");
    let fs = post(&srv, &member, &format!("/v3/{pa}/volumes"), json!({"volume": {"name": "from-snap", "snapshot_id": sid}}), mv);
    record(&vol(fs["volume"]["id"].as_str().unwrap(), &member, &pa));

    let b = post(&srv, &member, &format!("/v3/{pa}/backups"), json!({"backup": {"volume_id": src_id, "name": "b"}}), mv);
    let bid = b["backup"]["id"].as_str().unwrap().to_owned();
    assert_eq!(wait(&srv, &member, &format!("/v3/{pa}/backups/{bid}"), "backup")["status"], "available");
    let r = post(&srv, &member, &format!("/v3/{pa}/backups/{bid}/restore"), json!({"restore": {"name": "restored"}}), mv);
    record(&vol(r["restore"]["volume_id"].as_str().unwrap(), &member, &pa));

    // Transfer the clone to project B: B's member accepts, and it is rekeyed in B.
    let t = post(&srv, &member, &format!("/v3/{pa}/volume-transfers"), json!({"transfer": {"volume_id": c["volume"]["id"], "name": "gift"}}), mv);
    let (tid, auth) = (t["transfer"]["id"].as_str().unwrap(), t["transfer"]["auth_key"].as_str().unwrap());
    post(&srv, &other, &format!("/v3/{pb}/volume-transfers/{tid}/accept"), json!({"accept": {"auth_key": auth}}), mv);
    let moved = vol(c["volume"]["id"].as_str().unwrap(), &other, &pb);
    assert_eq!(moved["status"], "available", "{moved}");
    assert!(!keys[..].contains(&moved["encryption_key_id"].as_str().unwrap().to_owned()), "transfer kept a key: {moved}");
    assert_eq!(srv.call(&member, "GET", &format!("/v3/{pa}/volumes/{}", c["volume"]["id"].as_str().unwrap()), None).status, 404);
    srv.stop_and_check_log(&[&admin, &member, &other]);
}
