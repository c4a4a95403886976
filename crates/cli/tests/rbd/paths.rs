//! `rekey serve --backend rbd`, through the HTTP API: a volume made from a
//! snapshot, a backup restored to a new volume, onto an existing volume and
//! with `backup_id` in a volume create. Each result is checked on the image
//! itself (`rbd export`, then cryptsetup): it opens with its own key, not
//! with the source's, the snapshot's or the backup's; it holds the source's
//! plaintext of the snapshot/backup time; and the source is intact.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

/// Plaintext written into the source before the snapshot/backup, and after.
const PLAIN_LEN: usize = 4 * MIB as usize;

/// A running service on the shared cluster, with a scratch directory.
struct Env {
    srv: Serve,
    dir: tempfile::TempDir,
}

/// A volume as the API shows it, with its key's passphrase in a file.
struct Vol {
    id: String,
    key_id: String,
    key: PathBuf,
}

impl Env {
    fn start() -> Env {
        require_tool("cryptsetup", "cryptsetup-bin");
        let conf = ceph_conf();
        let dir = tempfile::tempdir().unwrap();
        let srv = Serve::start(&conf, &dir.path().join("data"));
        Env { srv, dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The passphrase of key `key_id`, in a file named after it.
    fn key_file(&self, key_id: &str) -> PathBuf {
        let p = self.file(&format!("{key_id}.key"));
        self.srv.passphrase_file(key_id, &p);
        p
    }

    fn vol(&self, v: &Value) -> Vol {
        let id = v["id"].as_str().expect("volume id").to_owned();
        let key_id = v["encryption_key_id"].as_str().unwrap_or_else(|| panic!("volume {id} has no key: {v}")).to_owned();
        let key = self.key_file(&key_id);
        Vol { id, key_id, key }
    }

    /// The volume's current view.
    fn show(&self, id: &str) -> Value {
        let (st, v) = self.srv.api("GET", &format!("/v3/{PROJECT}/volumes/{id}"), None);
        assert_eq!(st, 200, "{v}");
        v["volume"].clone()
    }

    /// `rbd export` of the volume's image (or of `@snap` of it) to a file.
    fn export(&self, id: &str, snap: Option<&str>) -> PathBuf {
        let image = match snap {
            Some(s) => format!("volume-{id}@{s}"),
            None => format!("volume-{id}"),
        };
        let to = self.file(&format!("{image}.img"));
        rbd_export(&self.srv.conf, &image, &to);
        to
    }

    /// An available 1 GiB volume of `vtype` holding `plain` at offset 0.
    fn source(&self, vtype: &str, plain: &[u8]) -> Vol {
        let v = self.srv.create_volume(json!({"size": 1, "volume_type": vtype, "name": "src"}));
        let src = self.vol(&v);
        self.srv.write_plaintext(&src.id, &src.key, plain);
        src
    }

    /// The checks every made volume must pass, on its exported image: opens
    /// with its own key and with none of `foreign`, one keyslot left, and
    /// `want` as its plaintext. Returns the image's volume key (hex).
    fn check_made(&self, vol: &Vol, what: &str, foreign: &[(&str, &Path)], want: &[u8]) -> String {
        let img = self.export(&vol.id, None);
        assert!(cryptsetup_opens(&img, &vol.key), "the {what} must open with its own key");
        for (whose, key) in foreign {
            assert_ne!(std::fs::read(key).unwrap(), std::fs::read(&vol.key).unwrap(), "the {what} has the {whose}'s key bytes");
            assert!(!cryptsetup_opens(&img, key), "the {what} must NOT open with the {whose}'s key");
        }
        assert_eq!(cryptsetup_keyslots(&img), 1, "the {what}'s interim keyslot must be gone");
        assert_same(&plaintext_of(&img, &vol.key, want.len()), want, &format!("plaintext of the {what}"));
        cryptsetup_volume_key(&img, &vol.key)
    }

    /// The source opens with its own key and holds `want`; returns its volume key.
    fn check_source(&self, src: &Vol, want: &[u8]) -> String {
        assert_eq!(self.show(&src.id)["status"], "available");
        assert_eq!(self.show(&src.id)["encryption_key_id"], src.key_id.as_str(), "the source's key changed");
        let img = self.export(&src.id, None);
        assert!(cryptsetup_opens(&img, &src.key), "the source must still open with its own key");
        assert_same(&plaintext_of(&img, &src.key, want.len()), want, "the source's current plaintext");
        cryptsetup_volume_key(&img, &src.key)
    }
}

/// Snapshot, change the source, make a volume from the snapshot.
fn from_snapshot(provider: &str, mode: Option<&str>) {
    let e = Env::start();
    e.srv.create_encrypted_type("T", provider, mode);
    let (then, now) = (data(11, PLAIN_LEN), data(12, PLAIN_LEN));
    let src = e.source("T", &then);

    let s = e.srv.post(&format!("/v3/{PROJECT}/snapshots"), json!({"snapshot": {"volume_id": src.id, "name": "snap"}}), 202);
    let snap_id = s["snapshot"]["id"].as_str().unwrap().to_owned();
    let snap = e.srv.settled_as("snapshot", &snap_id, &["creating"]);
    assert_eq!(snap["status"], "available", "{snap}");
    let snaps = rbd(&e.srv.conf, &["snap", "ls", &format!("{POOL}/volume-{}", src.id)]).ok();
    assert!(snaps.stdout.contains(&format!("snapshot-{snap_id}")), "the snapshot must be an RBD snapshot: {}", snaps.stdout);
    // After the snapshot the source changes: the new volume must not see it.
    e.srv.write_plaintext(&src.id, &src.key, &now);

    let v = e.srv.create_volume(json!({"size": 1, "snapshot_id": snap_id, "name": "fromsnap"}));
    assert_eq!(v["snapshot_id"], snap_id.as_str(), "{v}");
    let made = e.vol(&v);
    assert_ne!(made.key_id, src.key_id);
    let made_vk = e.check_made(&made, "volume from the snapshot", &[("source", &src.key)], &then);

    // The parent: the volume is intact with its current data, and the
    // snapshot still holds the old data under the source's key.
    let src_vk = e.check_source(&src, &now);
    let snap_img = e.export(&src.id, Some(&format!("snapshot-{snap_id}")));
    assert!(cryptsetup_opens(&snap_img, &src.key), "the snapshot must still open with the source's key");
    assert!(!cryptsetup_opens(&snap_img, &made.key), "the snapshot must NOT open with the new volume's key");
    assert_same(&plaintext_of(&snap_img, &src.key, then.len()), &then, "the snapshot's plaintext");
    match mode {
        Some("volume-key") => assert_ne!(made_vk, src_vk, "volume-key mode must give the new volume its own volume key"),
        // keyslot mode (the default) re-wraps the same volume key under a new passphrase.
        _ => assert_eq!(made_vk, src_vk, "keyslot mode keeps the volume key"),
    }

    e.srv.delete_volume(&made.id);
    let (st, b) = e.srv.api("DELETE", &format!("/v3/{PROJECT}/snapshots/{snap_id}"), None);
    assert_eq!(st, 202, "{b}");
    let t0 = std::time::Instant::now();
    while e.srv.api("GET", &format!("/v3/{PROJECT}/snapshots/{snap_id}"), None).0 != 404 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "snapshot not deleted");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    e.srv.delete_volume(&src.id);
}

#[test]
fn api_volume_from_snapshot_on_rbd_gets_its_own_key_and_the_snapshot_time_data() {
    from_snapshot("luks", None);
}

#[test]
fn api_volume_from_snapshot_on_rbd_in_volume_key_mode_gets_its_own_volume_key() {
    from_snapshot("luks2", Some("volume-key"));
}

#[test]
fn api_backup_restore_on_rbd_to_new_existing_and_by_backup_id_rekeys() {
    let e = Env::start();
    e.srv.create_encrypted_type("T", "luks2", None);
    let (then, now, other) = (data(21, PLAIN_LEN), data(22, PLAIN_LEN), data(23, PLAIN_LEN));
    let src = e.source("T", &then);

    let b = e.srv.post(&format!("/v3/{PROJECT}/backups"), json!({"backup": {"volume_id": src.id, "name": "b"}}), 202);
    let backup_id = b["backup"]["id"].as_str().unwrap().to_owned();
    let b = e.srv.settled_as("backup", &backup_id, &["creating"]);
    assert_eq!(b["status"], "available", "{b}");
    let backup_key_id = b["encryption_key_id"].as_str().expect("the backup keeps its own key copy").to_owned();
    assert_ne!(backup_key_id, src.key_id);
    let backup_key = e.key_file(&backup_key_id);
    // After the backup the source changes: restores must not see it.
    e.srv.write_plaintext(&src.id, &src.key, &now);
    let foreign = [("source", src.key.as_path()), ("backup", backup_key.as_path())];
    let src_vk = e.check_source(&src, &now);

    // 1. Restore to a new volume.
    let r = e.srv.post(&format!("/v3/{PROJECT}/backups/{backup_id}/restore"), json!({"restore": {}}), 202);
    let new_id = r["restore"]["volume_id"].as_str().unwrap().to_owned();
    let v = e.srv.settled(&new_id);
    assert_eq!(v["status"], "available", "{v}");
    let restored = e.vol(&v);
    let vk = e.check_made(&restored, "volume restored from the backup", &foreign, &then);
    assert_eq!(vk, src_vk, "keyslot mode (the default) keeps the backed-up volume key");

    // 2. Restore onto an existing volume with data of its own.
    let t = e.srv.create_volume(json!({"size": 1, "volume_type": "T", "name": "target"}));
    let target = e.vol(&t);
    e.srv.write_plaintext(&target.id, &target.key, &other);
    let r = e.srv.post(&format!("/v3/{PROJECT}/backups/{backup_id}/restore"), json!({"restore": {"volume_id": target.id}}), 202);
    assert_eq!(r["restore"]["volume_id"], target.id.as_str());
    let t = e.srv.settled(&target.id);
    assert_eq!(t["status"], "available", "{t}");
    let after = e.vol(&t);
    assert_ne!(after.key_id, target.key_id, "a restore onto a volume gives it a new key");
    let mut foreign_t = foreign.to_vec();
    foreign_t.push(("target's old", target.key.as_path()));
    e.check_made(&after, "existing volume the backup was restored onto", &foreign_t, &then);

    // 3. POST /volumes with backup_id: refused below 3.47, a rekeyed volume from 3.47 on.
    let body = json!({"volume": {"size": 1, "backup_id": backup_id, "name": "frombackup"}});
    let (st, err) = e.srv.api_at("3.46", "POST", &format!("/v3/{PROJECT}/volumes"), Some(body.clone()));
    assert_eq!(st, 400, "backup_id below 3.47: {err}");
    let (st, v) = e.srv.api_at("3.47", "POST", &format!("/v3/{PROJECT}/volumes"), Some(body));
    assert_eq!(st, 202, "{v}");
    let v = e.srv.settled(v["volume"]["id"].as_str().unwrap());
    assert_eq!(v["status"], "available", "{v}");
    let fb = e.vol(&v);
    e.check_made(&fb, "volume created from the backup", &foreign, &then);

    // Every result has its own key; the source is untouched; the backup is usable again.
    let keys = [&src.key_id, &backup_key_id, &restored.key_id, &after.key_id, &fb.key_id];
    for (i, a) in keys.iter().enumerate() {
        assert!(keys[i + 1..].iter().all(|b| b != a), "key ids must all differ: {keys:?}");
    }
    e.check_source(&src, &now);
    assert_eq!(e.srv.settled_as("backup", &backup_id, &["restoring"])["status"], "available");

    for id in [&restored.id, &after.id, &fb.id, &src.id] {
        e.srv.delete_volume(id);
    }
    let (st, b) = e.srv.api("DELETE", &format!("/v3/{PROJECT}/backups/{backup_id}"), None);
    assert_eq!(st, 202, "{b}");
}

/// A transfer accept rekeys the snapshots that move with the volume. An RBD
/// snapshot cannot be rewritten, so each is cloned into a scratch image, the
/// clone gets a keyslot for a new key (the old one wiped), the old snapshot
/// goes (the clone flattened first) and the clone is snapshotted under the
/// same snapshot id. Checked on the images: the old RBD snapshot is gone,
/// the new one opens with the snapshot's recorded key and not with the
/// donor's bytes and holds the snapshot-time data; a volume made from it
/// has that data under its own key; the audit finds no orphan key; deleting
/// the snapshot removes the scratch image.
#[test]
fn api_transfer_accept_on_rbd_rekeys_the_moved_snapshot() {
    let e = Env::start();
    e.srv.create_encrypted_type("T", "luks2", None);
    let (then, now) = (data(31, PLAIN_LEN), data(32, PLAIN_LEN));
    let src = e.source("T", &then);
    let created = e.srv.post(&format!("/v3/{PROJECT}/snapshots"), json!({"snapshot": {"volume_id": src.id, "name": "snap"}}), 202);
    let snap_id = created["snapshot"]["id"].as_str().unwrap().to_owned();
    let snap = e.srv.settled_as("snapshot", &snap_id, &["creating"]);
    assert_eq!(snap["status"], "available", "{snap}");
    let donor_snap = e.key_file(&snapshot_key(&e.srv.data, &snap_id));
    e.srv.write_plaintext(&src.id, &src.key, &now);

    let (st, t) = e.srv.api_at("3.70", "POST", &format!("/v3/{PROJECT}/volume-transfers"), Some(json!({"transfer": {"volume_id": src.id}})));
    assert_eq!(st, 202, "{t}");
    let (tid, auth) = (t["transfer"]["id"].as_str().unwrap(), t["transfer"]["auth_key"].as_str().unwrap());
    let (st, a) = e.srv.api_as("bob", "3.70", "POST", &format!("/v3/bob/volume-transfers/{tid}/accept"), Some(json!({"accept": {"auth_key": auth}})));
    assert_eq!(st, 202, "{a}");
    let t0 = std::time::Instant::now();
    let vol = loop {
        // Bob sees the volume once `accept_move` committed.
        let (st, v) = e.srv.api_as("bob", "3.70", "GET", &format!("/v3/bob/volumes/{}", src.id), None);
        assert!(st == 200 || st == 404, "{st} {v}");
        if st == 200 && v["volume"]["status"] != "maintenance" {
            break v["volume"].clone();
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(300), "accept stuck: {v}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(vol["status"], "available", "{vol}");
    let moved = e.vol(&vol);
    e.check_made(&moved, "transferred volume", &[("donor", &src.key)], &now);

    let (st, sn) = e.srv.api_as("bob", "3.70", "GET", &format!("/v3/bob/snapshots/{snap_id}"), None);
    assert_eq!(st, 200, "{sn}");
    assert_eq!(sn["snapshot"]["status"], "available", "{sn}");
    let snap_key_id = snapshot_key(&e.srv.data, &snap_id);
    let snap_key = e.key_file(&snap_key_id);
    let old = rbd(&e.srv.conf, &["snap", "ls", &format!("{POOL}/volume-{}", src.id)]).ok();
    assert!(!old.stdout.contains(&format!("snapshot-{snap_id}")), "the donor-keyed RBD snapshot is still there: {}", old.stdout);
    let img = e.file("moved-snapshot.img");
    let scratch = snapshot_image(&e.srv.conf, &snap_id, &img);
    for (whose, key) in [("donor's volume", &src.key), ("donor's snapshot", &donor_snap)] {
        assert_ne!(std::fs::read(key).unwrap(), std::fs::read(&snap_key).unwrap(), "the snapshot's key has the {whose}'s bytes");
        assert!(!cryptsetup_opens(&img, key), "the moved snapshot still opens with the {whose}'s key");
    }
    assert!(cryptsetup_opens(&img, &snap_key), "the moved snapshot does not open with its recorded key");
    assert_eq!(cryptsetup_keyslots(&img), 1, "the moved snapshot's old keyslot is left");
    assert_same(&plaintext_of(&img, &snap_key, then.len()), &then, "the moved snapshot's plaintext");

    let (st, v) = e.srv.api_as("bob", "3.70", "POST", "/v3/bob/volumes", Some(json!({"volume": {"snapshot_id": snap_id, "name": "from-moved"}})));
    assert_eq!(st, 202, "{v}");
    let made_id = v["volume"]["id"].as_str().unwrap().to_owned();
    let t0 = std::time::Instant::now();
    let made = loop {
        let (_, v) = e.srv.api_as("bob", "3.70", "GET", &format!("/v3/bob/volumes/{made_id}"), None);
        if v["volume"]["status"] != "creating" {
            break v["volume"].clone();
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(300), "volume from the moved snapshot stuck: {v}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(made["status"], "available", "{made}");
    let made = e.vol(&made);
    e.check_made(&made, "volume from the moved snapshot", &[("donor", &src.key), ("donor's snapshot", &donor_snap), ("snapshot", &snap_key)], &then);

    let config = e.file("audit.toml");
    std::fs::write(&config, format!("[backend]\ntype = \"rbd\"\npool = \"{POOL}\"\nceph_conf = {:?}\n", e.srv.conf.to_str().unwrap())).unwrap();
    let out = rekey_cmd().args(["volume", "audit", "--json", "--data-dir", s(&e.srv.data), "--config", s(&config)]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("audit: {}", String::from_utf8_lossy(&out.stderr)));
    for field in ["unreferenced_keys", "shared_key_ids", "shared_passphrases", "errors"] {
        assert_eq!(report[field], json!([]), "audit {field}: {report}");
    }

    for (what, id) in [("volumes", &made.id), ("snapshots", &snap_id), ("volumes", &src.id)] {
        let (st, b) = e.srv.api_as("bob", "3.70", "DELETE", &format!("/v3/bob/{what}/{id}"), None);
        assert_eq!(st, 202, "delete {what} {id}: {b}");
        let t0 = std::time::Instant::now();
        while e.srv.api_as("bob", "3.70", "GET", &format!("/v3/bob/{what}/{id}"), None).0 != 404 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(120), "{what} {id} not deleted");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    assert!(rbd(&e.srv.conf, &["info", &format!("{POOL}/volume-{scratch}")]).code != 0, "the snapshot's scratch image is left");
}

/// The key id a snapshot's record names (the API does not show it).
fn snapshot_key(data: &Path, snap_id: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(data.join("rekey.sqlite"))
        .arg(format!("SELECT encryption_key_id FROM snapshots WHERE id = '{snap_id}'"))
        .output()
        .expect("run sqlite3 (apt-get install sqlite3)");
    assert!(out.status.success(), "sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!key.is_empty(), "snapshot {snap_id} has no key");
    key
}

/// The head of snapshot `snap_id` (found by id, wherever it lives) copied
/// to `to`; returns the id of the volume image that holds it.
fn snapshot_image(conf: &Path, snap_id: &str, to: &Path) -> String {
    use rekey_storage::Backend;
    let mut config = rekey_storage::RbdConfig::new(POOL);
    config.ceph_conf = Some(conf.to_path_buf());
    let b = rekey_storage::RbdBackend::connect(&config).unwrap();
    let io = b.open_snapshot(snap_id).unwrap();
    let mut buf = vec![0u8; 16 * MIB as usize + PLAIN_LEN];
    io.read_at(&mut buf, 0).unwrap();
    std::fs::write(to, &buf).unwrap();
    // The backend's index object of the snapshot names its volume.
    let index = to.with_extension("index");
    let out = Command::new("rados").arg("-c").arg(conf).args(["-p", POOL, "get", &format!("rekey_snapshot.{snap_id}")]).arg(&index).output().expect("run rados");
    assert!(out.status.success(), "rados get: {}", String::from_utf8_lossy(&out.stderr));
    let holder = std::fs::read_to_string(&index).unwrap();
    assert!(b.snapshots(&holder).unwrap().contains(&snap_id.to_owned()), "volume {holder} does not hold snapshot {snap_id}");
    holder
}

/// `os-extend` of an encrypted volume on RBD: the image grows, the LUKS
/// data segment covers the new space, the key still opens it and the data
/// is kept (LUKS1 and LUKS2).
#[test]
fn api_extend_on_rbd_grows_the_image_and_keeps_the_luks_data_valid() {
    let e = Env::start();
    for provider in ["luks", "luks2"] {
        let t = format!("T-{provider}");
        e.srv.create_encrypted_type(&t, provider, None);
        let plain = data(21, PLAIN_LEN);
        let src = e.source(&t, &plain);
        let (st, b) = e.srv.api("POST", &format!("/v3/{PROJECT}/volumes/{}/action", src.id), Some(json!({"os-extend": {"new_size": 1}})));
        assert_eq!(st, 400, "not larger: {b}");
        let (st, b) = e.srv.api("POST", &format!("/v3/{PROJECT}/volumes/{}/action", src.id), Some(json!({"os-extend": {"new_size": 2}})));
        assert_eq!(st, 202, "{b}");
        let v = e.srv.settled_as("volume", &src.id, &["extending"]);
        assert_eq!((v["size"].clone(), v["status"].clone()), (json!(2), json!("available")), "{v}");
        let info = rbd(&e.srv.conf, &["info", "--format", "json", &format!("{POOL}/volume-{}", src.id)]).ok();
        let info: Value = serde_json::from_str(&info.stdout).unwrap();
        assert_eq!(info["size"], json!(2u64 << 30), "{info}");
        let img = e.export(&src.id, None);
        assert!(cryptsetup_opens(&img, &src.key), "{provider}: the key still opens the grown image");
        assert_same(&plaintext_of(&img, &src.key, plain.len()), &plain, &format!("{provider}: plaintext after extend"));
        if provider == "luks2" {
            let dump = cryptsetup(&["luksDump", s(&img)]).ok();
            assert!(dump.stdout.contains("length: (whole device)"), "dynamic segment: {}", dump.stdout);
        }
        std::fs::remove_file(&img).unwrap();
        e.srv.delete_volume(&src.id);
    }
}
