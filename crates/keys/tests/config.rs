//! The configuration as a TOML file spells it, and the value types' rules.

use rekey_keys::{BarbicanAuth, ErrorKind, KeyId, KeyManagerConfig, Project};

#[test]
fn embedded_from_toml_with_defaults() {
    let c: KeyManagerConfig =
        toml::from_str("backend = \"embedded\"\ndb_path = \"/var/lib/rekey/keys.sqlite\"\n")
            .unwrap();
    let KeyManagerConfig::Embedded(e) = c else {
        panic!("not embedded")
    };
    assert_eq!(
        e.db_path,
        std::path::Path::new("/var/lib/rekey/keys.sqlite")
    );
    assert_eq!(
        e.resolved_kek_path(),
        std::path::Path::new("/var/lib/rekey/keys.kek")
    );
    assert!(e.kek_hex.is_none());

    let KeyManagerConfig::Embedded(e) = KeyManagerConfig::embedded_in("/data") else {
        panic!()
    };
    assert_eq!(e.db_path, std::path::Path::new("/data/keys.sqlite"));
    assert_eq!(
        e.resolved_kek_path(),
        std::path::Path::new("/data/keys.kek")
    );
}

#[test]
fn barbican_from_toml() {
    let c: KeyManagerConfig = toml::from_str(
        "backend = \"barbican\"\nurl = \"http://127.0.0.1:9311\"\ntimeout_ms = 2500\nretries = 4\n[auth]\ntype = \"noauth\"\n",
    )
    .unwrap();
    let KeyManagerConfig::Barbican(b) = c else {
        panic!("not barbican")
    };
    assert_eq!(b.url, "http://127.0.0.1:9311");
    assert_eq!(
        (b.timeout_ms, b.retries, b.backoff_ms, b.order_timeout_ms),
        (2500, 4, 200, 30_000)
    );
    assert!(matches!(b.auth, BarbicanAuth::Noauth));

    let c: KeyManagerConfig =
        toml::from_str("backend = \"barbican\"\nurl = \"http://b:9311/v1\"\n").unwrap();
    let KeyManagerConfig::Barbican(b) = c else {
        panic!()
    };
    assert_eq!((b.timeout_ms, b.retries), (10_000, 2), "defaults");
    assert!(matches!(b.auth, BarbicanAuth::Noauth), "noauth by default");
}

#[test]
fn bad_toml_is_rejected() {
    for text in [
        "backend = \"vault\"\n",
        "backend = \"embedded\"\n",
        "backend = \"embedded\"\ndb_path = \"/x\"\ntypo = 1\n",
        "backend = \"barbican\"\nurl = \"http://b\"\ntimeout = 3\n",
        "backend = \"barbican\"\nurl = \"http://b\"\n[auth]\ntype = \"token\"\n",
    ] {
        assert!(
            toml::from_str::<KeyManagerConfig>(text).is_err(),
            "accepted: {text}"
        );
    }
}

#[test]
fn key_ids_are_normalised_uuids() {
    let id = KeyId::parse("7C2A0A5E4B9E4F6A9A576D1C6F1F2D10").unwrap();
    assert_eq!(id.as_str(), "7c2a0a5e-4b9e-4f6a-9a57-6d1c6f1f2d10");
    assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
    for bad in ["", "x", "7c2a0a5e-4b9e-4f6a-9a57", "../../v1/orders"] {
        assert_eq!(
            KeyId::parse(bad).unwrap_err().kind(),
            ErrorKind::Invalid,
            "{bad:?}"
        );
    }
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, "\"7c2a0a5e-4b9e-4f6a-9a57-6d1c6f1f2d10\"");
    assert!(serde_json::from_str::<KeyId>("\"nope\"").is_err());
}

#[test]
fn project_ids_fit_a_header() {
    assert!(Project::new("d3bb7e5a1a8f4c0c9d6e0d0e1f2a3b4c").is_ok());
    for bad in ["", "has space", "new\nline", "é", &"p".repeat(256)] {
        assert_eq!(
            Project::new(bad).unwrap_err().kind(),
            ErrorKind::Invalid,
            "{bad:?}"
        );
    }
}

/// Every `[key_manager]` key of the Vault backend, spelled as the issue
/// (and castellan's options) name them; unknown keys are refused.
#[test]
fn vault_from_toml_with_every_key() {
    let c: KeyManagerConfig = toml::from_str(
        r#"backend = "vault"
url = "https://vault.example:8200"
approle_role_id = "role"
approle_secret_id = "secret"
kv_mountpoint = "kv"
kv_path = "cinder/keys"
namespace = "ns1"
ca_file = "/etc/ssl/vault-ca.pem"
"#,
    )
    .unwrap();
    let KeyManagerConfig::Vault(v) = c else { panic!("not vault") };
    assert_eq!(v.url, "https://vault.example:8200");
    assert_eq!(v.approle_role_id.as_deref().map(String::as_str), Some("role"));
    assert_eq!(v.approle_secret_id.as_deref().map(String::as_str), Some("secret"));
    assert!(v.token.is_none());
    assert_eq!(v.kv_mountpoint, "kv");
    assert_eq!(v.kv_path.as_deref(), Some("cinder/keys"));
    assert_eq!(v.namespace.as_deref(), Some("ns1"));
    assert_eq!(v.ca_file.as_deref(), Some(std::path::Path::new("/etc/ssl/vault-ca.pem")));

    let c: KeyManagerConfig = toml::from_str("backend = \"vault\"\nurl = \"http://127.0.0.1:8200\"\ntoken = \"t\"\n").unwrap();
    let KeyManagerConfig::Vault(v) = c else { panic!("not vault") };
    assert_eq!(v.kv_mountpoint, "secret", "castellan's default mount");
    assert!(toml::from_str::<KeyManagerConfig>("backend = \"vault\"\nurl = \"u\"\ntoken = \"t\"\nmount = \"x\"\n").is_err());

    // A missing CA file is a clear configuration error, not a panic.
    let mut v = rekey_keys::VaultConfig::new("https://127.0.0.1:8200").with_token(zeroize::Zeroizing::new("t".into()));
    v.ca_file = Some("/nonexistent/ca.pem".into());
    let e = rekey_keys::VaultKeyManager::new(&v).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}
