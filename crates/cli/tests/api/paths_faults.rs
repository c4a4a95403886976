//! Kill -9 (abort at a fault point) during backup, restore and transfer
//! accept, then restart: each ends completed, the volume opens with the key
//! its record names (and not the source's/donor's), the donor's key is
//! deleted. And bad input on the new paths: clear 4xx, nothing changed.

use std::time::Duration;

use serde_json::json;

use rekey_service::fault::{Point, Step};

use crate::harness::*;
use crate::paths::{check_own_key, cinder_as, encrypted_source, wait_backup, wait_volume, Env};

/// Aborts (as abruptly as kill -9) at `point`, restarts the same data dir.
fn crash_then_restart(e: &mut Env, point: &str, act: impl FnOnce(&Server)) {
    let data = e.srv.data_dir.clone();
    e.srv.kill9();
    let srv = Server::start(&data, &[("REKEY_CRASH_AT", point)]);
    act(&srv);
    let mut srv = srv;
    assert!(srv.wait_crash(Duration::from_secs(60)), "{point}: the service did not reach the crash point");
    e.srv = Server::start(&data, &[]);
}

#[test]
fn kill9_during_backup_and_restore_ends_complete() {
    // `backup_key`, `restore_key`, `accept_move`: the key copy is made but
    // not recorded when the process dies; the re-run step must reuse it.
    for point in [Point::done(Step::BackupKey), Point::recorded(Step::BackupKey), Point::done(Step::BackupData), Point::recorded(Step::BackupData)] {
        let point = point.to_string();
        let point = point.as_str();
        let mut e = Env::start();
        let (src_id, _key, src_pass) = encrypted_source(&e, "luks", None);
        let mut bid = String::new();
        crash_then_restart(&mut e, point, |srv| {
            let (st, b) = srv.http("POST", "/v3/backups", Some(json!({"backup": {"volume_id": src_id}}).to_string().as_bytes()));
            assert_eq!(st, 202, "{b}");
            bid = b["backup"]["id"].as_str().unwrap().to_owned();
        });
        let b = wait_backup(&e.srv, &bid);
        assert_eq!(b["status"], "available", "{point}: {b}");
        assert_eq!(wait_volume(&e.srv, PROJECT, &src_id)["status"], "available");
        // The backup restores and rekeys.
        let (st, r) = e.srv.http("POST", &format!("/v3/backups/{bid}/restore"), Some(json!({"restore": {}}).to_string().as_bytes()));
        assert_eq!(st, 202, "{r}");
        let v = wait_volume(&e.srv, PROJECT, r["restore"]["volume_id"].as_str().unwrap());
        assert_eq!(v["status"], "available", "{point}: {v}");
        check_own_key(e.data(), &v, &[("source", &src_pass)], &pattern(7));
        assert_no_orphan_keys(e.data(), point);
    }
    for point in [Point::done(Step::RestoreKey), Point::recorded(Step::RestoreKey), Point::done(Step::RestoreData), Point::recorded(Step::RestoreData), Point::done(Step::AddKeyslot), Point::recorded(Step::Persist)] {
        let point = point.to_string();
        let point = point.as_str();
        let mut e = Env::start();
        let (src_id, _key, src_pass) = encrypted_source(&e, "luks", None);
        let (st, b) = e.srv.http("POST", "/v3/backups", Some(json!({"backup": {"volume_id": src_id}}).to_string().as_bytes()));
        assert_eq!(st, 202, "{b}");
        let bid = b["backup"]["id"].as_str().unwrap().to_owned();
        assert_eq!(wait_backup(&e.srv, &bid)["status"], "available");
        let mut vid = String::new();
        crash_then_restart(&mut e, point, |srv| {
            let (st, r) = srv.http("POST", &format!("/v3/backups/{bid}/restore"), Some(json!({"restore": {"name": "r"}}).to_string().as_bytes()));
            assert_eq!(st, 202, "{r}");
            vid = r["restore"]["volume_id"].as_str().unwrap().to_owned();
        });
        let v = wait_volume(&e.srv, PROJECT, &vid);
        assert_eq!(v["status"], "available", "{point}: {v}");
        check_own_key(e.data(), &v, &[("source", &src_pass)], &pattern(7));
        assert_eq!(wait_backup(&e.srv, &bid)["status"], "available");
        assert_no_orphan_keys(e.data(), point);
    }
}

#[test]
fn kill9_during_transfer_accept_ends_complete() {
    for point in [Point::done(Step::AcceptMove), Point::recorded(Step::AcceptMove), Point::done(Step::NewKey), Point::recorded(Step::NewKey), Point::done(Step::AddKeyslot), Point::done(Step::Persist), Point::done(Step::DestroyOldKeyslot)] {
        let point = point.to_string();
        let point = point.as_str();
        let mut e = Env::start();
        let (src_id, src_key, src_pass) = encrypted_source(&e, "luks2", None);
        let (st, t) = e.srv.http_as(PROJECT, "POST", "/v3/volume-transfers", Some(json!({"transfer": {"volume_id": src_id}}).to_string().as_bytes()));
        // 3.64 is below 3.70: an encrypted volume's transfer is refused there.
        assert_eq!(st, 400, "{t}");
        let out = cinder_as(&e.srv, PROJECT, "3.70", &["transfer-create", &src_id]);
        let (tid, auth) = (table_field(&out, "id"), table_field(&out, "auth_key"));
        crash_then_restart(&mut e, point, |srv| {
            let out = cinder_as(srv, "bob", "3.70", &["transfer-accept", &tid, &auth]);
            assert!(out.status.success(), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        });
        let v = wait_volume(&e.srv, "bob", &src_id);
        assert_eq!(v["status"], "available", "{point}: {v}");
        check_own_key(e.data(), &v, &[("donor", &src_pass)], &pattern(7));
        let start = std::time::Instant::now();
        while key_exists(e.data(), &src_key) {
            assert!(start.elapsed() < Duration::from_secs(30), "{point}: donor key not deleted");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_no_orphan_keys(e.data(), point);
    }
}

/// Kill -9 in each state of a moved snapshot's rekey (its clone, its
/// scratch volume's tail, the replacement): the accept ends complete and the
/// snapshot opens with its own key only.
#[test]
fn kill9_while_rekeying_a_transferred_snapshot_ends_complete() {
    // The volume's own tail runs first and passes `destroy_old_keyslot`
    // once: `.recorded` of a tail state there is the volume's; the points
    // past the volume's tail are the snapshot's.
    for point in [
        Point::done(Step::SnapshotClone),
        Point::recorded(Step::SnapshotClone),
        Point::done(Step::SnapshotReplace),
    ] {
        let point = point.to_string();
        let point = point.as_str();
        let mut e = Env::start();
        let (vol_id, snap_id, src_pass, snap_key, snap_pass, tid, auth) = crate::paths::offer_with_snapshot(&e);
        crash_then_restart(&mut e, point, |srv| {
            let out = cinder_as(srv, "bob", "3.70", &["transfer-accept", &tid, &auth]);
            assert!(out.status.success(), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        });
        let v = wait_volume(&e.srv, "bob", &vol_id);
        assert_eq!(v["status"], "available", "{point}: {v}");
        check_own_key(e.data(), &v, &[("donor", &src_pass)], &pattern(7));
        let donor = [("donor's volume", src_pass.as_slice()), ("donor's snapshot", snap_pass.as_slice())];
        crate::paths::check_transferred_snapshot(&e, &vol_id, &snap_id, &donor, &snap_key, point);
    }
}

#[test]
fn bad_input_on_snapshots_backups_and_transfers() {
    let e = Env::start();
    let (src_id, src_key, _p) = encrypted_source(&e, "luks", None);
    let (st, b) = e.srv.http("POST", "/v3/backups", Some(json!({"backup": {"volume_id": src_id}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{b}");
    let bid = b["backup"]["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_backup(&e.srv, &bid)["status"], "available");
    let small = e.srv.create_volume(json!({"volume": {"size": 1, "name": "small", "volume_type": "LUKS"}}));
    let small_id = small["id"].as_str().unwrap().to_owned();
    let unknown = "00000000-0000-0000-0000-000000000000";
    let post = |proj: &str, path: &str, body: serde_json::Value| e.srv.http_as(proj, "POST", path, Some(body.to_string().as_bytes()));

    let cases: Vec<(&str, (u16, serde_json::Value), u16)> = vec![
        ("unknown snapshot id", post(PROJECT, "/v3/volumes", json!({"volume": {"snapshot_id": unknown}})), 404),
        ("unknown backup id", e.srv.http("GET", &format!("/v3/backups/{unknown}"), None), 404),
        ("unknown backup restore", post(PROJECT, &format!("/v3/backups/{unknown}/restore"), json!({"restore": {}})), 404),
        ("foreign backup restore", post("eve", &format!("/v3/backups/{bid}/restore"), json!({"restore": {}})), 404),
        ("foreign backup_id create", e.srv.http_as("eve", "POST", "/v3/volumes", Some(json!({"volume": {"backup_id": bid}}).to_string().as_bytes())), 400),
        ("foreign volume snapshot", post("eve", "/v3/snapshots", json!({"snapshot": {"volume_id": src_id}})), 404),
        ("foreign volume backup", post("eve", "/v3/backups", json!({"backup": {"volume_id": src_id}})), 404),
        ("unknown field", post(PROJECT, "/v3/snapshots", json!({"snapshot": {"volume_id": src_id, "colour": 1}})), 400),
        ("malformed", e.srv.http("POST", "/v3/backups", Some(b"{")), 400),
        ("incremental without a full", post(PROJECT, "/v3/backups", json!({"backup": {"volume_id": small_id, "incremental": true}})), 400),
        ("unknown transfer accept", post("bob", &format!("/v3/volume-transfers/{unknown}/accept"), json!({"accept": {"auth_key": "x"}})), 404),
    ];
    for (what, (st, body), want) in cases {
        if what == "foreign backup_id create" {
            // 3.64 ≥ 3.47: the backup is simply not found for eve.
            assert_eq!(st, 404, "{what}: {body}");
            continue;
        }
        assert_eq!(st, want, "{what}: {body}");
        assert!(body.as_object().is_some_and(|o| o.len() == 1), "{what}: Cinder error body: {body}");
    }
    // backup_id below 3.47 is refused.
    let (st, body) = http(e.srv.port, "POST", "/v3/volumes", &[("X-Auth-Token", "u:notused"), ("OpenStack-API-Version", "volume 3.40")], Some(json!({"volume": {"backup_id": bid}}).to_string().as_bytes())).unwrap();
    assert_eq!(st, 400, "{body}");

    // Restoring onto an in-use (here: awaiting-transfer) volume or a smaller one.
    let two = e.srv.create_volume(json!({"volume": {"size": 2, "name": "two", "volume_type": "LUKS"}}));
    let (st, b2) = post(PROJECT, "/v3/backups", json!({"backup": {"volume_id": two["id"]}}));
    assert_eq!(st, 202);
    let b2 = wait_backup(&e.srv, b2["backup"]["id"].as_str().unwrap());
    let (st, body) = post(PROJECT, &format!("/v3/backups/{}/restore", b2["id"].as_str().unwrap()), json!({"restore": {"volume_id": small_id}}));
    assert_eq!(st, 400, "restore onto a smaller volume: {body}");
    let out = cinder_as(&e.srv, PROJECT, "3.70", &["transfer-create", &small_id]);
    let tid = table_field(&out, "id");
    let (st, body) = post(PROJECT, &format!("/v3/backups/{bid}/restore"), json!({"restore": {"volume_id": small_id}}));
    assert_eq!(st, 400, "restore onto a volume awaiting transfer: {body}");
    let before = e.srv.volume(&small_id);
    assert_eq!(before["status"], "awaiting-transfer");
    // Deleting the transfer makes it available again, unchanged.
    let (st, _) = e.srv.http("DELETE", &format!("/v3/volume-transfers/{tid}"), None);
    assert_eq!(st, 202);
    let after = e.srv.volume(&small_id);
    assert_eq!((after["status"].as_str(), after["encryption_key_id"].clone()), (Some("available"), small["encryption_key_id"].clone()));
    // Nothing changed for the source.
    assert_eq!(e.srv.volume(&src_id)["encryption_key_id"], src_key.as_str());
    assert_eq!(e.srv.volume_count("eve"), 0);
}
