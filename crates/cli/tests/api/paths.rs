//! Rekey on every path: a volume made from a snapshot, restored from a
//! backup (new and existing volume, and `POST /volumes` with `backup_id`),
//! and a transfer accept — driven by the real `openstack`/`cinder` CLIs and
//! checked with cryptsetup: the volume opens with its own key, not with the
//! source's / snapshot's / backup's / donor's, and its plaintext is the
//! source's at the point in time.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

pub struct Env {
    pub srv: Server,
    _dir: tempfile::TempDir,
}

impl Env {
    pub fn start() -> Env {
        venv();
        require_cryptsetup();
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&dir.path().join("data"), &[]);
        Env { srv, _dir: dir }
    }
    pub fn data(&self) -> &Path {
        &self.srv.data_dir
    }
}

/// `openstack` at microversion `mv`, as the CLI's own identity.
pub fn os(srv: &Server, mv: &str, args: &[&str]) -> Output {
    Command::new(venv().join("bin/openstack"))
        .args(["--os-auth-type", "none", "--os-endpoint", &srv.endpoint(), "--os-volume-api-version", mv])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run openstack")
}

/// `cinder` at microversion `mv` as `project` (noauth `user:project`).
pub fn cinder_as(srv: &Server, project: &str, mv: &str, args: &[&str]) -> Output {
    Command::new(venv().join("bin/cinder"))
        .args(["--os-auth-type", "noauth", "--os-endpoint", &srv.endpoint()])
        .args(["--os-user-id", project, "--os-project-id", project, "--os-volume-api-version", mv])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run cinder")
}

pub fn json_ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

/// Polls `GET path` as `project` until `field.status` leaves `busy`.
pub fn wait_status(srv: &Server, project: &str, path: &str, field: &str, busy: &[&str]) -> Value {
    let start = Instant::now();
    loop {
        let (st, v) = srv.http_as(project, "GET", path, None);
        if st == 200 {
            let s = v[field]["status"].as_str().unwrap_or("").to_owned();
            if !busy.contains(&s.as_str()) {
                return v[field].clone();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{path} stuck (last: {st} {v})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_volume(srv: &Server, project: &str, id: &str) -> Value {
    wait_status(srv, project, &format!("/v3/volumes/{id}"), "volume", &["creating", "restoring-backup", "maintenance", "deleting"])
}

pub fn wait_backup(srv: &Server, id: &str) -> Value {
    wait_status(srv, PROJECT, &format!("/v3/backups/{id}"), "backup", &["creating", "restoring", "deleting"])
}

pub fn wait_snapshot(srv: &Server, id: &str) -> Value {
    wait_status(srv, PROJECT, &format!("/v3/snapshots/{id}"), "snapshot", &["creating", "deleting"])
}

/// An encrypted type `LUKS` and an available 1 GiB source `src` with
/// `pattern(7)` written at [`OFFSETS`]; returns (id, key id, passphrase).
pub fn encrypted_source(e: &Env, provider: &str, mode: Option<&str>) -> (String, String, Vec<u8>) {
    let mut args = vec!["volume", "type", "create"];
    let prop;
    if let Some(m) = mode {
        prop = format!("rekey:mode={m}");
        args.extend(["--property", &prop]);
    }
    args.extend([
        "--encryption-provider",
        provider,
        "--encryption-cipher",
        "aes-xts-plain64",
        "--encryption-key-size",
        "256",
        "--encryption-control-location",
        "front-end",
        "LUKS",
    ]);
    let out = e.srv.openstack(&args);
    assert!(out.status.success(), "type create: {}", String::from_utf8_lossy(&out.stderr));
    let src = json_ok(&e.srv.openstack(&["volume", "create", "--size", "1", "--type", "LUKS", "src", "-f", "json"]));
    let id = src["id"].as_str().unwrap().to_owned();
    let src = wait_volume(&e.srv, PROJECT, &id);
    assert_eq!(src["status"], "available", "{src}");
    let key = src["encryption_key_id"].as_str().expect("source key").to_owned();
    let pass = passphrase(e.data(), &key);
    write_plaintext(&volume_path(e.data(), &id), &pass, &pattern(7));
    (id, key, pass)
}

/// The volume opens with its own key, not with any of `foreign`, has one
/// keyslot, and reads `want` at every offset.
pub fn check_own_key(data: &Path, vol: &Value, foreign: &[(&str, &[u8])], want: &[u8]) {
    let id = vol["id"].as_str().unwrap();
    let key = vol["encryption_key_id"].as_str().expect("key id");
    let path = volume_path(data, id);
    let pass = passphrase(data, key);
    assert!(cryptsetup_opens(&path, &pass), "volume {id} must open with its own key");
    for (what, p) in foreign {
        assert_ne!(&pass[..], *p, "volume {id} has the {what}'s key bytes");
        assert!(!cryptsetup_opens(&path, p), "volume {id} must NOT open with the {what}'s key");
    }
    assert_eq!(cryptsetup_keyslots(&path), 1, "only the volume's own keyslot is left");
    for (i, got) in read_plaintext(&path, &pass, want.len()).iter().enumerate() {
        assert!(got == want, "plaintext differs at offset #{i}");
    }
}

fn wait_key_gone(data: &Path, key: &str) {
    let start = Instant::now();
    while key_exists(data, key) {
        assert!(start.elapsed() < Duration::from_secs(30), "key {key} was not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- snapshots -----------------------------------------------------------

#[test]
fn volume_from_snapshot_gets_its_own_key_and_the_snapshot_time_data() {
    let e = Env::start();
    let (src_id, src_key, src_pass) = encrypted_source(&e, "luks", None);
    let snap = json_ok(&e.srv.openstack(&["volume", "snapshot", "create", "--volume", "src", "snap", "-f", "json"]));
    let snap_id = snap["id"].as_str().unwrap().to_owned();
    let snap = wait_snapshot(&e.srv, &snap_id);
    assert_eq!(snap["status"], "available", "{snap}");
    // After the snapshot the source changes: the new volume must have the old data.
    write_plaintext(&volume_path(e.data(), &src_id), &src_pass, &pattern(8));

    let vol = json_ok(&e.srv.openstack(&["volume", "create", "--snapshot", "snap", "fromsnap", "-f", "json"]));
    let vol = wait_volume(&e.srv, PROJECT, vol["id"].as_str().unwrap());
    assert_eq!(vol["status"], "available", "{vol}");
    assert_eq!(vol["snapshot_id"], snap_id.as_str(), "the volume names the snapshot it came from");
    assert_ne!(vol["encryption_key_id"], src_key.as_str());
    check_own_key(e.data(), &vol, &[("source", &src_pass)], &pattern(7));

    // The snapshot itself still opens with the source's key of the time.
    let listed = json_ok(&e.srv.openstack(&["volume", "snapshot", "list", "-f", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let shown = json_ok(&e.srv.openstack(&["volume", "snapshot", "show", "snap", "-f", "json"]));
    assert_eq!(shown["status"], "available");
    let out = e.srv.openstack(&["volume", "snapshot", "set", "--name", "snap2", "snap"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A volume with snapshots is not deleted without cascade; with it, it is.
    let (st, body) = e.srv.http("DELETE", &format!("/v3/volumes/{src_id}"), None);
    assert_eq!(st, 400, "{body}");
    assert!(body["badRequest"]["message"].as_str().unwrap().contains("snapshot"), "{body}");
    assert_eq!(e.srv.volume(&src_id)["status"], "available");
    let (st, _) = e.srv.http("DELETE", &format!("/v3/volumes/{src_id}?cascade=true"), None);
    assert_eq!(st, 202);
    let start = Instant::now();
    while e.srv.http("GET", &format!("/v3/volumes/{src_id}"), None).0 != 404 {
        assert!(start.elapsed() < Duration::from_secs(30), "source not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(e.srv.http("GET", &format!("/v3/snapshots/{snap_id}"), None).0, 404);
    wait_key_gone(e.data(), &src_key);
    // The volume made from the snapshot is independent of both.
    check_own_key(e.data(), &vol, &[("source", &src_pass)], &pattern(7));
}

#[test]
fn snapshot_delete_and_unencrypted_volume_from_snapshot() {
    let e = Env::start();
    e.srv.create_type("PLAIN", None, &[]);
    let v = e.srv.create_volume(json!({"volume": {"size": 1, "name": "p", "volume_type": "PLAIN"}}));
    let vid = v["id"].as_str().unwrap();
    let (st, s) = e.srv.http("POST", "/v3/snapshots", Some(json!({"snapshot": {"volume_id": vid, "name": "s"}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{s}");
    let sid = s["snapshot"]["id"].as_str().unwrap();
    assert_eq!(wait_snapshot(&e.srv, sid)["status"], "available");
    let out = e.srv.cinder(&["create", "--snapshot-id", sid, "--name", "c", "2"]);
    let cid = table_field(&out, "id");
    let c = wait_volume(&e.srv, PROJECT, &cid);
    assert_eq!((c["status"].as_str(), c["size"].as_u64()), (Some("available"), Some(2)));
    assert!(c["encryption_key_id"].is_null());
    let out = e.srv.openstack(&["volume", "snapshot", "delete", sid]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(e.srv.http("GET", &format!("/v3/snapshots/{sid}"), None).0, 404);
}

// ---- transfers -----------------------------------------------------------

#[test]
fn transfer_accept_rekeys_with_a_recipient_key_and_deletes_the_donors() {
    let e = Env::start();
    let (src_id, src_key, src_pass) = encrypted_source(&e, "luks2", None);
    // Below 3.70 an encrypted volume cannot be transferred (Cinder's rule).
    let out = os(&e.srv, "3.55", &["volume", "transfer", "request", "create", "src", "-f", "json"]);
    assert!(!out.status.success(), "encrypted transfer below 3.70 must be refused");
    assert_eq!(e.srv.volume(&src_id)["status"], "available");

    let t = json_ok(&os(&e.srv, "3.70", &["volume", "transfer", "request", "create", "--name", "gift", "src", "-f", "json"]));
    let (tid, auth) = (t["id"].as_str().unwrap().to_owned(), t["auth_key"].as_str().unwrap().to_owned());
    assert_eq!(e.srv.volume(&src_id)["status"], "awaiting-transfer");
    let listed = json_ok(&os(&e.srv, "3.70", &["volume", "transfer", "request", "list", "-f", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let shown = json_ok(&os(&e.srv, "3.70", &["volume", "transfer", "request", "show", &tid, "-f", "json"]));
    assert_eq!(shown["volume_id"], src_id.as_str());
    assert!(shown.get("auth_key").is_none() || shown["auth_key"].is_null(), "auth_key is shown once only");

    // A wrong auth key is refused and changes nothing.
    let out = cinder_as(&e.srv, "bob", "3.70", &["transfer-accept", &tid, "0000000000000000"]);
    assert!(!out.status.success(), "a wrong auth key must be refused");
    let (st, body) = e.srv.http_as("bob", "POST", &format!("/v3/volume-transfers/{tid}/accept"), Some(json!({"accept": {"auth_key": "wrong"}}).to_string().as_bytes()));
    assert_eq!(st, 403, "{body}");
    let v = e.srv.volume(&src_id);
    assert_eq!((v["status"].as_str(), v["encryption_key_id"].as_str()), (Some("awaiting-transfer"), Some(src_key.as_str())));
    assert_eq!(e.srv.volume_count("bob"), 0);
    // Nor can the donor accept its own transfer.
    let (st, body) = e.srv.http("POST", &format!("/v3/volume-transfers/{tid}/accept"), Some(json!({"accept": {"auth_key": auth}}).to_string().as_bytes()));
    assert_eq!(st, 400, "{body}");

    // The recipient accepts with the real CLI.
    let out = cinder_as(&e.srv, "bob", "3.70", &["transfer-accept", &tid, &auth]);
    assert!(out.status.success(), "accept: {}", String::from_utf8_lossy(&out.stderr));
    let vol = wait_volume(&e.srv, "bob", &src_id);
    assert_eq!(vol["status"], "available", "{vol}");
    assert_eq!(vol["os-vol-tenant-attr:tenant_id"], "bob");
    assert_eq!(e.srv.http("GET", &format!("/v3/volumes/{src_id}"), None).0, 404, "the donor no longer sees it");
    let new_key = vol["encryption_key_id"].as_str().unwrap();
    assert_ne!(new_key, src_key);
    check_own_key(e.data(), &vol, &[("donor", &src_pass)], &pattern(7));
    wait_key_gone(e.data(), &src_key);
    // An accepted transfer cannot be used again.
    let (st, body) = e.srv.http_as("carol", "POST", &format!("/v3/volume-transfers/{tid}/accept"), Some(json!({"accept": {"auth_key": auth}}).to_string().as_bytes()));
    assert!((400..500).contains(&st), "reusing an accepted transfer: {st} {body}");
    assert_eq!(e.srv.volume_count("carol"), 0);
}

/// The key id a snapshot's record names (the API does not show it).
pub fn snapshot_key(data: &Path, snap_id: &str) -> String {
    let k = sql_value(data, &format!("SELECT encryption_key_id FROM snapshots WHERE id = '{snap_id}'"));
    assert!(!k.is_empty(), "snapshot {snap_id} has no key");
    k
}

/// A snapshot file of the file backend (beside `volumes/`).
pub fn snapshot_path(data: &Path, any_volume: &str, snap_id: &str) -> std::path::PathBuf {
    let vol = volume_path(data, any_volume);
    vol.parent().unwrap().parent().unwrap().join("snapshots").join(format!("snapshot-{snap_id}"))
}

/// A donor's encrypted volume with a snapshot, offered for transfer:
/// (volume id, snapshot id, donor's volume passphrase, donor's snapshot
/// key id and passphrase, transfer id, auth key).
pub fn offer_with_snapshot(e: &Env) -> (String, String, Vec<u8>, String, Vec<u8>, String, String) {
    let (src_id, _src_key, src_pass) = encrypted_source(e, "luks2", None);
    let (st, s) = e.srv.http("POST", "/v3/snapshots", Some(json!({"snapshot": {"volume_id": src_id}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{s}");
    let snap_id = s["snapshot"]["id"].as_str().unwrap().to_owned();
    let snap = wait_snapshot(&e.srv, &snap_id);
    assert_eq!(snap["status"], "available", "{snap}");
    let snap_key = snapshot_key(e.data(), &snap_id);
    let snap_pass = passphrase(e.data(), &snap_key);
    let out = cinder_as(&e.srv, PROJECT, "3.70", &["transfer-create", &src_id]);
    let (tid, auth) = (table_field(&out, "id"), table_field(&out, "auth_key"));
    (src_id, snap_id, src_pass, snap_key, snap_pass, tid, auth)
}

/// After bob accepted: the snapshot is bob's, `available`, names a key of
/// its own that opens it (cryptsetup) where the donor's bytes do not, one
/// keyslot; a volume made from it holds the snapshot-time data under its
/// own key; deleting it removes its scratch volume; no orphan key.
pub fn check_transferred_snapshot(e: &Env, vol_id: &str, snap_id: &str, donor: &[(&str, &[u8])], donor_snap_key: &str, what: &str) {
    let (st, s) = e.srv.http_as("bob", "GET", &format!("/v3/snapshots/{snap_id}"), None);
    assert_eq!(st, 200, "{what}: {s}");
    let s = &s["snapshot"];
    assert_eq!(s["status"], "available", "{what}: {s}");
    let key = &snapshot_key(e.data(), snap_id);
    assert_ne!(key, donor_snap_key, "{what}: the snapshot still names the donor's key id");
    let pass = passphrase(e.data(), key);
    let path = snapshot_path(e.data(), vol_id, snap_id);
    assert!(cryptsetup_opens(&path, &pass), "{what}: the snapshot does not open with its recorded key");
    for (whose, p) in donor {
        assert_ne!(&pass[..], *p, "{what}: the snapshot's key has the {whose}'s bytes");
        assert!(!cryptsetup_opens(&path, p), "{what}: the snapshot still opens with the {whose}'s key");
    }
    assert_eq!(cryptsetup_keyslots(&path), 1, "{what}: the snapshot's old keyslot is left");
    for got in read_plaintext(&path, &pass, pattern(7).len()) {
        assert!(got == pattern(7), "{what}: the snapshot's plaintext");
    }
    let (st, v) = e.srv.http_as("bob", "POST", "/v3/volumes", Some(json!({"volume": {"snapshot_id": snap_id, "name": "from-moved"}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{what}: {v}");
    let made = wait_volume(&e.srv, "bob", v["volume"]["id"].as_str().unwrap());
    assert_eq!(made["status"], "available", "{what}: {made}");
    let mut foreign: Vec<(&str, &[u8])> = donor.to_vec();
    foreign.push(("snapshot", &pass));
    check_own_key(e.data(), &made, &foreign, &pattern(7));
    let r = audit_json(e.data());
    for field in ["unreferenced_keys", "shared_key_ids", "shared_passphrases", "errors"] {
        assert_eq!(r[field], json!([]), "{what}: audit {field}");
    }
    // The snapshot goes with its scratch volume: nothing is left on disk.
    let volumes_dir = path.parent().unwrap().parent().unwrap().join("volumes");
    let count = || std::fs::read_dir(&volumes_dir).unwrap().filter(|d| d.as_ref().unwrap().file_name().to_string_lossy().starts_with("volume-")).count();
    let before = count();
    let (st, b) = e.srv.http_as("bob", "DELETE", &format!("/v3/snapshots/{snap_id}"), None);
    assert_eq!(st, 202, "{what}: {b}");
    let t = Instant::now();
    while e.srv.http_as("bob", "GET", &format!("/v3/snapshots/{snap_id}"), None).0 != 404 {
        assert!(t.elapsed() < Duration::from_secs(30), "{what}: snapshot not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!path.exists(), "{what}: the snapshot's file is left");
    assert_eq!(count(), before - 1, "{what}: the snapshot's scratch volume is left");
}

#[test]
fn transfer_accept_rekeys_the_moved_snapshots() {
    let e = Env::start();
    let (vol_id, snap_id, src_pass, snap_key, snap_pass, tid, auth) = offer_with_snapshot(&e);
    let out = cinder_as(&e.srv, "bob", "3.70", &["transfer-accept", &tid, &auth]);
    assert!(out.status.success(), "accept: {}", String::from_utf8_lossy(&out.stderr));
    let vol = wait_volume(&e.srv, "bob", &vol_id);
    assert_eq!(vol["status"], "available", "{vol}");
    check_own_key(e.data(), &vol, &[("donor", &src_pass)], &pattern(7));
    check_transferred_snapshot(&e, &vol_id, &snap_id, &[("donor's volume", &src_pass), ("donor's snapshot", &snap_pass)], &snap_key, "accept");
    wait_key_gone(e.data(), &snap_key);
}

// ---- backups -------------------------------------------------------------

pub fn backup(srv: &Server, args: &[&str]) -> Value {
    let mut a = vec!["volume", "backup", "create"];
    a.extend(args);
    a.extend(["-f", "json"]);
    let b = json_ok(&srv.openstack(&a));
    let b = wait_backup(srv, b["id"].as_str().unwrap());
    assert_eq!(b["status"], "available", "{b}");
    b
}

#[test]
fn backup_restore_to_new_and_existing_volumes_rekeys() {
    let e = Env::start();
    let (src_id, src_key, src_pass) = encrypted_source(&e, "luks", None);
    let full = backup(&e.srv, &["--name", "full", "src"]);
    let full_key = full["encryption_key_id"].as_str().expect("the backup keeps its own key copy").to_owned();
    assert_ne!(full_key, src_key);
    let full_pass = passphrase(e.data(), &full_key);
    assert_eq!(full_pass, src_pass, "the backup's key copy has the volume's bytes");

    // Change 1 MiB, back up incrementally: it stores about that.
    let mut changed = pattern(7);
    changed[..4096].copy_from_slice(&pattern(5)[..4096]);
    {
        let v = rekey_luks::Volume::open(rekey_luks::FileIo::open(volume_path(e.data(), &src_id)).unwrap()).unwrap();
        let plain = v.decrypted(&src_pass).unwrap();
        use rekey_luks::BlockIo;
        plain.write_at(&changed, OFFSETS[0]).unwrap();
        plain.flush().unwrap();
    }
    let inc = backup(&e.srv, &["--incremental", "--name", "inc", "src"]);
    assert_eq!(inc["is_incremental"], true);
    assert_eq!(inc["object_count"], 1, "one changed chunk stored: {inc}");
    let (st, b) = e.srv.http("GET", "/v3/backups/detail", None);
    assert_eq!(st, 200);
    assert_eq!(b["backups"].as_array().unwrap().len(), 2);

    // Restore the full backup to a new volume (openstack CLI).
    let r = json_ok(&e.srv.openstack(&["volume", "backup", "restore", "full", "restored", "-f", "json"]));
    let rid = r["volume_id"].as_str().unwrap().to_owned();
    let restored = wait_volume(&e.srv, PROJECT, &rid);
    assert_eq!(restored["status"], "available", "{restored}");
    check_own_key(e.data(), &restored, &[("source", &src_pass), ("backup", &full_pass)], &pattern(7));

    // Restore the incremental onto an existing encrypted volume (cinder CLI).
    let target = e.srv.create_volume(json!({"volume": {"size": 1, "name": "target", "volume_type": "LUKS"}}));
    let (tid, tkey) = (target["id"].as_str().unwrap().to_owned(), target["encryption_key_id"].as_str().unwrap().to_owned());
    let tpass = passphrase(e.data(), &tkey);
    let out = cinder_as(&e.srv, PROJECT, "3.64", &["backup-restore", "--volume", &tid, inc["id"].as_str().unwrap()]);
    assert!(out.status.success(), "backup-restore: {}", String::from_utf8_lossy(&out.stderr));
    let t = wait_volume(&e.srv, PROJECT, &tid);
    assert_eq!(t["status"], "available", "{t}");
    let inc_pass = passphrase(e.data(), inc["encryption_key_id"].as_str().unwrap());
    let path = volume_path(e.data(), &tid);
    let got = read_plaintext(&path, &passphrase(e.data(), t["encryption_key_id"].as_str().unwrap()), changed.len());
    assert!(got[0] == changed && got[1] == pattern(7), "restored plaintext is the incremental backup's");
    check_own_key(
        e.data(),
        &t,
        &[("source", &src_pass), ("backup", &inc_pass), ("target's old", &tpass)],
        &pattern(7)[..0],
    );
    wait_key_gone(e.data(), &tkey);

    // POST /volumes with backup_id (3.47+), via cinder.
    let out = cinder_as(&e.srv, PROJECT, "3.47", &["create", "--backup-id", inc["id"].as_str().unwrap(), "--name", "frombackup", "1"]);
    let fid = table_field(&out, "id");
    let f = wait_volume(&e.srv, PROJECT, &fid);
    assert_eq!(f["status"], "available", "{f}");
    let fpass = passphrase(e.data(), f["encryption_key_id"].as_str().unwrap());
    assert!(read_plaintext(&volume_path(e.data(), &fid), &fpass, changed.len())[0] == changed);
    check_own_key(e.data(), &f, &[("source", &src_pass), ("backup", &inc_pass)], &pattern(7)[..0]);

    // The full backup has a dependent: not deletable; the incremental is.
    let (st, body) = e.srv.http("DELETE", &format!("/v3/backups/{}", full["id"].as_str().unwrap()), None);
    assert_eq!(st, 400, "{body}");
    let out = e.srv.openstack(&["volume", "backup", "delete", "inc"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_key_gone(e.data(), inc["encryption_key_id"].as_str().unwrap());
}

#[test]
fn corrupt_backup_chunk_fails_the_restore_and_leaves_the_target_in_error() {
    let e = Env::start();
    let (_src_id, _k, _p) = encrypted_source(&e, "luks", None);
    let b = backup(&e.srv, &["--name", "b", "src"]);
    let bid = b["id"].as_str().unwrap();
    let dir = e.data().join("backups").join(bid);
    let chunk = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lz4"))
        .max()
        .expect("stored chunks");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&chunk, &bytes).unwrap();

    let r = json_ok(&e.srv.openstack(&["volume", "backup", "restore", bid, "victim", "-f", "json"]));
    let v = wait_volume(&e.srv, PROJECT, r["volume_id"].as_str().unwrap());
    assert_eq!(v["status"], "error", "a corrupt chunk must fail the restore: {v}");
    let b = wait_backup(&e.srv, bid);
    assert_eq!(b["status"], "error");
    let reason = b["fail_reason"].as_str().unwrap_or("");
    assert!(reason.contains("corrupt") && reason.contains("chunk"), "clear reason: {reason}");
}
