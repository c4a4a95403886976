//! The behavioural suite every key manager must pass, and test helpers.
//!
//! Each case takes a `&dyn KeyManager` and a [`Seen`] that records every key
//! the case handled, so the no-leak test can look for their bytes in the logs.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rekey_keys::{
    BarbicanConfig, EmbeddedConfig, ErrorKind, KeyBytes, KeyError, KeyId, KeyManager,
    KeyManagerConfig, Project,
};

/// Every key bytes a suite run handled.
#[derive(Default, Clone)]
pub struct Seen(Arc<Mutex<Vec<KeyBytes>>>);

impl Seen {
    pub fn add(&self, key: &KeyBytes) {
        self.0.lock().unwrap().push(key.clone());
    }
    pub fn all(&self) -> Vec<KeyBytes> {
        self.0.lock().unwrap().clone()
    }
}

/// A project id no other test (or earlier run against the same Barbican) uses.
pub fn project(tag: &str) -> Project {
    Project::new(format!(
        "rekey-test-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ))
    .unwrap()
}

/// Random bytes that start with a zero byte, as os-brick's bug 1633518 needs.
pub fn key_with_leading_zeros(len: usize) -> KeyBytes {
    let mut v = KeyBytes::random(len).unwrap().expose().to_vec();
    v[0] = 0;
    v[1] = 0;
    v[2] = 0x01;
    KeyBytes::new(v)
}

/// The embedded store in a fresh temporary directory (kept alive by the
/// returned guard).
pub async fn embedded() -> (Arc<dyn KeyManager>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = KeyManagerConfig::Embedded(EmbeddedConfig::new(dir.path().join("keys.sqlite")));
    let km = rekey_keys::open_key_manager(&config).await.unwrap();
    (km, dir)
}

/// The URL of the real Barbican the tests use. Fails (never skips) when it is
/// not given.
pub fn barbican_url() -> String {
    match std::env::var("REKEY_BARBICAN_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "REKEY_BARBICAN_URL is not set: these tests need a real Barbican. \
             Start one with `scripts/barbican.sh start` and run with \
             REKEY_BARBICAN_URL=http://127.0.0.1:9311"
        ),
    }
}

/// A client for the real Barbican, checked to answer.
pub async fn barbican() -> Arc<dyn KeyManager> {
    let url = barbican_url();
    let config =
        KeyManagerConfig::Barbican(BarbicanConfig::new(&url).with_timeout(Duration::from_secs(30)));
    let km = rekey_keys::open_key_manager(&config).await.unwrap();
    if let Err(e) = km.list(&project("probe")).await {
        panic!("Barbican at {url} (REKEY_BARBICAN_URL) does not work: {e}. Start it with `scripts/barbican.sh start`");
    }
    km
}

fn assert_kind(r: Result<impl std::fmt::Debug, KeyError>, kinds: &[ErrorKind], what: &str) {
    match r {
        Err(e) => assert!(
            kinds.contains(&e.kind()),
            "{what}: expected {kinds:?}, got {:?}: {e}",
            e.kind()
        ),
        Ok(v) => panic!("{what}: expected an error of kind {kinds:?}, got Ok({v:?})"),
    }
}

const DENIED: &[ErrorKind] = &[ErrorKind::NotFound, ErrorKind::Forbidden];

pub async fn create_get_delete(km: &dyn KeyManager, seen: &Seen) {
    let p = project("create");
    let id = km.create_key(&p, "aes", 256).await.unwrap();
    let key = km.get_key(&p, &id).await.unwrap();
    seen.add(&key);
    assert_eq!(key.len(), 32);
    assert_eq!(
        km.get_key(&p, &id).await.unwrap(),
        key,
        "a key reads back the same every time"
    );
    assert!(km.exists(&p, &id).await.unwrap());

    let short = km.create_key(&p, "aes", 128).await.unwrap();
    let short_key = km.get_key(&p, &short).await.unwrap();
    seen.add(&short_key);
    assert_eq!(short_key.len(), 16);

    km.delete_key(&p, &id).await.unwrap();
    km.delete_key(&p, &short).await.unwrap();
}

pub async fn store_get_round_trips_exact_bytes(km: &dyn KeyManager, seen: &Seen) {
    let p = project("store");
    let fixed = KeyBytes::from_slice(&[
        0x00, 0x00, 0x01, 0x0a, 0x10, 0x11, 0x00, 0xff, 0x7f, 0x80, 0x0f, 0xf0, 0x00, 0x00, 0x00,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
        0x00, 0x00,
    ]);
    let keys = [
        fixed,
        key_with_leading_zeros(32),
        key_with_leading_zeros(64),
        KeyBytes::new(vec![0u8; 16]),
        KeyBytes::random(32).unwrap(),
    ];
    for key in &keys {
        seen.add(key);
        let bits = key.len() as u32 * 8;
        let id = km.store_key(&p, key, "aes", bits).await.unwrap();
        let back = km.get_key(&p, &id).await.unwrap();
        assert_eq!(
            back.expose(),
            key.expose(),
            "bytes round-trip exactly ({} bytes)",
            key.len()
        );
        km.delete_key(&p, &id).await.unwrap();
    }
}

pub async fn cross_project_access_is_denied(km: &dyn KeyManager, seen: &Seen) {
    let owner = project("owner");
    let other = project("other");
    let key = key_with_leading_zeros(32);
    seen.add(&key);
    let id = km.store_key(&owner, &key, "aes", 256).await.unwrap();
    let made = km.create_key(&owner, "aes", 256).await.unwrap();

    for target in [&id, &made] {
        assert_kind(
            km.get_key(&other, target).await,
            DENIED,
            "another project reads the key",
        );
        assert!(
            !km.exists(&other, target).await.unwrap(),
            "another project sees the key"
        );
        assert_kind(
            km.delete_key(&other, target).await,
            DENIED,
            "another project deletes the key",
        );
        assert!(
            !km.list(&other).await.unwrap().contains(target),
            "another project lists the key"
        );
    }
    // The owner's keys survived the other project's attempts.
    assert_eq!(km.get_key(&owner, &id).await.unwrap(), key);
    seen.add(&km.get_key(&owner, &made).await.unwrap());
    km.delete_key(&owner, &id).await.unwrap();
    km.delete_key(&owner, &made).await.unwrap();
}

pub async fn deleted_key_is_gone(km: &dyn KeyManager, seen: &Seen) {
    let p = project("deleted");
    let key = KeyBytes::random(32).unwrap();
    seen.add(&key);
    let id = km.store_key(&p, &key, "aes", 256).await.unwrap();
    let keep = km.create_key(&p, "aes", 256).await.unwrap();
    seen.add(&km.get_key(&p, &keep).await.unwrap());
    km.delete_key(&p, &id).await.unwrap();

    assert_kind(
        km.get_key(&p, &id).await,
        &[ErrorKind::NotFound],
        "get after delete",
    );
    assert!(!km.exists(&p, &id).await.unwrap());
    assert_eq!(
        km.list(&p).await.unwrap(),
        vec![keep.clone()],
        "only the other key is left"
    );
    assert_kind(
        km.delete_key(&p, &id).await,
        &[ErrorKind::NotFound],
        "second delete",
    );
    km.delete_key(&p, &keep).await.unwrap();
    assert!(km.list(&p).await.unwrap().is_empty());
}

pub async fn unknown_key_is_not_found(km: &dyn KeyManager, _seen: &Seen) {
    let p = project("unknown");
    let id = KeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    assert_kind(
        km.get_key(&p, &id).await,
        &[ErrorKind::NotFound],
        "get of an unknown id",
    );
    assert!(!km.exists(&p, &id).await.unwrap());
    assert_kind(
        km.delete_key(&p, &id).await,
        &[ErrorKind::NotFound],
        "delete of an unknown id",
    );
}

pub async fn exists_and_list(km: &dyn KeyManager, seen: &Seen) {
    let p = project("list");
    assert!(
        km.list(&p).await.unwrap().is_empty(),
        "a new project has no keys"
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let key = KeyBytes::random(32).unwrap();
        seen.add(&key);
        ids.push(km.store_key(&p, &key, "aes", 256).await.unwrap());
    }
    ids.push(km.create_key(&p, "aes", 256).await.unwrap());
    seen.add(&km.get_key(&p, &ids[3]).await.unwrap());

    let listed: HashSet<KeyId> = km.list(&p).await.unwrap().into_iter().collect();
    assert_eq!(listed, ids.iter().cloned().collect::<HashSet<_>>());
    for id in &ids {
        assert!(km.exists(&p, id).await.unwrap());
    }
    km.delete_key(&p, &ids[1]).await.unwrap();
    let listed = km.list(&p).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(!listed.contains(&ids[1]));
    for id in [&ids[0], &ids[2], &ids[3]] {
        km.delete_key(&p, id).await.unwrap();
    }
}

/// Named keys are found again by name (what lets a re-run step reuse the
/// key an interrupted run made), only in their own project, and listed by
/// prefix; a bad name is refused before anything is stored.
pub async fn named_keys_are_found_by_name(km: &dyn KeyManager, seen: &Seen) {
    let (p, other) = (project("named"), project("named-other"));
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (n1, n2) = (format!("rekey-job-{tag}-new"), format!("rekey-job-{tag}-interim"));
    assert_eq!(km.find_named(&p, &n1).await.unwrap(), None, "nothing under a fresh name");
    let a = km.create_named_key(&p, Some(&n1), "aes", 256).await.unwrap();
    seen.add(&km.get_key(&p, &a).await.unwrap());
    let bytes = KeyBytes::random(64).unwrap();
    seen.add(&bytes);
    let b = km.store_named_key(&p, Some(&n2), &bytes, "aes", 512).await.unwrap();
    let unnamed = km.create_key(&p, "aes", 256).await.unwrap();
    seen.add(&km.get_key(&p, &unnamed).await.unwrap());
    assert_eq!(km.find_named(&p, &n1).await.unwrap(), Some(a.clone()));
    assert_eq!(km.find_named(&p, &n2).await.unwrap(), Some(b.clone()));
    assert_eq!(km.get_key(&p, &b).await.unwrap(), bytes);
    assert_eq!(km.find_named(&other, &n1).await.unwrap(), None, "another project's name is not found");
    let mut listed = km.list_named(&p, &format!("rekey-job-{tag}-")).await.unwrap();
    listed.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(listed, vec![(b.clone(), n2.clone()), (a.clone(), n1.clone())], "named keys by prefix, unnamed ones left out");
    assert!(km.list_named(&p, "nothing-like-it").await.unwrap().is_empty());
    for bad in ["", "has space", "semi;colon", "a/b", &"x".repeat(201)] {
        assert_kind(km.create_named_key(&p, Some(bad), "aes", 256).await, &[ErrorKind::Invalid], "bad name");
        assert_kind(km.find_named(&p, bad).await, &[ErrorKind::Invalid], "bad name lookup");
    }
    assert_eq!(km.list(&p).await.unwrap().len(), 3, "a refused name stores nothing");
    km.delete_key(&p, &a).await.unwrap();
    assert_eq!(km.find_named(&p, &n1).await.unwrap(), None, "a deleted key is not found by name");
    for id in [&b, &unnamed] {
        km.delete_key(&p, id).await.unwrap();
    }
}

pub async fn list_pages_past_one_hundred(km: &dyn KeyManager, seen: &Seen) {
    let p = project("paging");
    let mut ids = HashSet::new();
    let key = KeyBytes::random(16).unwrap();
    seen.add(&key);
    for _ in 0..105 {
        ids.insert(km.store_key(&p, &key, "aes", 128).await.unwrap());
    }
    assert_eq!(ids.len(), 105, "every store makes a new id");
    let listed = km.list(&p).await.unwrap();
    assert_eq!(listed.len(), 105, "list returns every key, not one page");
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), ids);
    for id in &ids {
        km.delete_key(&p, id).await.unwrap();
    }
}

pub async fn many_keys_are_distinct(km: &dyn KeyManager, seen: &Seen) {
    let p = project("many");
    let mut ids = HashSet::new();
    let mut hexes = HashSet::new();
    for _ in 0..20 {
        let id = km.create_key(&p, "aes", 256).await.unwrap();
        let key = km.get_key(&p, &id).await.unwrap();
        seen.add(&key);
        assert!(ids.insert(id), "ids are unique");
        assert!(hexes.insert(hex::encode(key.expose())), "keys are unique");
    }
    for id in &ids {
        km.delete_key(&p, id).await.unwrap();
    }
}

pub async fn invalid_input_is_refused(km: &dyn KeyManager, _seen: &Seen) {
    let p = project("invalid");
    for bits in [0, 7, 100, 1 << 20] {
        assert_kind(
            km.create_key(&p, "aes", bits).await,
            &[ErrorKind::Invalid],
            "odd bit length",
        );
    }
    assert_kind(
        km.create_key(&p, "", 256).await,
        &[ErrorKind::Invalid],
        "empty algorithm",
    );
    assert_kind(
        km.create_key(&p, "a e s", 256).await,
        &[ErrorKind::Invalid],
        "algorithm with spaces",
    );
    let key = KeyBytes::random(32).unwrap();
    assert_kind(
        km.store_key(&p, &key, "aes", 128).await,
        &[ErrorKind::Invalid],
        "bit length not matching bytes",
    );
    assert_kind(
        km.store_key(&p, &KeyBytes::new(Vec::new()), "aes", 0).await,
        &[ErrorKind::Invalid],
        "empty key",
    );
    assert!(
        km.list(&p).await.unwrap().is_empty(),
        "nothing was stored by refused calls"
    );
}

/// Every case, in order.
pub async fn run_all(km: &dyn KeyManager, seen: &Seen) {
    create_get_delete(km, seen).await;
    store_get_round_trips_exact_bytes(km, seen).await;
    cross_project_access_is_denied(km, seen).await;
    deleted_key_is_gone(km, seen).await;
    unknown_key_is_not_found(km, seen).await;
    exists_and_list(km, seen).await;
    list_pages_past_one_hundred(km, seen).await;
    named_keys_are_found_by_name(km, seen).await;
    many_keys_are_distinct(km, seen).await;
    invalid_input_is_refused(km, seen).await;
}

/// One `#[tokio::test]` per suite case, against the backend `$make` opens.
#[macro_export]
macro_rules! suite_tests {
    ($make:expr) => {
        $crate::suite_tests!(@cases $make;
            create_get_delete,
            store_get_round_trips_exact_bytes,
            cross_project_access_is_denied,
            deleted_key_is_gone,
            unknown_key_is_not_found,
            exists_and_list,
            list_pages_past_one_hundred,
            named_keys_are_found_by_name,
            many_keys_are_distinct,
            invalid_input_is_refused);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let backend = $make.await;
                let seen = common::Seen::default();
                common::$case(&*backend.0, &seen).await;
            }
        )*
    };
}

/// An environment variable the Vault tests need; fails (never skips) when
/// it is not given.
pub fn vault_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need a real OpenBao/Vault. Start one with \
             `eval \"$(scripts/openbao.sh start)\"`, which exports REKEY_VAULT_URL, \
             REKEY_VAULT_TOKEN, REKEY_VAULT_ROLE_ID, REKEY_VAULT_SECRET_ID and REKEY_BAO"
        ),
    }
}

/// A Vault configuration for the real OpenBao, keys under a folder of
/// their own so that listing in one test never walks another test's keys.
pub fn vault_config(approle: bool) -> rekey_keys::VaultConfig {
    let config = rekey_keys::VaultConfig::new(vault_env("REKEY_VAULT_URL"))
        .with_kv_path(format!("rekey-test-{}", uuid::Uuid::new_v4().simple()))
        .with_timeout(Duration::from_secs(30));
    if approle {
        config.with_approle(
            zeroize::Zeroizing::new(vault_env("REKEY_VAULT_ROLE_ID")),
            zeroize::Zeroizing::new(vault_env("REKEY_VAULT_SECRET_ID")),
        )
    } else {
        config.with_token(zeroize::Zeroizing::new(vault_env("REKEY_VAULT_TOKEN")))
    }
}

/// A client for the real OpenBao, checked to answer.
pub async fn vault_with(config: rekey_keys::VaultConfig) -> Arc<dyn KeyManager> {
    let km = rekey_keys::open_key_manager(&KeyManagerConfig::Vault(config.clone()))
        .await
        .unwrap();
    if let Err(e) = km.list(&project("probe")).await {
        panic!("Vault at {} (REKEY_VAULT_URL) does not work: {e}. Start it with `scripts/openbao.sh start`", config.url);
    }
    km
}
