//! End-to-end flows driven by the real `openstack` and `cinder` CLIs, checked
//! with cryptsetup and the engine's data path.

use std::time::{Duration, Instant};

use crate::harness::*;

pub(crate) struct Flow {
    pub(crate) srv: Server,
    _dir: tempfile::TempDir,
}

impl Flow {
    fn start() -> Flow {
        venv();
        require_cryptsetup();
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&dir.path().join("data"), &[]);
        Flow { srv, _dir: dir }
    }
    pub(crate) fn data(&self) -> &std::path::Path {
        &self.srv.data_dir
    }
}

fn json_out(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

/// Type via `openstack volume type create`, source via `openstack volume
/// create`, plaintext written through the engine, clone via `cinder create
/// --source-volid` (or `openstack volume create --source`). Returns
/// (flow, source id, clone id).
pub(crate) fn encrypted_flow(provider: &str, rekey_mode: Option<&str>, clone_with_openstack: bool) -> (Flow, String, String) {
    let f = Flow::start();
    let mut args = vec!["volume", "type", "create"];
    let prop;
    if let Some(m) = rekey_mode {
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
    let out = f.srv.openstack(&args);
    assert!(out.status.success(), "type create: {}", String::from_utf8_lossy(&out.stderr));

    let src = json_out(&f.srv.openstack(&["volume", "create", "--size", "1", "--type", "LUKS", "src", "-f", "json"]));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let src = f.srv.wait_settled(&src_id);
    assert_eq!(src["status"], "available", "{src}");
    assert_eq!(src["encrypted"], true);
    let src_key = src["encryption_key_id"].as_str().expect("source key id").to_owned();
    let src_path = volume_path(f.data(), &src_id);
    let src_pass = passphrase(f.data(), &src_key);
    write_plaintext(&src_path, &src_pass, &pattern(7));
    let src_head = head_bytes(&src_path);

    let clone_id = if clone_with_openstack {
        let c = json_out(&f.srv.openstack(&["volume", "create", "--source", "src", "clone", "-f", "json"]));
        c["id"].as_str().unwrap().to_owned()
    } else {
        table_field(&f.srv.cinder(&["create", "--source-volid", &src_id, "--name", "clone", "1"]), "id")
    };
    let clone = f.srv.wait_settled(&clone_id);
    assert_eq!(clone["status"], "available", "{clone}");
    assert_eq!(clone["source_volid"], src_id.as_str());
    assert_eq!(head_bytes(&src_path), src_head, "the source's bytes changed");
    (f, src_id, clone_id)
}

pub(crate) fn check_rekeyed(f: &Flow, src_id: &str, clone_id: &str, version: &str) {
    let (src, clone) = (f.srv.volume(src_id), f.srv.volume(clone_id));
    let src_key = src["encryption_key_id"].as_str().unwrap();
    let clone_key = clone["encryption_key_id"].as_str().expect("clone key id");
    assert_ne!(src_key, clone_key, "the clone must have its own key id");
    let (src_path, clone_path) = (volume_path(f.data(), src_id), volume_path(f.data(), clone_id));
    let (src_pass, clone_pass) = (passphrase(f.data(), src_key), passphrase(f.data(), clone_key));
    assert_ne!(src_pass, clone_pass, "source and clone keys must differ in the key store");

    let dump = std::process::Command::new("cryptsetup").arg("luksDump").arg(&clone_path).output().unwrap();
    assert!(String::from_utf8_lossy(&dump.stdout).contains(&format!("Version:       \t{version}")), "LUKS{version} expected");
    assert!(cryptsetup_opens(&clone_path, &clone_pass), "clone must open with its own key's passphrase");
    assert!(!cryptsetup_opens(&clone_path, &src_pass), "clone must NOT open with the source's passphrase");
    assert!(cryptsetup_opens(&src_path, &src_pass), "source must still open with its own passphrase");
    assert_eq!(cryptsetup_keyslots(&clone_path), 1, "the old keyslot must be gone");

    let want = pattern(7);
    for (i, got) in read_plaintext(&clone_path, &clone_pass, want.len()).iter().enumerate() {
        assert!(got == &want, "clone plaintext differs at offset #{i}");
    }
    assert_eq!(read_plaintext(&src_path, &src_pass, 16)[0], want[..16]);

    // os-brick's view of the clone names the same key.
    let (st, enc) = f.srv.http("GET", &format!("/v3/volumes/{clone_id}/encryption"), None);
    assert_eq!(st, 200);
    assert_eq!(enc["encryption_key_id"], clone_key);
}

/// Deleting the clone with the CLI removes its file and, soon after, its key.
fn check_delete(f: &Flow, clone_id: &str) {
    let key = f.srv.volume(clone_id)["encryption_key_id"].as_str().map(str::to_owned);
    let path = volume_path(f.data(), clone_id);
    let out = f.srv.openstack(&["volume", "delete", clone_id]);
    assert!(out.status.success(), "volume delete: {}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    while f.srv.http("GET", &format!("/v3/volumes/{clone_id}"), None).0 != 404 {
        assert!(start.elapsed() < Duration::from_secs(30), "volume not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!path.exists(), "backing file left behind");
    if let Some(k) = key {
        while key_exists(f.data(), &k) {
            assert!(start.elapsed() < Duration::from_secs(30), "key of a deleted volume not deleted");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn luks1_clone_with_cinder_cli_gets_its_own_key() {
    let (f, src, clone) = encrypted_flow("luks", None, false);
    check_rekeyed(&f, &src, &clone, "1");
    check_delete(&f, &clone);
    // The source, no longer being cloned, can go too.
    check_delete(&f, &src);
}

#[test]
fn luks2_clone_with_openstack_cli_gets_its_own_key() {
    let (f, src, clone) = encrypted_flow("luks2", None, true);
    check_rekeyed(&f, &src, &clone, "2");
}

#[test]
fn luks2_clone_with_cinder_cli_gets_its_own_key() {
    let (f, src, clone) = encrypted_flow("luks2", Some("keyslot"), false);
    check_rekeyed(&f, &src, &clone, "2");
}

/// `rekey:mode=none`: Cinder's old behaviour, for comparison: a new key id
/// holding the SAME bytes, so the source's passphrase opens the clone.
#[test]
fn rekey_mode_none_keeps_the_source_key_bytes() {
    let (f, src_id, clone_id) = encrypted_flow("luks", Some("none"), false);
    let (src, clone) = (f.srv.volume(&src_id), f.srv.volume(&clone_id));
    let (sk, ck) = (src["encryption_key_id"].as_str().unwrap(), clone["encryption_key_id"].as_str().unwrap());
    assert_ne!(sk, ck, "even the old behaviour gives each record its own key id");
    let (sp, cp) = (passphrase(f.data(), sk), passphrase(f.data(), ck));
    assert_eq!(sp, cp, "mode none copies the key bytes");
    let clone_path = volume_path(f.data(), &clone_id);
    assert!(cryptsetup_opens(&clone_path, &sp), "with mode none the source's passphrase opens the clone");
    assert_eq!(read_plaintext(&clone_path, &cp, 1 << 20)[1], pattern(7));
}

#[test]
fn unencrypted_type_clone_is_a_plain_copy() {
    let f = Flow::start();
    let out = f.srv.openstack(&["volume", "type", "create", "PLAIN"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let src = json_out(&f.srv.openstack(&["volume", "create", "--size", "1", "--type", "PLAIN", "src", "-f", "json"]));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let src = f.srv.wait_settled(&src_id);
    assert_eq!(src["status"], "available");
    assert_eq!(src["encrypted"], false);
    assert!(src["encryption_key_id"].is_null());
    let src_path = volume_path(f.data(), &src_id);
    let data = pattern(3);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&src_path).unwrap();
        for off in OFFSETS {
            file.write_all_at(&data, off).unwrap();
        }
    }
    let clone_id = table_field(&f.srv.cinder(&["create", "--source-volid", &src_id, "--name", "clone", "1"]), "id");
    let clone = f.srv.wait_settled(&clone_id);
    assert_eq!(clone["status"], "available", "{clone}");
    assert!(clone["encryption_key_id"].is_null());
    let clone_path = volume_path(f.data(), &clone_id);
    assert_eq!(std::fs::metadata(&clone_path).unwrap().len(), 1 << 30);
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(&clone_path).unwrap();
    for off in OFFSETS {
        let mut buf = vec![0u8; data.len()];
        file.read_exact_at(&mut buf, off).unwrap();
        assert!(buf == data, "clone differs at {off}");
    }
    let (st, enc) = f.srv.http("GET", &format!("/v3/volumes/{clone_id}/encryption"), None);
    assert_eq!((st, enc["encryption_key_id"].clone()), (200, serde_json::Value::Null));
}

/// What `openstack volume list/show` and `cinder list/show` print agrees
/// with the API, and version discovery works for both clients.
#[test]
fn clients_list_and_show() {
    let f = Flow::start();
    let v = f.srv.create_volume(serde_json::json!({"volume": {"size": 1, "name": "one"}}));
    let id = v["id"].as_str().unwrap();
    let list = json_out(&f.srv.openstack(&["volume", "list", "-f", "json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["ID"], id);
    let show = json_out(&f.srv.openstack(&["volume", "show", "one", "-f", "json"]));
    assert_eq!(show["status"], "available");
    assert_eq!(table_field(&f.srv.cinder(&["show", id]), "name"), "one");
    let out = f.srv.cinder(&["list"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(id));
    let out = f.srv.openstack(&["volume", "set", "--name", "renamed", id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(f.srv.volume(id)["name"], "renamed");
}
