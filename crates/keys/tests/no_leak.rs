//! No key bytes in any log line, error message or Debug output.
//!
//! Captures everything tracing (and, through it, the `log` crate) emits at
//! TRACE while the whole behavioural suite runs over the embedded store and,
//! when `REKEY_BARBICAN_URL` is set, over Barbican; then looks for the hex and
//! base64 of every key the suite handled. Its own test binary: it installs the
//! process-wide subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rekey_keys::{KeyBytes, KeyError, KeyId, Project};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every text form a key could take in a log line.
fn spellings(key: &KeyBytes) -> Vec<String> {
    let b = key.expose();
    let hex = hex::encode(b);
    vec![
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        format!("{b:?}"),
        rekey_keys::passphrase_legacy(key).to_string(),
    ]
}

#[tokio::test]
async fn suite_logs_no_key_bytes() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("install the capturing subscriber");

    let seen = common::Seen::default();
    let (embedded, _dir) = common::embedded().await;
    common::run_all(&*embedded, &seen).await;
    let barbican = std::env::var("REKEY_BARBICAN_URL").is_ok();
    if barbican {
        let km = common::barbican().await;
        common::run_all(&*km, &seen).await;
    } else {
        eprintln!(
            "note: REKEY_BARBICAN_URL unset; this run checked the embedded store's logs only"
        );
    }

    let vault = std::env::var("REKEY_VAULT_URL").is_ok();
    if vault {
        let km = common::vault_with(common::vault_config(false)).await;
        common::run_all(&*km, &seen).await;
        let km = common::vault_with(common::vault_config(true)).await;
        common::run_all(&*km, &seen).await;
    }

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines = log.lines().count();
    assert!(
        log.contains("created key") && log.contains("stored key"),
        "the capture saw the suite's log lines"
    );
    if barbican {
        assert!(
            log.contains("barbican answered"),
            "the capture saw the Barbican client's lines"
        );
    }
    if vault {
        assert!(log.contains("vault answered"), "the capture saw the Vault client's lines");
        let token = common::vault_env("REKEY_VAULT_TOKEN");
        let secret = common::vault_env("REKEY_VAULT_SECRET_ID");
        assert!(!log.contains(&token) && !log.contains(&secret), "no Vault credential in the log");
    }
    let keys = seen.all();
    assert!(
        keys.len() > 50,
        "the suite handled many keys ({})",
        keys.len()
    );
    for key in &keys {
        for spelling in spellings(key) {
            // The legacy form of an all-zero key is short enough to match by
            // chance; every other spelling of a 16+ byte key is 22+ chars.
            if spelling.len() < 20 {
                continue;
            }
            if let Some(line) = log.lines().find(|l| l.contains(&spelling)) {
                panic!("a key appears in the log ({lines} lines captured): {line}");
            }
        }
    }
    eprintln!(
        "checked {} keys against {lines} captured log lines",
        keys.len()
    );
}

#[test]
fn debug_and_errors_are_redacted() {
    let key = KeyBytes::from_slice(&[
        0x00, 0x00, 0x01, 0x0a, 0x10, 0x11, 0xde, 0xad, 0xbe, 0xef, 0x42, 0x42,
    ]);
    let debug = format!("{key:?} {:#?}", key);
    assert!(debug.contains("REDACTED"));
    for spelling in spellings(&key) {
        assert!(!debug.contains(&spelling), "{debug}");
    }
    assert!(!debug.contains("222"), "no decimal bytes either: {debug}");

    let project = Project::new("p").unwrap();
    let id = KeyId::parse("7c2a0a5e-4b9e-4f6a-9a57-6d1c6f1f2d10").unwrap();
    let errors = [
        KeyError::NotFound {
            project: project.clone(),
            id: id.clone(),
        },
        KeyError::Integrity { project, id },
    ];
    for e in errors {
        let text = format!("{e} {e:?}");
        assert!(text.contains("7c2a0a5e"), "errors name the key id: {text}");
        for spelling in spellings(&key) {
            assert!(!text.contains(&spelling));
        }
    }

    let config: rekey_keys::KeyManagerConfig = toml::from_str(
        "backend = \"barbican\"\nurl = \"http://127.0.0.1:9311\"\n[auth]\ntype = \"token\"\ntoken = \"gAAAAA-secret-token\"\n",
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("secret-token") && shown.contains("REDACTED"),
        "{shown}"
    );
    let config: rekey_keys::KeyManagerConfig = toml::from_str(
        "backend = \"vault\"\nurl = \"http://127.0.0.1:8200\"\ntoken = \"hvs.vault-token\"\napprole_secret_id = \"approle-secret\"\n",
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("vault-token") && !shown.contains("approle-secret") && shown.contains("REDACTED"), "{shown}");
    let km = rekey_keys::VaultKeyManager::new(&rekey_keys::VaultConfig::new("http://127.0.0.1:8200").with_token(zeroize::Zeroizing::new("hvs.vault-token".into()))).unwrap();
    assert!(!format!("{km:?}").contains("vault-token"));
    let config: rekey_keys::KeyManagerConfig = toml::from_str(&format!(
        "backend = \"embedded\"\ndb_path = \"/d/keys.sqlite\"\nkek_hex = \"{}\"\n",
        "ab".repeat(32)
    ))
    .unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains(&"ab".repeat(32)) && shown.contains("REDACTED"),
        "{shown}"
    );
}
