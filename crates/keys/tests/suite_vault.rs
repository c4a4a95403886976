//! The behavioural suite against a real OpenBao at `REKEY_VAULT_URL`, once
//! with its root token and once with AppRole (start it with
//! `scripts/openbao.sh start`, which also makes the AppRole). Fails when it
//! is missing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rekey_keys::{ErrorKind, KeyBytes, KeyManager};

mod token {
    use super::*;
    async fn real_vault() -> (Arc<dyn KeyManager>, ()) {
        (common::vault_with(common::vault_config(false)).await, ())
    }
    suite_tests!(real_vault());
}

mod approle {
    use super::*;
    async fn real_vault() -> (Arc<dyn KeyManager>, ()) {
        (common::vault_with(common::vault_config(true)).await, ())
    }
    suite_tests!(real_vault());
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn root() -> String {
    common::vault_env("REKEY_VAULT_TOKEN")
}

/// The key sits where castellan looks for it, as castellan writes it, and a
/// delete leaves no version behind (castellan's own delete is a soft one).
#[tokio::test]
async fn keys_use_castellans_layout_and_delete_destroys_every_version() {
    let config = common::vault_config(false);
    let kv_path = config.kv_path.clone().unwrap();
    let km = common::vault_with(config).await;
    let p = common::project("layout");
    let key = common::key_with_leading_zeros(32);
    let id = km.store_named_key(&p, Some("vol-1"), &key, "aes", 256).await.unwrap();
    let hex_id = id.as_str().replace('-', "");
    let url = common::vault_env("REKEY_VAULT_URL");
    let data_url = format!("{url}/v1/secret/data/{kv_path}/{hex_id}");
    let meta_url = format!("{url}/v1/secret/metadata/{kv_path}/{hex_id}");

    let answer: serde_json::Value = http()
        .get(&data_url)
        .header("X-Vault-Token", root())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = &answer["data"]["data"];
    assert_eq!(record["type"], "symmetric");
    assert_eq!(record["value"], hex::encode(key.expose()));
    assert_eq!(record["algorithm"], "aes");
    assert_eq!(record["bit_length"], 256);
    assert_eq!(record["name"], "vol-1");
    assert!(record["created"].is_i64(), "created is an integer as castellan makes it: {}", record["created"]);

    km.delete_key(&p, &id).await.unwrap();
    let meta = http().get(&meta_url).header("X-Vault-Token", root()).send().await.unwrap();
    assert_eq!(meta.status(), 404, "metadata (and so every version) is gone");
    let data = http().get(&data_url).header("X-Vault-Token", root()).send().await.unwrap();
    assert_eq!(data.status(), 404);
}

/// A key castellan wrote (no project, castellan's odd `name`) is readable by
/// rekey; keys in a sub-folder or not named by a UUID are not listed.
#[tokio::test]
async fn castellan_shaped_records_are_read() {
    let config = common::vault_config(false);
    let kv_path = config.kv_path.clone().unwrap();
    let km = common::vault_with(config).await;
    let url = common::vault_env("REKEY_VAULT_URL");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = common::key_with_leading_zeros(64);
    let record = serde_json::json!({"data": {"type": "symmetric", "value": hex::encode(key.expose()),
        "algorithm": "AES", "bit_length": 512, "name": id, "created": 1_700_000_000}});
    for path in [id.clone(), "folder/x".into(), "not-a-uuid".into()] {
        let r = http()
            .post(format!("{url}/v1/secret/data/{kv_path}/{path}"))
            .header("X-Vault-Token", root())
            .json(&record)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let p = common::project("castellan");
    let kid = rekey_keys::KeyId::parse(&id).unwrap();
    assert_eq!(km.get_key(&p, &kid).await.unwrap(), key);
    assert!(km.exists(&p, &kid).await.unwrap());
    assert!(km.list(&p).await.unwrap().is_empty(), "a project lists only the keys stamped with it");
    km.delete_key(&p, &kid).await.unwrap();
    assert_eq!(km.get_key(&p, &kid).await.unwrap_err().kind(), ErrorKind::NotFound);
}

/// An AppRole token with a 6 s TTL and a 20 s maximum, used every 1.5 s,
/// keeps working for 30 s: the client renews it before it expires and logs
/// in again once Vault stops renewing it.
#[tokio::test]
async fn approle_token_is_renewed_past_its_ttl() {
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).try_init().expect("install the capturing subscriber");
    let km = common::vault_with(common::vault_config(true)).await;
    let p = common::project("renew");
    let id = km.create_key(&p, "aes", 256).await.unwrap();
    let key = km.get_key(&p, &id).await.unwrap();
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let again = km.get_key(&p, &id).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(again, key);
    }
    km.delete_key(&p, &id).await.unwrap();
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("vault token renewed"), "the token was renewed before its TTL ended:\n{log}");
    assert!(log.contains("logging in again"), "at its max TTL the client logged in again:\n{log}");
    assert!(!log.contains("refused the AppRole token"), "no request was refused for an expired token:\n{log}");
}

/// Wrong credentials and a revoked token are `Forbidden` with Vault's words;
/// an address nobody listens on is `Unavailable` and says so.
#[tokio::test]
async fn refusals_and_outages_are_clear_errors() {
    let p = common::project("errors");
    let bad = common::vault_config(false).with_token(zeroize::Zeroizing::new("not-a-token".into()));
    let km = rekey_keys::open_key_manager(&rekey_keys::KeyManagerConfig::Vault(bad)).await.unwrap();
    let e = km.create_key(&p, "aes", 256).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    assert!(e.to_string().contains("permission denied"), "{e}");

    let bad = common::vault_config(true).with_approle(
        zeroize::Zeroizing::new(common::vault_env("REKEY_VAULT_ROLE_ID")),
        zeroize::Zeroizing::new("wrong-secret".into()),
    );
    let km = rekey_keys::open_key_manager(&rekey_keys::KeyManagerConfig::Vault(bad)).await.unwrap();
    let e = km.list(&p).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    assert!(e.to_string().contains("AppRole login refused"), "{e}");
    assert!(!e.to_string().contains("wrong-secret"), "{e}");

    let down = rekey_keys::VaultConfig::new("http://127.0.0.1:9")
        .with_token(zeroize::Zeroizing::new(root()))
        .with_retries(1, Duration::from_millis(10));
    let km = rekey_keys::open_key_manager(&rekey_keys::KeyManagerConfig::Vault(down)).await.unwrap();
    let e = km.get_key(&p, &rekey_keys::KeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("unreachable") && e.to_string().contains("2 attempts"), "{e}");
}

/// With `namespace`, every request carries `X-Vault-Namespace`: the key is
/// in that namespace's mount and not in the root namespace's.
#[tokio::test]
async fn namespace_keeps_keys_in_the_namespace() {
    let url = common::vault_env("REKEY_VAULT_URL");
    let ns = format!("rekey-test-{}", uuid::Uuid::new_v4().simple());
    let made = http().post(format!("{url}/v1/sys/namespaces/{ns}")).header("X-Vault-Token", root()).json(&serde_json::json!({})).send().await.unwrap();
    assert!(made.status().is_success(), "create namespace: {}", made.status());
    let mount = http()
        .post(format!("{url}/v1/sys/mounts/secret"))
        .header("X-Vault-Token", root())
        .header("X-Vault-Namespace", &ns)
        .json(&serde_json::json!({"type": "kv", "options": {"version": "2"}}))
        .send()
        .await
        .unwrap();
    assert!(mount.status().is_success(), "mount kv in the namespace: {}", mount.status());

    let mut config = common::vault_config(false);
    config.namespace = Some(ns.clone());
    let kv_path = config.kv_path.clone().unwrap();
    let km = common::vault_with(config).await;
    let p = common::project("ns");
    let key = KeyBytes::random(32).unwrap();
    let id = km.store_key(&p, &key, "aes", 256).await.unwrap();
    assert_eq!(km.get_key(&p, &id).await.unwrap(), key);
    let path = format!("{url}/v1/secret/data/{kv_path}/{}", id.as_str().replace('-', ""));
    let inside = http().get(&path).header("X-Vault-Token", root()).header("X-Vault-Namespace", &ns).send().await.unwrap();
    assert_eq!(inside.status(), 200, "the key is in the namespace");
    let outside = http().get(&path).header("X-Vault-Token", root()).send().await.unwrap();
    assert_eq!(outside.status(), 404, "and not in the root namespace");
    km.delete_key(&p, &id).await.unwrap();
}

/// The name index: an entry whose key is gone (a crash between the index
/// write and the key write, or a key destroyed behind rekey's back) is not
/// a find, and making the key again under the name repairs it.
#[tokio::test]
async fn name_index_entry_without_its_key_is_ignored() {
    let config = common::vault_config(false);
    let kv_path = config.kv_path.clone().unwrap();
    let km = common::vault_with(config).await;
    let url = common::vault_env("REKEY_VAULT_URL");
    let p = common::project("index");
    let id = km.create_named_key(&p, Some("rekey-job-x-new"), "aes", 256).await.unwrap();
    let gone = http()
        .delete(format!("{url}/v1/secret/metadata/{kv_path}/{}", id.as_str().replace('-', "")))
        .header("X-Vault-Token", root())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert_eq!(km.find_named(&p, "rekey-job-x-new").await.unwrap(), None, "the entry names a key that is gone");
    let again = km.create_named_key(&p, Some("rekey-job-x-new"), "aes", 256).await.unwrap();
    assert_eq!(km.find_named(&p, "rekey-job-x-new").await.unwrap(), Some(again.clone()));
    assert_eq!(km.list(&p).await.unwrap(), vec![again.clone()], "the index folder is not listed as a key");
    km.delete_key(&p, &again).await.unwrap();
    let listed: serde_json::Value = http()
        .get(format!("{url}/v1/secret/metadata/{kv_path}/rekey-names?list=true"))
        .header("X-Vault-Token", root())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(serde_json::Value::Null);
    assert!(listed["data"]["keys"].as_array().is_none_or(|k| k.is_empty()), "deleting the key removed its entry: {listed}");
}
