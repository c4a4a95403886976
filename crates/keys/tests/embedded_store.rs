//! What only the embedded store promises: its files, its KEK, its wrapping.

mod common;

use std::os::unix::fs::PermissionsExt;

use rekey_keys::{EmbeddedConfig, EmbeddedKeyManager, ErrorKind, KeyBytes, KeyManager};
use sqlx::Connection;
use zeroize::Zeroizing;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn files_are_private_and_keys_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::new(dir.path().join("data/keys.sqlite"));
    let p = common::project("reopen");
    let key = common::key_with_leading_zeros(32);
    let id = {
        let km = EmbeddedKeyManager::open(&config).await.unwrap();
        km.store_key(&p, &key, "aes", 256).await.unwrap()
    };
    let kek = dir.path().join("data/keys.kek");
    assert_eq!(mode(&kek), 0o600, "KEK file is 0600");
    assert_eq!(
        mode(&dir.path().join("data/keys.sqlite")),
        0o600,
        "database is 0600"
    );
    let text = std::fs::read_to_string(&kek).unwrap();
    assert_eq!(text.trim().len(), 64, "KEK file holds 64 hex digits");
    let no_temp_left = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-"));
    assert!(no_temp_left, "no temporary KEK file left behind");

    let km = EmbeddedKeyManager::open(&config).await.unwrap();
    assert_eq!(km.get_key(&p, &id).await.unwrap(), key);
    assert_eq!(
        std::fs::read_to_string(&kek).unwrap(),
        text,
        "reopening keeps the KEK"
    );
}

#[tokio::test]
async fn key_bytes_are_not_stored_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.sqlite");
    let km = EmbeddedKeyManager::open(&EmbeddedConfig::new(&db))
        .await
        .unwrap();
    let key = KeyBytes::from_slice(b"0123456789abcdef-plainly-visible");
    km.store_key(&common::project("clear"), &key, "aes", 256)
        .await
        .unwrap();
    drop(km);
    let mut raw = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("keys.sqlite-wal")) {
        raw.extend(wal);
    }
    assert!(
        !raw.windows(key.len()).any(|w| w == key.expose()),
        "the key's bytes appear in the database files"
    );
}

#[tokio::test]
async fn another_kek_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.sqlite");
    let kek_a = Zeroizing::new("11".repeat(32));
    let kek_b = Zeroizing::new("22".repeat(32));
    let km = EmbeddedKeyManager::open(&EmbeddedConfig::new(&db).with_kek_hex(kek_a.clone()))
        .await
        .unwrap();
    km.create_key(&common::project("kek"), "aes", 256)
        .await
        .unwrap();
    drop(km);
    let err = EmbeddedKeyManager::open(&EmbeddedConfig::new(&db).with_kek_hex(kek_b))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("not the one"), "{err}");
    assert!(
        !err.to_string().contains(&"22".repeat(32)),
        "the KEK is not in the message"
    );
    assert!(
        !dir.path().join("keys.kek").exists(),
        "a KEK given directly makes no KEK file"
    );
    EmbeddedKeyManager::open(&EmbeddedConfig::new(&db).with_kek_hex(kek_a))
        .await
        .unwrap();
}

#[tokio::test]
async fn lost_kek_file_is_an_error_not_a_new_kek() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::new(dir.path().join("keys.sqlite"));
    let km = EmbeddedKeyManager::open(&config).await.unwrap();
    km.create_key(&common::project("lost"), "aes", 256)
        .await
        .unwrap();
    drop(km);
    std::fs::remove_file(dir.path().join("keys.kek")).unwrap();
    let err = EmbeddedKeyManager::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!dir.path().join("keys.kek").exists(), "no new KEK was made");
}

#[tokio::test]
async fn kek_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("elsewhere/custom.kek");
    let config = EmbeddedConfig::new(dir.path().join("keys.sqlite")).with_kek_path(&kek);
    drop(EmbeddedKeyManager::open(&config).await.unwrap());
    assert!(kek.exists(), "the configured KEK path is used");
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = EmbeddedKeyManager::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn malformed_kek_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "abc", &"zz".repeat(32), &"11".repeat(33)] {
        let config = EmbeddedConfig::new(dir.path().join("keys.sqlite"))
            .with_kek_hex(Zeroizing::new(bad.to_string()));
        let err = EmbeddedKeyManager::open(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{bad:?}: {err}");
    }
}

/// Rows moved to another project or id do not decrypt: the AAD binds them.
#[tokio::test]
async fn tampered_rows_fail_integrity() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.sqlite");
    let km = EmbeddedKeyManager::open(&EmbeddedConfig::new(&db))
        .await
        .unwrap();
    let owner = common::project("owner");
    let thief = common::project("thief");
    let key = KeyBytes::random(32).unwrap();
    let moved = km.store_key(&owner, &key, "aes", 256).await.unwrap();
    let a = km.store_key(&owner, &key, "aes", 256).await.unwrap();
    let b = km.create_key(&owner, "aes", 256).await.unwrap();

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE keys SET project = ? WHERE id = ?")
        .bind(thief.as_str())
        .bind(moved.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
    // Swap the wrapped blobs of a and b.
    sqlx::query(
        "UPDATE keys SET nonce = (SELECT nonce FROM keys k WHERE k.id = ?), wrapped = (SELECT wrapped FROM keys k WHERE k.id = ?) WHERE id = ?",
    )
    .bind(b.as_str())
    .bind(b.as_str())
    .bind(a.as_str())
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let err = km.get_key(&thief, &moved).await.unwrap_err();
    assert!(
        matches!(err, rekey_keys::KeyError::Integrity { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Other);
    assert_eq!(
        km.get_key(&owner, &moved).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let err = km.get_key(&owner, &a).await.unwrap_err();
    assert!(
        matches!(err, rekey_keys::KeyError::Integrity { .. }),
        "{err}"
    );
    assert!(
        km.get_key(&owner, &b).await.is_ok(),
        "the untouched row still reads"
    );
}

#[tokio::test]
async fn concurrent_writers_do_not_lose_keys() {
    let (km, _dir) = common::embedded().await;
    let p = common::project("concurrent");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let km = km.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..10 {
                ids.push(km.create_key(&p, "aes", 256).await.unwrap());
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut listed = km.list(&p).await.unwrap();
    listed.sort();
    all.sort();
    assert_eq!(listed, all);
}
