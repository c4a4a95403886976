//! Volume, clone and delete through the `openstack` CLI with keys in Vault.

use crate::harness::*;
use crate::*;

/// Each volume has its own KV entry whose `value` opens it and nothing else;
/// deleting a volume destroys every version of its entry.
#[test]
fn volume_and_clone_each_have_a_vault_entry_that_opens_only_them() {
    venv();
    require_cryptsetup();
    let bao = Bao::from_env();
    let kv = kv_path("clone");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = serve_on_vault(&data, &bao, &kv);
    make_type(&srv);

    let src = json_ok(&srv.openstack(&["volume", "create", "--size", "1", "--type", "LUKS", "src", "-f", "json"]));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let src = srv.wait_settled(&src_id);
    assert_eq!(src["status"], "available", "{src}");
    let src_key = src["encryption_key_id"].as_str().expect("key id").to_owned();
    let src_pass = bao.value(&kv, &src_key);
    assert_eq!(src_pass.len(), 64);
    let src_path = volume_path(&data, &src_id);
    assert!(cryptsetup_opens(&src_path, src_pass.as_bytes()), "the source's Vault value opens it");

    let clone = json_ok(&srv.openstack(&["volume", "create", "--source", "src", "clone", "-f", "json"]));
    let clone_id = clone["id"].as_str().unwrap().to_owned();
    let clone = srv.wait_settled(&clone_id);
    assert_eq!(clone["status"], "available", "{clone}");
    let clone_key = clone["encryption_key_id"].as_str().expect("clone key id").to_owned();
    assert_ne!(clone_key, src_key, "the clone has its own key");
    let clone_pass = bao.value(&kv, &clone_key);
    let clone_path = volume_path(&data, &clone_id);
    assert!(cryptsetup_opens(&clone_path, clone_pass.as_bytes()), "the clone's Vault value opens the clone");
    assert!(!cryptsetup_opens(&src_path, clone_pass.as_bytes()), "the clone's value must not open the source");
    assert!(!cryptsetup_opens(&clone_path, src_pass.as_bytes()), "the source's value must not open the clone");

    // The audit counts the Vault's keys against the records: both volumes'
    // are referenced, a stray key of the project is not.
    let toml = dir.path().join("vault.toml");
    std::fs::write(&toml, format!("[key_manager]\nbackend = \"vault\"\nurl = \"{}\"\ntoken = \"{}\"\nkv_path = \"{kv}\"\n", bao.url, bao.token)).unwrap();
    let stray = uuid::Uuid::new_v4().simple().to_string();
    let record = serde_json::json!({"data": {"type": "symmetric", "value": "00".repeat(32), "algorithm": "aes",
        "bit_length": 256, "name": null, "created": 0, "project_id": PROJECT}});
    assert_eq!(bao.call("POST", &format!("/v1/secret/data/{kv}/{stray}"), Some(&record)).0, 200);
    let audit = rekey(&["volume", "audit", "--json", "--data-dir", data.to_str().unwrap(), "--config", toml.to_str().unwrap()]);
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(audit["key_managers"], serde_json::json!([{"backend": "vault", "referenced": 2, "unreferenced": 1}]), "{audit}");
    assert_eq!(bao.call("DELETE", &format!("/v1/secret/metadata/{kv}/{stray}"), None).0, 204);

    let out = srv.openstack(&["volume", "delete", "clone"]);
    assert!(out.status.success(), "delete: {}", String::from_utf8_lossy(&out.stderr));
    wait_gone(&srv, &clone_id);
    assert_eq!(bao.metadata_status(&kv, &clone_key), 404, "no version of the clone's key is left to undelete");
    assert_eq!(bao.metadata_status(&kv, &src_key), 200, "the source's key stays");
}

/// Vault flags that cannot work are refused at start with what to do.
#[test]
fn bad_vault_flags_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    for (args, says) in [
        (vec!["--key-manager", "vault"], "--vault-url"),
        (vec!["--key-manager", "vault", "--vault-url", "http://127.0.0.1:1"], "--vault-token"),
        (vec!["--vault-kv-path", "x", "--key-manager", "embedded"], "need --key-manager vault"),
        (vec!["--vault-url", "http://127.0.0.1:1", "--barbican-url", "http://127.0.0.1:2"], "exclude each other"),
        (vec!["--key-manager", "vault", "--vault-url", "http://127.0.0.1:1", "--vault-approle-role-id", "r"], "--vault-approle-secret-id"),
    ] {
        let out = std::process::Command::new(REKEY)
            .args(["serve", "--data-dir", d, "--listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove("REKEY_VAULT_TOKEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must be refused");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
