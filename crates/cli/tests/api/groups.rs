//! Groups (3.13) and group snapshots (3.14) with the real `cinder` CLI:
//! a group of encrypted volumes, a group snapshot of it, and groups made
//! from each — every volume of a copied group with its own key, opening
//! with it (cryptsetup) and not with its source's, holding the source's
//! data. Cinder's refusals leave everything as it was.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

fn cinder_at(srv: &Server, mv: &str, args: &[&str]) -> Output {
    let mut all = vec!["--os-volume-api-version", mv];
    all.extend_from_slice(args);
    srv.cinder(&all)
}

fn cinder_ok(srv: &Server, mv: &str, args: &[&str]) -> Output {
    let o = cinder_at(srv, mv, args);
    assert!(o.status.success(), "cinder {args:?}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

/// `cinder ARGS` fails and says `why`.
fn cinder_refused(srv: &Server, mv: &str, args: &[&str], why: &str) {
    let o = cinder_at(srv, mv, args);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "cinder {args:?} succeeded: {text}");
    assert!(text.contains(why), "cinder {args:?}: wanted {why:?} in: {text}");
}

fn get(srv: &Server, mv: &str, path: &str) -> (u16, Value) {
    let tok = format!("u:{PROJECT}");
    let mv = format!("volume {mv}");
    http(srv.port, "GET", path, &[("X-Auth-Token", &tok), ("OpenStack-API-Version", &mv)], None).unwrap()
}

fn send(srv: &Server, mv: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let tok = format!("u:{PROJECT}");
    let mv = format!("volume {mv}");
    http(srv.port, method, path, &[("X-Auth-Token", &tok), ("OpenStack-API-Version", &mv)], Some(body.to_string().as_bytes())).unwrap()
}

/// Polls `path` until `what.status` is none of `busy`; the record.
fn wait(srv: &Server, path: &str, what: &str, busy: &[&str]) -> Value {
    let t = Instant::now();
    loop {
        let (st, v) = get(srv, "3.64", path);
        assert_eq!(st, 200, "{path}: {v}");
        if !busy.contains(&v[what]["status"].as_str().unwrap_or("")) {
            return v[what].clone();
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{path} still {}", v[what]["status"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gone(srv: &Server, path: &str) {
    let t = Instant::now();
    while get(srv, "3.64", path).0 != 404 {
        assert!(t.elapsed() < Duration::from_secs(120), "{path} not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The volumes of group `g` (3.25 `list_volume`).
fn group_volumes(srv: &Server, g: &str) -> Vec<String> {
    let (st, v) = get(srv, "3.25", &format!("/v3/groups/{g}?list_volume=True"));
    assert_eq!(st, 200, "{v}");
    let mut ids: Vec<String> = v["group"]["volumes"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// Every volume of copied group `g` has its own key, which opens it (and
/// `source_pass` does not), and holds `data`.
fn assert_own_keys(srv: &Server, dir: &std::path::Path, g: &str, source_keys: &[String], source_pass: &[u8], data: &[u8]) -> Vec<String> {
    let ids = group_volumes(srv, g);
    assert_eq!(ids.len(), 1, "group {g}: {ids:?}");
    let mut keys = Vec::new();
    for id in &ids {
        let v = srv.wait_settled(id);
        assert_eq!(v["status"], "available", "{v}");
        assert_eq!(v["group_id"], g, "{v}");
        let key = v["encryption_key_id"].as_str().unwrap().to_owned();
        assert!(!source_keys.contains(&key), "volume {id} of group {g} shares a key with its source: {key}");
        let path = volume_path(dir, id);
        let pass = passphrase(dir, &key);
        assert!(cryptsetup_opens(&path, &pass), "cryptsetup does not open {id} with its own key");
        assert!(!cryptsetup_opens(&path, source_pass), "{id} still opens with its source's key");
        assert_eq!(read_plaintext(&path, &pass, data.len()), vec![data.to_vec(); OFFSETS.len()], "{id}: not its source's data");
        keys.push(key);
    }
    keys
}

#[test]
fn groups_and_group_snapshots_with_the_cinder_cli_copy_each_volume_with_its_own_key() {
    require_cryptsetup();
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let luks = srv.create_type("LUKS", Some("luks2"), &[]);
    srv.create_type("plain", None, &[]);
    cinder_ok(&srv, "3.11", &["group-type-create", "gt"]);
    let (_, types) = get(&srv, "3.11", "/v3/group_types");
    let gtype = types["group_types"][0]["id"].as_str().unwrap().to_owned();

    // A group of one encrypted volume, with data.
    let g1 = table_field(&cinder_ok(&srv, "3.13", &["group-create", &gtype, "LUKS", "--name", "g1"]), "id");
    let g = wait(&srv, &format!("/v3/groups/{g1}"), "group", &["creating"]);
    assert_eq!((g["status"].as_str(), g["volume_types"].clone()), (Some("available"), json!([luks])), "{g}");
    let v1 = table_field(&cinder_ok(&srv, "3.13", &["create", "--group-id", &g1, "--volume-type", "LUKS", "--name", "v1", "1"]), "id");
    let v = srv.wait_settled(&v1);
    assert_eq!((v["status"].as_str(), v["group_id"].as_str()), (Some("available"), Some(g1.as_str())), "{v}");
    let v1_key = v["encryption_key_id"].as_str().unwrap().to_owned();
    let v1_pass = passphrase(dir.path(), &v1_key);
    let data = pattern(7);
    write_plaintext(&volume_path(dir.path(), &v1), &v1_pass, &data);
    assert_eq!(group_volumes(&srv, &g1), vec![v1.clone()]);

    // Refused, and nothing changes: a type the group does not take, a volume
    // of a group deleted alone, a group with volumes deleted without them.
    let (st, e) = send(&srv, "3.13", "POST", "/v3/volumes", json!({"volume": {"size": 1, "group_id": g1, "volume_type": "plain"}}));
    assert_eq!(st, 400, "{e}");
    assert!(e["badRequest"]["message"].as_str().unwrap().contains("requested type must be supported by this group"), "{e}");
    let (st, e) = send(&srv, "3.13", "POST", "/v3/volumes", json!({"volume": {"size": 1, "group_id": "0b0b0b0b-1111-4222-8333-444444444444", "volume_type": "LUKS"}}));
    assert_eq!(st, 404, "{e}");
    let (st, e) = srv.http("DELETE", &format!("/v3/volumes/{v1}"), None);
    assert_eq!(st, 400, "{e}");
    assert!(e["badRequest"]["message"].as_str().unwrap().contains("belong to a group"), "{e}");
    cinder_refused(&srv, "3.13", &["group-delete", &g1], "still contains volumes");
    cinder_refused(&srv, "3.13", &["retype", &v1, "plain"], "is in group");
    assert_eq!(srv.volume(&v1)["status"], "available");
    let (st, e) = get(&srv, "3.12", "/v3/groups");
    assert_eq!(st, 404, "groups before 3.13: {e}");

    // Out and back in (cinder group-update), as tempest does.
    let plain_vol = srv.create_volume(json!({"volume": {"size": 1, "volume_type": "plain", "name": "p"}}));
    let pv = plain_vol["id"].as_str().unwrap().to_owned();
    cinder_refused(&srv, "3.13", &["group-update", &g1, "--add-volumes", &pv], "is not supported by the group");
    cinder_refused(&srv, "3.13", &["group-update", &g1, "--remove-volumes", &pv], "it is not in the group");
    cinder_ok(&srv, "3.13", &["group-update", &g1, "--remove-volumes", &v1, "--name", "first"]);
    assert!(group_volumes(&srv, &g1).is_empty());
    assert_eq!(srv.volume(&v1)["group_id"], Value::Null);
    cinder_ok(&srv, "3.13", &["group-update", &g1, "--add-volumes", &v1]);
    assert_eq!(group_volumes(&srv, &g1), vec![v1.clone()]);
    let (_, g) = get(&srv, "3.13", &format!("/v3/groups/{g1}"));
    assert_eq!(g["group"]["name"], "first", "{g}");

    // A group snapshot: one snapshot of v1, with its own key.
    let gs = table_field(&cinder_ok(&srv, "3.14", &["group-snapshot-create", &g1, "--name", "gs1"]), "id");
    let s = wait(&srv, &format!("/v3/group_snapshots/{gs}"), "group_snapshot", &["creating"]);
    assert_eq!((s["status"].as_str(), s["group_id"].as_str(), s["group_type_id"].as_str()), (Some("available"), Some(g1.as_str()), Some(gtype.as_str())), "{s}");
    let (_, snaps) = get(&srv, "3.14", "/v3/snapshots/detail");
    let members: Vec<&Value> = snaps["snapshots"].as_array().unwrap().iter().filter(|s| s["group_snapshot_id"] == gs.as_str()).collect();
    assert_eq!(members.len(), 1, "{snaps}");
    assert_eq!((members[0]["volume_id"].as_str(), members[0]["status"].as_str()), (Some(v1.as_str()), Some("available")));
    let snap_id = members[0]["id"].as_str().unwrap().to_owned();
    let (st, e) = srv.http("DELETE", &format!("/v3/snapshots/{snap_id}"), None);
    assert_eq!(st, 400, "a snapshot of a group snapshot deleted alone: {e}");
    cinder_refused(&srv, "3.13", &["group-delete", "--delete-volumes", &g1], "Group has existing snapshots");

    // Groups from the group snapshot and from the group: fresh keys, same data.
    let g2 = table_field(&cinder_ok(&srv, "3.14", &["group-create-from-src", "--group-snapshot", &gs, "--name", "g2"]), "id");
    let g = wait(&srv, &format!("/v3/groups/{g2}"), "group", &["creating"]);
    assert_eq!((g["status"].as_str(), g["group_snapshot_id"].as_str()), (Some("available"), Some(gs.as_str())), "{g}");
    let g2_keys = assert_own_keys(&srv, dir.path(), &g2, &[v1_key.clone()], &v1_pass, &data);
    let g3 = table_field(&cinder_ok(&srv, "3.14", &["group-create-from-src", "--source-group", &g1, "--name", "g3"]), "id");
    let g = wait(&srv, &format!("/v3/groups/{g3}"), "group", &["creating"]);
    assert_eq!((g["status"].as_str(), g["source_group_id"].as_str()), (Some("available"), Some(g1.as_str())), "{g}");
    let g3_keys = assert_own_keys(&srv, dir.path(), &g3, &[v1_key.clone(), g2_keys[0].clone()], &v1_pass, &data);
    assert_ne!(g2_keys, g3_keys);
    // The copies' keys are not their sources' keys in the key manager either.
    let audit = audit_json(dir.path());
    assert_eq!(audit["shared_key_ids"], json!([]), "{audit}");
    assert_eq!(audit["shared_passphrases"], json!([]), "{audit}");

    // Admin resets (3.19, 3.20) are what tempest waits for.
    cinder_ok(&srv, "3.20", &["reset-state", "--type", "group", &g3, "--state", "error"]);
    assert_eq!(wait(&srv, &format!("/v3/groups/{g3}"), "group", &[])["status"], "error");
    cinder_ok(&srv, "3.20", &["reset-state", "--type", "group", &g3, "--state", "available"]);
    let (st, e) = send(&srv, "3.20", "POST", &format!("/v3/groups/{g3}/action"), json!({"reset_status": {"status": "sideways"}}));
    assert_eq!(st, 400, "{e}");
    cinder_ok(&srv, "3.19", &["reset-state", "--type", "group-snapshot", &gs, "--state", "creating"]);
    assert_eq!(wait(&srv, &format!("/v3/group_snapshots/{gs}"), "group_snapshot", &[])["status"], "creating", "a reset status holds");
    cinder_ok(&srv, "3.19", &["reset-state", "--type", "group-snapshot", &gs, "--state", "available"]);

    // Everything goes, and no key is left behind.
    cinder_ok(&srv, "3.14", &["group-snapshot-delete", &gs]);
    gone(&srv, &format!("/v3/group_snapshots/{gs}"));
    gone(&srv, &format!("/v3/snapshots/{snap_id}"));
    for g in [&g1, &g2, &g3] {
        cinder_ok(&srv, "3.13", &["group-delete", "--delete-volumes", g]);
    }
    for g in [&g1, &g2, &g3] {
        gone(&srv, &format!("/v3/groups/{g}"));
    }
    gone(&srv, &format!("/v3/volumes/{v1}"));
    let (_, q) = get(&srv, "3.64", &format!("/v3/os-quota-sets/{PROJECT}?usage=True"));
    assert_eq!(q["quota_set"]["groups"]["in_use"], 0, "{q}");
    let (st, _) = srv.http("DELETE", &format!("/v3/volumes/{pv}"), None);
    assert_eq!(st, 202);
    gone(&srv, &format!("/v3/volumes/{pv}"));
    let t = Instant::now();
    loop {
        let a = audit_json(dir.path());
        if a["unreferenced_keys"] == json!([]) && a["volumes"] == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "keys left: {a}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kill -9` while a group is being made from another (its member clone
/// mid-rekey) and while groups are being deleted with their volumes: after
/// the restart the jobs go on, the new group settles `available` with a
/// member that has its own key, and the deleted groups are gone with their
/// volumes and quota.
#[test]
fn groups_made_or_deleted_across_a_kill9_settle_after_the_restart() {
    use rekey_service::fault::{Point, Step};
    require_cryptsetup();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stall_rekey = format!("{}:60000", Point::recorded(Step::CloneData));
    let mut srv = Server::start(&data, &[("REKEY_STALL_AT", &stall_rekey)]);
    srv.create_type("LUKS", Some("luks2"), &[]);
    let (st, t) = send(&srv, "3.11", "POST", "/v3/group_types", json!({"group_type": {"name": "gt"}}));
    assert_eq!(st, 202, "{t}");
    let (st, g) = send(&srv, "3.13", "POST", "/v3/groups", json!({"group": {"name": "g1", "group_type": "gt", "volume_types": ["LUKS"]}}));
    assert_eq!(st, 202, "{g}");
    let g1 = g["group"]["id"].as_str().unwrap().to_owned();
    let (st, v) = send(&srv, "3.13", "POST", "/v3/volumes", json!({"volume": {"size": 1, "group_id": g1, "volume_type": "LUKS"}}));
    assert_eq!(st, 202, "{v}");
    let v1 = v["volume"]["id"].as_str().unwrap().to_owned();
    let v1_key = srv.wait_settled(&v1)["encryption_key_id"].as_str().unwrap().to_owned();

    let (st, g) = send(&srv, "3.14", "POST", "/v3/groups/action", json!({"create-from-src": {"source_group_id": g1, "name": "g2"}}));
    assert_eq!(st, 202, "{g}");
    let g2 = g["group"]["id"].as_str().unwrap().to_owned();
    let t = Instant::now();
    while sql_value(&data, "SELECT COUNT(*) FROM jobs WHERE step = 'add_keyslot'") != "1" {
        assert!(t.elapsed() < Duration::from_secs(60), "the member clone never reached add_keyslot");
        std::thread::sleep(Duration::from_millis(50));
    }
    srv.kill9();
    let mut srv = Server::start(&data, &[]);
    let g = wait(&srv, &format!("/v3/groups/{g2}"), "group", &["creating"]);
    assert_eq!(g["status"], "available", "{g}");
    let members = group_volumes(&srv, &g2);
    assert_eq!(members.len(), 1);
    let m = srv.wait_settled(&members[0]);
    let key = m["encryption_key_id"].as_str().unwrap().to_owned();
    assert_ne!(key, v1_key, "the member has its own key");
    assert!(cryptsetup_opens(&volume_path(&data, &members[0]), &passphrase(&data, &key)));

    // A delete of a group with its volumes, killed with the volume's data
    // gone but its record not yet (the stall holds SQLite's one writer, so
    // nothing else is written meanwhile; reads go on).
    srv.kill9();
    let stall_delete = format!("{}:60000", Point::done(Step::DeleteData));
    let mut srv = Server::start(&data, &[("REKEY_STALL_AT", &stall_delete)]);
    let (st, e) = send(&srv, "3.13", "POST", &format!("/v3/groups/{g2}/action"), json!({"delete": {"delete-volumes": true}}));
    assert_eq!(st, 202, "{e}");
    let t = Instant::now();
    while sql_value(&data, "SELECT COUNT(*) FROM step_log WHERE step = 'delete_data'") == "0" {
        assert!(t.elapsed() < Duration::from_secs(60), "the member's delete never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, v) = get(&srv, "3.13", &format!("/v3/groups/{g2}"));
    assert_eq!(v["group"]["status"], "deleting", "{v}");
    srv.kill9();
    let srv = Server::start(&data, &[]);
    gone(&srv, &format!("/v3/groups/{g2}"));
    let (st, e) = send(&srv, "3.13", "POST", &format!("/v3/groups/{g1}/action"), json!({"delete": {"delete-volumes": true}}));
    assert_eq!(st, 202, "{e}");
    gone(&srv, &format!("/v3/groups/{g1}"));
    gone(&srv, &format!("/v3/volumes/{v1}"));
    gone(&srv, &format!("/v3/volumes/{}", members[0]));
    let (_, q) = get(&srv, "3.64", &format!("/v3/os-quota-sets/{PROJECT}?usage=True"));
    assert_eq!((q["quota_set"]["groups"]["in_use"].as_i64(), q["quota_set"]["volumes"]["in_use"].as_i64()), (Some(0), Some(0)), "{q}");
}
