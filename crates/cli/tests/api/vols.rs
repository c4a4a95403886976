//! Volume, snapshot and backup actions and metadata, driven by the real
//! `cinder` and `openstack` CLIs, with their bad inputs: Cinder's 4xx body,
//! and nothing changed afterwards.

use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rekey_luks::BlockIo;
use serde_json::{json, Value};

use crate::harness::*;

struct Env {
    srv: Server,
    _dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        venv();
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&dir.path().join("data"), &[]);
        Env { srv, _dir: dir }
    }

    fn req(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let b = body.to_string();
        self.srv.http(method, path, if body.is_null() { None } else { Some(b.as_bytes()) })
    }

    fn action(&self, id: &str, body: Value) -> (u16, Value) {
        self.req("POST", &format!("/v3/volumes/{id}/action"), body)
    }

    fn wait_snapshot(&self, id: &str, want: &str) -> Value {
        let start = Instant::now();
        loop {
            let (st, s) = self.srv.http("GET", &format!("/v3/snapshots/{id}"), None);
            assert_eq!(st, 200, "{s}");
            if s["snapshot"]["status"] == want {
                return s["snapshot"].clone();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "snapshot {id} stuck: {s}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn wait_backup(&self, id: &str, want: &str) -> Value {
        let start = Instant::now();
        loop {
            let (st, b) = self.srv.http("GET", &format!("/v3/backups/{id}"), None);
            assert_eq!(st, 200, "{b}");
            if b["backup"]["status"] == want {
                return b["backup"].clone();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "backup {id} stuck: {b}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The client failed, and its message carries Cinder's 4xx `code`.
fn refused(out: &Output, code: u16, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} should have failed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(&format!("HTTP {code}")), "{what}: expected HTTP {code}: {err}");
}

/// The client failed (for the commands that hide the server's message, as
/// `cinder reset-state` does; the server's answer is checked over HTTP).
fn failed(out: &Output, what: &str) {
    assert!(!out.status.success(), "{what} should have failed: {}", String::from_utf8_lossy(&out.stdout));
}

fn error_body(b: &Value, key: &str, code: u16) {
    assert_eq!(b[key]["code"], code, "{b}");
    assert!(b[key]["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
}

fn plain_volume(e: &Env, name: &str, size: u64) -> String {
    let v = e.srv.create_volume(json!({"volume": {"size": size, "name": name}}));
    assert_eq!(v["status"], "available", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn volume_metadata_with_cinder_cli_and_bad_inputs() {
    let e = Env::start();
    let id = plain_volume(&e, "meta", 1);
    ok(&e.srv.cinder(&["metadata", &id, "set", "k1=v1", "k2=v2"]), "cinder metadata set");
    assert_eq!(e.srv.volume(&id)["metadata"], json!({"k1": "v1", "k2": "v2"}));
    ok(&e.srv.cinder(&["metadata", &id, "unset", "k1"]), "cinder metadata unset");
    assert_eq!(e.srv.volume(&id)["metadata"], json!({"k2": "v2"}));
    ok(&e.srv.cinder(&["metadata-update-all", &id, "a=b"]), "cinder metadata-update-all");
    let (st, m) = e.srv.http("GET", &format!("/v3/volumes/{id}/metadata"), None);
    assert_eq!((st, m), (200, json!({"metadata": {"a": "b"}})));
    let (st, m) = e.req("PUT", &format!("/v3/volumes/{id}/metadata/c"), json!({"meta": {"c": "d"}}));
    assert_eq!((st, m), (200, json!({"meta": {"c": "d"}})));
    let (st, m) = e.srv.http("GET", &format!("/v3/volumes/{id}/metadata/c"), None);
    assert_eq!((st, m), (200, json!({"meta": {"c": "d"}})));
    ok(&e.srv.openstack(&["volume", "set", "--property", "os=yes", &id]), "openstack volume set --property");
    let want = json!({"a": "b", "c": "d", "os": "yes"});
    assert_eq!(e.srv.volume(&id)["metadata"], want);

    // Bad inputs: Cinder's 4xx, and the metadata as it was.
    let (st, b) = e.req("PUT", &format!("/v3/volumes/{id}/metadata/c"), json!({"meta": {"x": "y"}}));
    assert_eq!(st, 400, "body and URI mismatch: {b}");
    error_body(&b, "badRequest", 400);
    let (st, b) = e.req("PUT", &format!("/v3/volumes/{id}/metadata/c"), json!({"meta": {"c": "1", "e": "2"}}));
    assert_eq!(st, 400, "too many items: {b}");
    let (st, b) = e.req("POST", &format!("/v3/volumes/{id}/metadata"), json!({"metadata": {"k": "v".repeat(256)}}));
    assert_eq!(st, 400, "value over 255: {b}");
    let (st, b) = e.req("POST", &format!("/v3/volumes/{id}/metadata"), json!({"metadata": {"": "v"}}));
    assert_eq!(st, 400, "blank key: {b}");
    let (st, b) = e.req("PUT", &format!("/v3/volumes/{id}/metadata"), json!({"metadata": ["not", "a", "map"]}));
    assert_eq!(st, 400, "{b}");
    let (st, b) = e.srv.http("DELETE", &format!("/v3/volumes/{id}/metadata/nope"), None);
    assert_eq!(st, 404, "{b}");
    error_body(&b, "itemNotFound", 404);
    let (st, b) = e.srv.http("GET", &format!("/v3/volumes/{id}/metadata/nope"), None);
    assert_eq!(st, 404, "{b}");
    failed(&e.srv.cinder(&["metadata", "00000000-0000-0000-0000-000000000000", "set", "a=b"]), "metadata of no volume");
    let (st, b) = e.req("POST", "/v3/volumes/00000000-0000-0000-0000-000000000000/metadata", json!({"metadata": {"a": "b"}}));
    assert_eq!(st, 404, "{b}");
    assert_eq!(e.srv.volume(&id)["metadata"], want, "nothing changed");
    let (st, _) = e.srv.http_as("someone-else", "GET", &format!("/v3/volumes/{id}/metadata"), None);
    assert_eq!(st, 404, "another project's volume is not found");
}

#[test]
fn snapshot_metadata_and_actions() {
    let e = Env::start();
    let vid = plain_volume(&e, "snapmeta", 1);
    let (st, s) = e.req("POST", "/v3/snapshots", json!({"snapshot": {"volume_id": vid, "name": "s1"}}));
    assert_eq!(st, 202, "{s}");
    assert!(s["snapshot"].get("links").is_none(), "Cinder's snapshot view has no links: {s}");
    assert!(s["snapshot"].get("os-extended-snapshot-attributes:progress").is_none(), "create has no extended attributes: {s}");
    let sid = s["snapshot"]["id"].as_str().unwrap().to_owned();
    let shown = e.wait_snapshot(&sid, "available");
    assert_eq!(shown["os-extended-snapshot-attributes:progress"], "100%", "{shown}");

    ok(&e.srv.cinder(&["snapshot-metadata", &sid, "set", "x=1", "y=2"]), "cinder snapshot-metadata set");
    ok(&e.srv.cinder(&["snapshot-metadata", &sid, "unset", "x"]), "cinder snapshot-metadata unset");
    let (st, m) = e.srv.http("GET", &format!("/v3/snapshots/{sid}/metadata"), None);
    assert_eq!((st, m), (200, json!({"metadata": {"y": "2"}})));
    let (st, b) = e.req("PUT", &format!("/v3/snapshots/{sid}/metadata/y"), json!({"meta": {"z": "3"}}));
    assert_eq!(st, 400, "{b}");
    let (st, b) = e.srv.http("DELETE", &format!("/v3/snapshots/{sid}/metadata/nope"), None);
    assert_eq!(st, 404, "{b}");
    assert_eq!(e.srv.http("GET", &format!("/v3/snapshots/{sid}/metadata"), None).1, json!({"metadata": {"y": "2"}}));

    // Admin status reset, Nova's status update, bad statuses refused.
    ok(&e.srv.cinder(&["snapshot-reset-state", "--state", "error", &sid]), "cinder snapshot-reset-state");
    e.wait_snapshot(&sid, "error");
    failed(&e.srv.cinder(&["snapshot-reset-state", "--state", "frobbed", &sid]), "bad snapshot state");
    let (st, b) = e.req("POST", &format!("/v3/snapshots/{sid}/action"), json!({"os-reset_status": {"status": "frobbed"}}));
    assert_eq!(st, 400, "{b}");
    let (st, b) = e.req("POST", &format!("/v3/snapshots/{sid}/action"), json!({"os-update_snapshot_status": {"status": "available"}}));
    assert_eq!(st, 400, "only a creating snapshot takes a status update: {b}");
    let (st, b) = e.req("POST", &format!("/v3/snapshots/{sid}/action"), json!({"os-frob": {}}));
    assert_eq!(st, 400, "{b}");
    e.wait_snapshot(&sid, "error");
    // Force delete takes any status.
    ok(&e.srv.cinder(&["snapshot-reset-state", "--state", "creating", &sid]), "reset to creating");
    let (st, b) = e.req("POST", &format!("/v3/snapshots/{sid}/action"), json!({"os-force_delete": {}}));
    assert_eq!(st, 202, "{b}");
    let (st, _) = e.srv.http("GET", &format!("/v3/snapshots/{sid}"), None);
    assert_eq!(st, 404, "force-deleted");
}

#[test]
fn reset_state_bootable_readonly_and_force_delete() {
    let e = Env::start();
    let id = plain_volume(&e, "acts", 1);
    ok(&e.srv.cinder(&["reset-state", "--state", "error", &id]), "cinder reset-state");
    assert_eq!(e.srv.volume(&id)["status"], "error");
    failed(&e.srv.cinder(&["reset-state", "--state", "frobbed", &id]), "bad state");
    let (st, b) = e.action(&id, json!({"os-reset_status": {"status": "frobbed"}}));
    assert_eq!(st, 400, "{b}");
    error_body(&b, "badRequest", 400);
    let (st, b) = e.action(&id, json!({"os-reset_status": {}}));
    assert_eq!(st, 400, "{b}");
    let (st, b) = e.action(&id, json!({"os-reset_status": {"status": "available", "attach_status": "sideways"}}));
    assert_eq!(st, 400, "{b}");
    assert_eq!(e.srv.volume(&id)["status"], "error", "nothing changed");
    ok(&e.srv.openstack(&["volume", "set", "--state", "available", &id]), "openstack volume set --state");
    assert_eq!(e.srv.volume(&id)["status"], "available");

    ok(&e.srv.cinder(&["set-bootable", &id, "true"]), "cinder set-bootable");
    assert_eq!(e.srv.volume(&id)["bootable"], "true");
    let (st, b) = e.action(&id, json!({"os-set_bootable": {"bootable": "maybe"}}));
    assert_eq!(st, 400, "{b}");
    let (st, b) = e.action(&id, json!({"os-set_bootable": {}}));
    assert_eq!(st, 400, "{b}");
    assert_eq!(e.srv.volume(&id)["bootable"], "true", "nothing changed");
    ok(&e.srv.openstack(&["volume", "set", "--non-bootable", &id]), "openstack volume set --non-bootable");
    assert_eq!(e.srv.volume(&id)["bootable"], "false");
    let (st, l) = e.srv.http("GET", "/v3/volumes/detail?bootable=false", None);
    assert_eq!(st, 200);
    assert!(l["volumes"].as_array().unwrap().iter().any(|v| v["id"] == id.as_str()), "{l}");

    ok(&e.srv.cinder(&["readonly-mode-update", &id, "true"]), "cinder readonly-mode-update");
    assert_eq!(e.srv.volume(&id)["metadata"]["readonly"], "True");
    let (st, a) = e.req("POST", "/v3/attachments", json!({"attachment": {"volume_uuid": id, "instance_uuid": "srv-1"}}));
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["attachment"]["attach_mode"], "ro", "a read-only volume is attached read-only: {a}");
    let (st, b) = e.srv.http("DELETE", &format!("/v3/attachments/{}", a["attachment"]["id"].as_str().unwrap()), None);
    assert_eq!(st, 200, "{b}");
    assert_eq!(e.srv.wait_settled(&id)["status"], "available");
    let (st, b) = e.action(&id, json!({"os-update_readonly_flag": {"readonly": "perhaps"}}));
    assert_eq!(st, 400, "{b}");
    ok(&e.srv.openstack(&["volume", "set", "--read-write", &id]), "openstack volume set --read-write");
    assert_eq!(e.srv.volume(&id)["metadata"]["readonly"], "False");

    // A status an admin reset to `creating` has no job behind it: force delete takes it.
    ok(&e.srv.cinder(&["reset-state", "--state", "creating", &id]), "reset to creating");
    let (st, b) = e.srv.http("DELETE", &format!("/v3/volumes/{id}"), None);
    assert_eq!(st, 400, "a plain delete refuses a creating volume: {b}");
    ok(&e.srv.cinder(&["force-delete", &id]), "cinder force-delete");
    let start = Instant::now();
    while e.srv.http("GET", &format!("/v3/volumes/{id}"), None).0 != 404 {
        assert!(start.elapsed() < Duration::from_secs(60), "force delete did not finish");
        std::thread::sleep(Duration::from_millis(25));
    }
    failed(&e.srv.cinder(&["force-delete", &id]), "force delete of a deleted volume");
    let (st, b) = e.action(&id, json!({"os-force_delete": {}}));
    assert_eq!(st, 404, "{b}");
}

#[test]
fn extend_keeps_encrypted_data_valid() {
    require_cryptsetup();
    let e = Env::start();
    for provider in ["luks", "luks2"] {
        let t = e.srv.create_type(&format!("enc-{provider}"), Some(provider), &[]);
        let v = e.srv.create_volume(json!({"volume": {"size": 1, "volume_type": t}}));
        let id = v["id"].as_str().unwrap().to_owned();
        let path = volume_path(e.srv.data_dir.as_path(), &id);
        let pass = passphrase(e.srv.data_dir.as_path(), v["encryption_key_id"].as_str().unwrap());
        write_plaintext(&path, &pass, &pattern(7));

        refused(&e.srv.cinder(&["extend", &id, "1"]), 400, "extend to the same size");
        let (st, b) = e.action(&id, json!({"os-extend": {"new_size": "two"}}));
        assert_eq!(st, 400, "{b}");
        let (st, b) = e.action(&id, json!({"os-extend": {"new_size": null}}));
        assert_eq!(st, 400, "{b}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 30, "nothing grew");

        ok(&e.srv.cinder(&["extend", &id, "2"]), "cinder extend");
        let after = e.srv.wait_settled(&id);
        assert_eq!((after["size"].clone(), after["status"].clone()), (json!(2), json!("available")), "{after}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 30);
        assert!(cryptsetup_opens(&path, &pass), "{provider}: the key still opens it");
        assert!(read_plaintext(&path, &pass, 1 << 20).iter().all(|b| *b == pattern(7)), "{provider}: data kept");
        // The data area covers the new space: cryptsetup maps 2 GiB less the header.
        let dump = String::from_utf8_lossy(&std::process::Command::new("cryptsetup").arg("luksDump").arg(&path).output().unwrap().stdout).into_owned();
        if provider == "luks2" {
            assert!(dump.contains("length: (whole device)"), "dynamic segment: {dump}");
        }
        let plain = rekey_luks::Volume::open(rekey_luks::FileIo::open(&path).unwrap()).unwrap().decrypted(&pass).unwrap();
        let size = plain.size().unwrap();
        assert!(size > (2 << 30) - (32 << 20), "{provider}: plaintext is {size} bytes");
        plain.write_at(&pattern(9), size - (1 << 20)).unwrap();
        plain.flush().unwrap();
        drop(plain);
        assert!(cryptsetup_opens(&path, &pass));
        ok(&e.srv.openstack(&["volume", "set", "--size", "3", &id]), "openstack volume set --size");
        assert_eq!(e.srv.wait_settled(&id)["size"], 3);
    }
}

#[test]
fn retype_as_cinder_decides() {
    let e = Env::start();
    e.srv.create_type("plain-a", None, &[]);
    e.srv.create_type("plain-b", None, &[]);
    e.srv.create_type("enc", Some("luks2"), &[]);
    let v = e.srv.create_volume(json!({"volume": {"size": 1, "volume_type": "plain-a"}}));
    let id = v["id"].as_str().unwrap().to_owned();
    ok(&e.srv.cinder(&["retype", &id, "plain-b"]), "cinder retype");
    assert_eq!(e.srv.volume(&id)["volume_type"], "plain-b");
    refused(&e.srv.cinder(&["retype", &id, "enc"]), 400, "retype into encryption with migration_policy never");
    refused(&e.srv.cinder(&["retype", "--migration-policy", "on-demand", &id, "enc"]), 400, "on-demand retype into encryption");
    refused(&e.srv.cinder(&["retype", &id, "no-such-type"]), 404, "retype to no type");
    let (st, b) = e.action(&id, json!({"os-retype": {"new_type": "plain-a", "migration_policy": "sometimes"}}));
    assert_eq!(st, 400, "{b}");
    ok(&e.srv.openstack(&["volume", "set", "--type", "plain-a", &id]), "openstack volume set --type");
    assert_eq!(e.srv.volume(&id)["volume_type"], "plain-a");
    let (st, b) = e.action(&id, json!({"os-retype": {"new_type": "enc"}}));
    assert_eq!(st, 400, "{b}");
    assert_eq!(e.srv.volume(&id)["volume_type"], "plain-a", "nothing changed");
}

#[test]
fn summary_and_list_paging() {
    let e = Env::start();
    let mut ids = Vec::new();
    for (i, m) in ["x", "y", "x"].iter().enumerate() {
        let v = e.srv.create_volume(json!({"volume": {"size": i + 1, "name": format!("p{i}"), "metadata": {"k": m}}}));
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let text = ok(&e.srv.cinder(&["summary"]), "cinder summary");
    assert!(text.contains("total_count") && text.contains('3') && text.contains('6'), "{text}");
    let (st, s) = e.srv.http("GET", "/v3/volumes/summary", None);
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["volume-summary"], json!({"total_count": 3, "total_size": 6, "metadata": {"k": ["x", "y"]}}));

    let mut sorted = ids.clone();
    sorted.sort();
    let (st, l) = e.srv.http("GET", "/v3/volumes?sort=id:asc&limit=2", None);
    assert_eq!(st, 200, "{l}");
    let got: Vec<&str> = l["volumes"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(got, &sorted[..2]);
    let next = l["volumes_links"][0]["href"].as_str().unwrap();
    assert!(next.ends_with(&format!("/v3/volumes?sort=id:asc&limit=2&marker={}", sorted[1])), "{next}");
    let (_, l) = e.srv.http("GET", &format!("/v3/volumes?sort=id:asc&limit=2&marker={}", sorted[1]), None);
    assert_eq!(l["volumes"][0]["id"], sorted[2].as_str());
    assert!(l.get("volumes_links").is_none(), "a short page has no next link: {l}");
    let (_, l) = e.srv.http("GET", "/v3/volumes/detail?sort_key=size&sort_dir=asc&metadata=%7B%27k%27%3A+%27x%27%7D", None);
    let sizes: Vec<i64> = l["volumes"].as_array().unwrap().iter().map(|v| v["size"].as_i64().unwrap()).collect();
    assert_eq!(sizes, vec![1, 3], "{l}");

    for (q, code) in [("sort=colour:asc", 400), ("sort_key=id&sort_dir=up", 400), ("limit=-1", 400), ("limit=x", 400), ("offset=-1", 400), ("marker=nope", 404)] {
        let (st, b) = e.srv.http("GET", &format!("/v3/volumes/detail?{q}"), None);
        assert_eq!(st, code, "{q}: {b}");
    }
    let (st, b) = e.srv.http("GET", "/v3/snapshots?limit=-1", None);
    assert_eq!(st, 400, "{b}");
}

#[test]
fn backup_export_import_and_reset() {
    let e = Env::start();
    let v = e.srv.create_volume(json!({"volume": {"size": 1, "name": "bk", "metadata": {"m": "1"}}}));
    let vid = v["id"].as_str().unwrap().to_owned();
    let (st, b) = e.req("POST", "/v3/backups", json!({"backup": {"volume_id": vid, "name": "b1"}}));
    assert_eq!(st, 202, "{b}");
    let bid = b["backup"]["id"].as_str().unwrap().to_owned();
    e.wait_backup(&bid, "available");

    let out = e.srv.cinder(&["backup-export", &bid]);
    let service = table_field(&out, "backup_service");
    let url = table_field(&out, "backup_url");
    assert!(service.starts_with("cinder.backup.drivers"), "{service}");

    // The same record again: it exists.
    refused(&e.srv.cinder(&["backup-import", &service, &url]), 400, "import of a backup that exists");
    refused(&e.srv.cinder(&["backup-import", "cinder.backup.drivers.swift", &url]), 400, "import for another driver");
    refused(&e.srv.cinder(&["backup-import", &service, "not-base64!"]), 400, "import of garbage");

    // Under a new id, as tempest does: its own data and key, restorable.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut rec: Value = serde_json::from_slice(&b64.decode(&url).unwrap()).unwrap();
    let new_id = "5f2b7c1e-0d6a-4c9e-9a55-3a3c2f1b0e11";
    rec["id"] = json!(new_id);
    let new_url = b64.encode(rec.to_string());
    let out = ok(&e.srv.cinder(&["backup-import", &service, &new_url]), "cinder backup-import");
    assert!(out.contains(new_id), "{out}");
    e.wait_backup(new_id, "available");
    let (st, l) = e.srv.http("GET", "/v3/backups/detail?sort=id:asc&limit=1", None);
    assert_eq!(st, 200, "{l}");
    let first = if bid.as_str() < new_id { bid.as_str() } else { new_id };
    assert_eq!(l["backups"].as_array().map(|a| (a.len(), a[0]["id"].clone())), Some((1, json!(first))), "{l}");
    for (q, code) in [("sort=colour:asc", 400), ("limit=-2", 400), ("marker=nope", 404)] {
        let (st, b) = e.srv.http("GET", &format!("/v3/backups?{q}"), None);
        assert_eq!(st, code, "{q}: {b}");
    }
    let (st, b) = e.srv.http("DELETE", &format!("/v3/backups/{bid}"), None);
    assert_eq!(st, 202, "{b}");
    let (st, r) = e.req("POST", &format!("/v3/backups/{new_id}/restore"), json!({"restore": {"name": "from-import"}}));
    assert_eq!(st, 202, "{r}");
    let restored = e.srv.wait_settled(r["restore"]["volume_id"].as_str().unwrap());
    assert_eq!(restored["status"], "available", "{restored}");
    assert_eq!(restored["metadata"], json!({"m": "1"}), "a restore gives back the volume's metadata");

    ok(&e.srv.cinder(&["backup-reset-state", "--state", "error", new_id]), "cinder backup-reset-state");
    e.wait_backup(new_id, "error");
    failed(&e.srv.cinder(&["backup-reset-state", "--state", "creating", new_id]), "bad backup state");
    let (st, b) = e.req("POST", &format!("/v3/backups/{new_id}/action"), json!({"os-reset_status": {"status": "creating"}}));
    assert_eq!(st, 400, "{b}");
    e.wait_backup(new_id, "error");
    let (st, b) = e.req("PUT", &format!("/v3/backups/{new_id}"), json!({"backup": {"name": "renamed"}}));
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["backup"]["name"], "renamed");
    assert_no_orphan_keys(e.srv.data_dir.as_path(), "backup import");
}

#[test]
fn backup_of_a_snapshot() {
    require_cryptsetup();
    let e = Env::start();
    let t = e.srv.create_type("enc-snap", Some("luks2"), &[]);
    let v = e.srv.create_volume(json!({"volume": {"size": 1, "volume_type": t}}));
    let vid = v["id"].as_str().unwrap().to_owned();
    let other = plain_volume(&e, "other", 1);
    let path = volume_path(e.srv.data_dir.as_path(), &vid);
    let pass = passphrase(e.srv.data_dir.as_path(), v["encryption_key_id"].as_str().unwrap());
    write_plaintext(&path, &pass, &pattern(3));
    let (st, s) = e.req("POST", "/v3/snapshots", json!({"snapshot": {"volume_id": vid}}));
    assert_eq!(st, 202, "{s}");
    let sid = s["snapshot"]["id"].as_str().unwrap().to_owned();
    e.wait_snapshot(&sid, "available");
    // The volume changes after the snapshot: the backup has the snapshot's data.
    write_plaintext(&path, &pass, &pattern(4));

    let (st, b) = e.req("POST", "/v3/backups", json!({"backup": {"volume_id": other, "snapshot_id": sid}}));
    assert_eq!(st, 400, "a snapshot of another volume: {b}");
    let (st, b) = e.req("POST", "/v3/backups", json!({"backup": {"volume_id": vid, "snapshot_id": "00000000-0000-0000-0000-000000000000"}}));
    assert_eq!(st, 404, "{b}");
    let out = ok(&e.srv.cinder(&["backup-create", "--snapshot-id", &sid, &vid]), "cinder backup-create --snapshot-id");
    let bid = out.lines().find(|l| l.contains("| id ")).and_then(|l| l.split('|').nth(2)).unwrap().trim().to_owned();
    let b = e.wait_backup(&bid, "available");
    assert_eq!((b["snapshot_id"].as_str(), b["volume_id"].as_str()), (Some(sid.as_str()), Some(vid.as_str())), "{b}");

    let (st, r) = e.req("POST", &format!("/v3/backups/{bid}/restore"), json!({"restore": {"name": "from-snap-backup"}}));
    assert_eq!(st, 202, "{r}");
    let restored = e.srv.wait_settled(r["restore"]["volume_id"].as_str().unwrap());
    assert_eq!(restored["status"], "available", "{restored}");
    let rpath = volume_path(e.srv.data_dir.as_path(), restored["id"].as_str().unwrap());
    let rpass = passphrase(e.srv.data_dir.as_path(), restored["encryption_key_id"].as_str().unwrap());
    assert!(read_plaintext(&rpath, &rpass, 1 << 20).iter().all(|b| *b == pattern(3)), "the snapshot's data, not the volume's now");
    assert!(!cryptsetup_opens(&rpath, &pass), "the restored volume does not open with the source's key");
    assert_no_orphan_keys(e.srv.data_dir.as_path(), "backup of a snapshot");
}

#[test]
fn accepted_transfer_is_the_recipients_at_once() {
    let e = Env::start();
    let id = plain_volume(&e, "gift", 1);
    let (st, t) = e.req("POST", "/v3/volume-transfers", json!({"transfer": {"volume_id": id}}));
    assert_eq!(st, 202, "{t}");
    let (tid, key) = (t["transfer"]["id"].as_str().unwrap(), t["transfer"]["auth_key"].as_str().unwrap());
    let (st, _) = e.srv.http_as("bob", "GET", &format!("/v3/volumes/{id}"), None);
    assert_eq!(st, 404, "not bob's before the accept");
    let body = json!({"accept": {"auth_key": key}}).to_string();
    let (st, a) = e.srv.http_as("bob", "POST", &format!("/v3/volume-transfers/{tid}/accept"), Some(body.as_bytes()));
    assert_eq!(st, 202, "{a}");
    let (st, v) = e.srv.http_as("bob", "GET", &format!("/v3/volumes/{id}"), None);
    assert_eq!(st, 200, "bob's right after the accept, while the job moves it: {v}");
    let start = Instant::now();
    loop {
        let (_, v) = e.srv.http_as("bob", "GET", &format!("/v3/volumes/{id}"), None);
        if v["volume"]["status"] == "available" {
            assert_eq!(v["volume"]["os-vol-tenant-attr:tenant_id"], "bob", "{v}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "accept stuck: {v}");
        std::thread::sleep(Duration::from_millis(25));
    }
    let (st, _) = e.srv.http("GET", &format!("/v3/volumes/{id}"), None);
    assert_eq!(st, 404, "no longer the donor's");
}
