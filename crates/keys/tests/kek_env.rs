//! `REKEY_KEK` supplies the embedded store's KEK. Its own test binary: it sets
//! a process-wide environment variable.

mod common;

use rekey_keys::{open_key_manager, ErrorKind, KeyManagerConfig, KEK_ENV};

#[tokio::test]
async fn kek_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = KeyManagerConfig::embedded_in(dir.path());
    std::env::set_var(KEK_ENV, "ab".repeat(32));
    let km = open_key_manager(&config).await.unwrap();
    let p = common::project("env");
    let key = common::key_with_leading_zeros(32);
    let id = km.store_key(&p, &key, "aes", 256).await.unwrap();
    drop(km);
    assert!(dir.path().join("keys.sqlite").exists());
    assert!(
        !dir.path().join("keys.kek").exists(),
        "a KEK from the environment makes no KEK file"
    );

    std::env::set_var(KEK_ENV, "cd".repeat(32));
    let err = open_key_manager(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(
        err.to_string().contains(KEK_ENV),
        "the message names the source: {err}"
    );

    std::env::set_var(KEK_ENV, "AB".repeat(32));
    let km = open_key_manager(&config).await.unwrap();
    assert_eq!(
        km.get_key(&p, &id).await.unwrap(),
        key,
        "hex digits are case-insensitive"
    );
    std::env::remove_var(KEK_ENV);
}
