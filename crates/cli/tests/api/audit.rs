//! The key-independence audit on a fixture: volumes cloned with
//! `rekey:mode=none` (Cinder's old behaviour) are reported as sharing a
//! passphrase and a volume key; independently created volumes and volumes
//! made through the rekeying paths are not reported as sharing a passphrase.
//! After the `os-rekey` action re-encrypts the group in volume-key mode, the
//! audit reports nothing, and cryptsetup agrees the volume keys differ.

use serde_json::{json, Value};

use crate::harness::*;
use crate::paths::Env;

fn audit_cli(e: &Env) -> Value {
    audit_json(e.data())
}

fn sorted(v: &Value) -> Vec<Vec<String>> {
    let mut g: Vec<Vec<String>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["volumes"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .collect();
    g.sort();
    g
}

#[test]
fn audit_reports_exactly_the_mode_none_groups() {
    let e = Env::start();
    e.srv.create_type("NONE", Some("luks2"), &[("rekey:mode", "none")]);
    e.srv.create_type("KS", Some("luks2"), &[]);
    let src = e.srv.create_volume(json!({"volume": {"size": 1, "name": "src", "volume_type": "NONE"}}));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let mut group = vec![src_id.clone()];
    for n in ["c1", "c2"] {
        let c = e.srv.create_volume(json!({"volume": {"name": n, "source_volid": src_id}}));
        assert_eq!(c["status"], "available", "{c}");
        group.push(c["id"].as_str().unwrap().to_owned());
    }
    group.sort();
    // Independent volumes: created fresh.
    for n in ["a", "b"] {
        let v = e.srv.create_volume(json!({"volume": {"size": 1, "name": n, "volume_type": "KS"}}));
        assert_eq!(v["status"], "available");
    }

    let r = audit_cli(&e);
    assert_eq!(r["volumes"], 5);
    assert_eq!(r["encrypted"], 5);
    assert_eq!(r["shared_key_ids"], json!([]), "no two records share a key id");
    assert_eq!(r["unreferenced_keys"], json!([]), "every key the service made is named by a record");
    assert_eq!(sorted(&r["shared_passphrases"]), vec![group.clone()]);
    assert_eq!(sorted(&r["shared_volume_keys"]), vec![group.clone()]);
    let fix = r["shared_volume_keys"][0]["fix"].as_str().unwrap();
    assert!(fix.contains("volume-key"), "{fix}");
    // Fingerprints only: no key id's bytes (passphrase) appear in the report.
    let text = r.to_string();
    for id in &group {
        let key = e.srv.volume(id)["encryption_key_id"].as_str().unwrap().to_owned();
        let pass = String::from_utf8(passphrase(e.data(), &key)).unwrap();
        assert!(!text.contains(&pass), "the report must not contain a passphrase");
    }
    // The admin API says the same.
    let (st, api) = e.srv.http("GET", "/v3/os-rekey/audit", None);
    assert_eq!(st, 200, "{api}");
    assert_eq!(sorted(&api["audit"]["shared_passphrases"]), vec![group.clone()]);
    assert_eq!(api["audit"]["shared_volume_keys"][0]["fingerprint"], r["shared_volume_keys"][0]["fingerprint"], "same secret, same fingerprints");

    // The fix the audit names: re-encrypt all but one under a new volume key.
    let pass_of = |id: &str| passphrase(e.data(), e.srv.volume(id)["encryption_key_id"].as_str().unwrap());
    let src_pass = pass_of(&group[0]);
    write_plaintext(&volume_path(e.data(), &group[1]), &src_pass, &pattern(3));
    let src_vk = volume_key_hex(&volume_path(e.data(), &group[0]), &src_pass);
    let old_keys: Vec<String> = group[1..].iter().map(|id| e.srv.volume(id)["encryption_key_id"].as_str().unwrap().to_owned()).collect();
    for id in &group[1..] {
        let (st, body) = e.srv.http("POST", &format!("/v3/volumes/{id}/action"), Some(br#"{"os-rekey": {"mode": "volume-key"}}"#));
        assert_eq!(st, 202, "{body}");
    }
    for id in &group[1..] {
        let v = e.srv.wait_settled(id);
        assert_eq!(v["status"], "available", "{v}");
        let path = volume_path(e.data(), id);
        let pass = pass_of(id);
        assert!(cryptsetup_opens(&path, &pass), "rekeyed volume {id} opens with its new key");
        assert!(!cryptsetup_opens(&path, &src_pass), "rekeyed volume {id} must not open with the group's passphrase");
        assert_eq!(cryptsetup_keyslots(&path), 1);
        assert_ne!(volume_key_hex(&path, &pass), src_vk, "volume {id} still has the group's volume key");
    }
    let new_pass = pass_of(&group[1]);
    for (i, got) in read_plaintext(&volume_path(e.data(), &group[1]), &new_pass, pattern(3).len()).iter().enumerate() {
        assert!(got == &pattern(3), "plaintext changed by the re-encryption at offset #{i}");
    }
    for k in &old_keys {
        let t0 = std::time::Instant::now();
        while key_exists(e.data(), k) {
            assert!(t0.elapsed() < std::time::Duration::from_secs(30), "old key {k} not deleted");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let r = audit_cli(&e);
    assert_eq!(r["encrypted"], 5, "{r}");
    assert_eq!(r["errors"], json!([]), "{r}");
    assert_eq!((r["shared_passphrases"].clone(), r["shared_volume_keys"].clone()), (json!([]), json!([])), "{r}");
    assert_eq!(r["shared_key_ids"], json!([]));
}

#[test]
fn os_rekey_keyslot_mode_and_bad_requests() {
    let e = Env::start();
    e.srv.create_type("V1", Some("luks"), &[]);
    e.srv.create_type("PLAIN", None, &[]);
    let v1 = e.srv.create_volume(json!({"volume": {"size": 1, "name": "v1", "volume_type": "V1"}}));
    let v1_id = v1["id"].as_str().unwrap().to_owned();
    let plain = e.srv.create_volume(json!({"volume": {"size": 1, "name": "p", "volume_type": "PLAIN"}}));
    let plain_id = plain["id"].as_str().unwrap().to_owned();
    let action = |id: &str, body: &str| e.srv.http("POST", &format!("/v3/volumes/{id}/action"), Some(body.as_bytes()));
    let msg = |b: &Value| b["badRequest"]["message"].as_str().unwrap_or_default().to_owned();

    // Bad requests: a clear 400/404, the volume untouched.
    let key_before = v1["encryption_key_id"].clone();
    let (st, b) = action(&v1_id, r#"{"os-rekey": {"mode": "volume-key"}}"#);
    assert_eq!(st, 400, "LUKS1 cannot be re-encrypted: {b}");
    assert!(msg(&b).contains("LUKS2"), "{b}");
    let (st, b) = action(&v1_id, r#"{"os-rekey": {"mode": "sideways"}}"#);
    assert_eq!(st, 400, "{b}");
    let (st, b) = action(&v1_id, r#"{"os-rekey": {"mode": "keyslot", "extra": 1}}"#);
    assert_eq!(st, 400, "{b}");
    let (st, b) = action(&v1_id, r#"{"os-frobnicate": {}}"#);
    assert_eq!(st, 400, "{b}");
    assert!(msg(&b).contains("os-frobnicate"), "{b}");
    let (st, b) = action(&v1_id, r#"{"os-rekey": {}, "os-extend": {"new_size": 2}}"#);
    assert_eq!(st, 400, "{b}");
    let (st, b) = action(&v1_id, "not json");
    assert_eq!(st, 400, "{b}");
    let (st, b) = action(&plain_id, r#"{"os-rekey": {"mode": "keyslot"}}"#);
    assert_eq!(st, 400, "an unencrypted volume has no key: {b}");
    let (st, b) = action("00000000-0000-0000-0000-000000000000", r#"{"os-rekey": {}}"#);
    assert_eq!(st, 404, "{b}");
    let (st, b) = e.srv.http_as("someone-else", "POST", &format!("/v3/volumes/{v1_id}/action"), Some(br#"{"os-rekey": {"mode": "keyslot"}}"#));
    assert_eq!(st, 404, "another project's volume is not found: {b}");
    let v = e.srv.volume(&v1_id);
    assert_eq!((v["status"].clone(), v["encryption_key_id"].clone()), (json!("available"), key_before.clone()));

    // keyslot mode on LUKS1: a new key, same data, the old key deleted.
    let path = volume_path(e.data(), &v1_id);
    let old_pass = passphrase(e.data(), key_before.as_str().unwrap());
    write_plaintext(&path, &old_pass, &pattern(9));
    let old_vk = volume_key_hex(&path, &old_pass);
    let (st, b) = action(&v1_id, r#"{"os-rekey": {"mode": "keyslot"}}"#);
    assert_eq!(st, 202, "{b}");
    let v = e.srv.wait_settled(&v1_id);
    assert_eq!(v["status"], "available", "{v}");
    assert_ne!(v["encryption_key_id"], key_before);
    let new_pass = passphrase(e.data(), v["encryption_key_id"].as_str().unwrap());
    assert!(cryptsetup_opens(&path, &new_pass));
    assert!(!cryptsetup_opens(&path, &old_pass), "the old passphrase must no longer open it");
    assert_eq!(cryptsetup_keyslots(&path), 1);
    assert_eq!(volume_key_hex(&path, &new_pass), old_vk, "keyslot mode keeps the volume key");
    for got in read_plaintext(&path, &new_pass, pattern(9).len()) {
        assert!(got == pattern(9));
    }
    let t0 = std::time::Instant::now();
    while key_exists(e.data(), key_before.as_str().unwrap()) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "old key not deleted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
