//! The key-independence audit on a fixture: volumes cloned with
//! `rekey:mode=none` (Cinder's old behaviour) are reported as sharing a
//! passphrase and a volume key; independently created volumes and volumes
//! made through the rekeying paths are not reported as sharing a passphrase.

use serde_json::{json, Value};

use crate::harness::*;
use crate::paths::{wait_volume, Env};

fn audit_cli(e: &Env) -> Value {
    let out = rekey(&["volume", "audit", "--json", "--data-dir", e.data().to_str().unwrap()]);
    serde_json::from_str(&out).expect("audit JSON")
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
    e.srv.create_type("NONE", Some("luks"), &[("rekey:mode", "none")]);
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

    // Deleting all but one of the group leaves nothing to report.
    for id in &group[1..] {
        let (st, _) = e.srv.http("DELETE", &format!("/v3/volumes/{id}"), None);
        assert_eq!(st, 202);
        while e.srv.http("GET", &format!("/v3/volumes/{id}"), None).0 != 404 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let _ = wait_volume(&e.srv, PROJECT, &group[0]);
    let r = audit_cli(&e);
    assert_eq!((r["shared_passphrases"].clone(), r["shared_volume_keys"].clone()), (json!([]), json!([])), "{r}");
}
