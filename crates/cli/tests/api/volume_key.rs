//! `rekey:mode=volume-key`: the clone is re-encrypted under a fresh volume
//! key, so it shares nothing with its source — not even the volume key.

use serde_json::{json, Value};

use crate::flows::{check_rekeyed, encrypted_flow};
use crate::harness::*;
use crate::paths::{backup, cinder_as, json_ok, os, wait_backup, wait_snapshot};

#[test]
fn volume_key_mode_clone_shares_no_volume_key_with_its_source() {
    let (f, src_id, clone_id) = encrypted_flow("luks2", Some("volume-key"), false);
    check_rekeyed(&f, &src_id, &clone_id, "2");
    let (src, clone) = (f.srv.volume(&src_id), f.srv.volume(&clone_id));
    let src_vk = volume_key_hex(&volume_path(f.data(), &src_id), &passphrase(f.data(), src["encryption_key_id"].as_str().unwrap()));
    let clone_vk =
        volume_key_hex(&volume_path(f.data(), &clone_id), &passphrase(f.data(), clone["encryption_key_id"].as_str().unwrap()));
    assert_eq!(src_vk.len(), 64);
    assert_ne!(src_vk, clone_vk, "volume-key mode must give the clone its own volume key");
}

/// Volume-key mode re-encrypts, which the engine does for LUKS2 only: on a
/// LUKS1 type every path that would end in that rekey — clone, from
/// snapshot, restore to a new or an existing volume, transfer accept — is
/// refused with a 400 before anything is written.
#[test]
fn volume_key_mode_on_luks1_is_refused_with_a_400_on_every_path() {
    venv();
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.create_type("V1", Some("luks"), &[("rekey:mode", "volume-key")]);
    let made = |name: &str| {
        let v = srv.create_volume(json!({"volume": {"size": 1, "volume_type": "V1", "name": name}}));
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(srv.wait_settled(&id)["status"], "available");
        id
    };
    let (src_id, other_id) = (made("src"), made("other"));
    let post = |path: &str, body: Value| srv.http("POST", path, Some(body.to_string().as_bytes()));
    let refused = |(st, body): (u16, Value), what: &str| {
        assert_eq!(st, 400, "{what}: {body}");
        let msg = body["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("LUKS2") && msg.contains("luks2"), "{what}: {body}");
    };
    let before = srv.volume_count(PROJECT);

    refused(post("/v3/volumes", json!({"volume": {"size": 1, "source_volid": src_id}})), "clone");

    let (st, s) = post("/v3/snapshots", json!({"snapshot": {"volume_id": src_id, "name": "s"}}));
    assert_eq!(st, 202, "{s}");
    let sid = s["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_snapshot(&srv, &sid)["status"], "available");
    refused(post("/v3/volumes", json!({"volume": {"snapshot_id": sid}})), "from snapshot");

    let b = backup(&srv, &["--name", "b", "src"]);
    let restore = format!("/v3/backups/{}/restore", b["id"].as_str().unwrap());
    refused(post(&restore, json!({"restore": {"name": "new"}})), "restore to a new volume");
    refused(post(&restore, json!({"restore": {"volume_id": other_id}})), "restore to an existing volume");
    assert_eq!(wait_backup(&srv, b["id"].as_str().unwrap())["status"], "available");
    assert_eq!(srv.volume(&other_id)["status"], "available");

    let t = json_ok(&os(&srv, "3.70", &["volume", "transfer", "request", "create", "src", "-f", "json"]));
    let (tid, auth) = (t["id"].as_str().unwrap(), t["auth_key"].as_str().unwrap());
    let out = cinder_as(&srv, "bob", "3.70", &["transfer-accept", tid, auth]);
    assert!(!out.status.success(), "accept must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("LUKS2"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(srv.volume(&src_id)["status"], "awaiting-transfer", "the transfer is not consumed");
    assert_eq!(srv.volume_count("bob"), 0);

    assert_eq!(srv.volume_count(PROJECT), before, "nothing half-created");
    assert_no_orphan_keys(&dir.path().join("data"), "after the refusals");
}
