//! The embedded key store: one SQLite file, keys wrapped under a KEK.
//!
//! Each row holds one key wrapped with AES-256-GCM under the key-encryption
//! key, a fresh 96-bit nonce per key. The additional authenticated data binds
//! the row's project, id, algorithm and bit length, so a row copied to another
//! project or id (or edited) fails to unwrap instead of yielding its key.
//!
//! A `meta` row holds a known value wrapped under the KEK; opening the store
//! with any other KEK fails at once rather than at the first volume unlock.
//!
//! SQLite is reached through sqlx (async, the same driver and the same
//! `libsqlite3-sys` the service uses for its own database: two different
//! SQLite bindings in one binary would not link). WAL with `synchronous=FULL`
//! makes every committed key durable; `secure_delete` overwrites deleted rows.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use zeroize::Zeroizing;

use crate::config::{EmbeddedConfig, KEK_ENV};
use crate::error::KeyError;
use crate::types::{check_name, check_spec, check_stored, KeyBytes, KeyId, Project};
use crate::KeyManager;

const KEK_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8] = b"rekey-keys/v1/key";
const KEK_CHECK_AAD: &[u8] = b"rekey-keys/v1/kek-check";
const KEK_CHECK_PLAIN: &[u8] = b"rekey embedded key store";
const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    bit_length INTEGER NOT NULL,
    nonce      BLOB NOT NULL,
    wrapped    BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_project ON keys (project, created_ms);
";

/// The key-encryption key.
struct Kek(Zeroizing<[u8; KEK_LEN]>);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek([REDACTED])")
    }
}

/// Keys in a local SQLite file, wrapped under a KEK. See the module docs.
#[derive(Debug)]
pub struct EmbeddedKeyManager {
    pool: SqlitePool,
    kek: Kek,
    db_path: PathBuf,
}

impl EmbeddedKeyManager {
    /// Opens (creating if needed) the store `config` describes.
    ///
    /// The KEK comes from `config.kek_hex`, else `REKEY_KEK`, else the KEK
    /// file; a missing KEK file is created (0600) only for a store that holds
    /// no KEK check yet, so a lost KEK file is an error, never a silent new KEK.
    pub async fn open(config: &EmbeddedConfig) -> Result<Self, KeyError> {
        let db_path = config.db_path.clone();
        if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| KeyError::storage("create data directory", io_cause(dir, e)))?;
        }
        // Create the file ourselves so it starts 0600; SQLite gives its -wal
        // and -shm files the same mode.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db_path)
            .map_err(|e| KeyError::storage("create database", io_cause(&db_path, e)))?;

        let options = SqliteConnectOptions::new()
            .filename(&db_path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| {
                KeyError::storage("open database", format!("{}: {e}", db_path.display()))
            })?;

        // IMMEDIATE: a read-then-write transaction in WAL mode would fail at once
        // (not wait) if the running service wrote in between.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db("migrate"))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *tx)
            .await
            .map_err(db("migrate"))?;
        // Key names came after version 1's first release: an additive column.
        let has_name: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('keys') WHERE name = 'name'")
                .fetch_one(&mut *tx)
                .await
                .map_err(db("migrate"))?;
        if has_name == 0 {
            sqlx::query("ALTER TABLE keys ADD COLUMN name TEXT")
                .execute(&mut *tx)
                .await
                .map_err(db("migrate"))?;
        }
        sqlx::query("CREATE INDEX IF NOT EXISTS keys_by_name ON keys (project, name)")
            .execute(&mut *tx)
            .await
            .map_err(db("migrate"))?;
        sqlx::query("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)")
            .bind(SCHEMA_VERSION.as_bytes())
            .execute(&mut *tx)
            .await
            .map_err(db("migrate"))?;
        tx.commit().await.map_err(db("migrate"))?;

        let version: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'schema_version'")
                .fetch_one(&pool)
                .await
                .map_err(db("read schema version"))?;
        if version != SCHEMA_VERSION.as_bytes() {
            return Err(KeyError::invalid(
                "key store",
                format!(
                    "{} has schema version {:?}, this build knows {SCHEMA_VERSION}",
                    db_path.display(),
                    String::from_utf8_lossy(&version)
                ),
            ));
        }

        let check: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'kek_check'")
                .fetch_optional(&pool)
                .await
                .map_err(db("read KEK check"))?;

        let (kek, source) = load_kek(config, check.is_some())?;
        let check = match check {
            Some(c) => c,
            None => {
                // First open: record what this KEK wraps to. Two processes may
                // race here; whichever insert wins, both verify against it.
                let fresh = wrap(&kek, KEK_CHECK_AAD, KEK_CHECK_PLAIN)?;
                sqlx::query("INSERT OR IGNORE INTO meta (name, value) VALUES ('kek_check', ?)")
                    .bind(fresh)
                    .execute(&pool)
                    .await
                    .map_err(db("write KEK check"))?;
                sqlx::query_scalar("SELECT value FROM meta WHERE name = 'kek_check'")
                    .fetch_one(&pool)
                    .await
                    .map_err(db("read KEK check"))?
            }
        };
        if unwrap(&kek, KEK_CHECK_AAD, &check).is_none() {
            return Err(KeyError::invalid(
                "key-encryption key",
                format!(
                    "the KEK from {source} is not the one key store {} was created with",
                    db_path.display()
                ),
            ));
        }
        tracing::info!(db = %db_path.display(), kek_source = %source, "opened embedded key store");
        Ok(EmbeddedKeyManager { pool, kek, db_path })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    async fn insert(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        let id = KeyId::random();
        let blob = wrap(
            &self.kek,
            &aad(project, &id, algorithm, bit_length),
            key.expose(),
        )?;
        let (nonce, wrapped) = blob.split_at(NONCE_LEN);
        let mut tx = self.pool.begin().await.map_err(db("store key"))?;
        sqlx::query(
            "INSERT INTO keys (id, project, name, algorithm, bit_length, nonce, wrapped, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(project.as_str())
        .bind(name)
        .bind(algorithm)
        .bind(i64::from(bit_length))
        .bind(nonce)
        .bind(wrapped)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db("store key"))?;
        tx.commit().await.map_err(db("store key"))?;
        Ok(id)
    }
}

#[async_trait]
impl KeyManager for EmbeddedKeyManager {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        check_spec(algorithm, bit_length)?;
        name.map(check_name).transpose()?;
        let key = KeyBytes::random(bit_length as usize / 8)?;
        let id = self.insert(project, name, &key, algorithm, bit_length).await?;
        tracing::info!(backend = "embedded", %project, key_id = %id, algorithm, bit_length, "created key");
        Ok(id)
    }

    async fn get_key(&self, project: &Project, id: &KeyId) -> Result<KeyBytes, KeyError> {
        let row: Option<(String, i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT algorithm, bit_length, nonce, wrapped FROM keys WHERE id = ? AND project = ?",
        )
        .bind(id.as_str())
        .bind(project.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("get key"))?;
        let Some((algorithm, bit_length, nonce, wrapped)) = row else {
            tracing::debug!(backend = "embedded", %project, key_id = %id, "key not found");
            return Err(KeyError::NotFound {
                project: project.clone(),
                id: id.clone(),
            });
        };
        let integrity = || KeyError::Integrity {
            project: project.clone(),
            id: id.clone(),
        };
        let bit_length = u32::try_from(bit_length).map_err(|_| integrity())?;
        let mut blob = nonce;
        blob.extend_from_slice(&wrapped);
        let key = unwrap(&self.kek, &aad(project, id, &algorithm, bit_length), &blob)
            .ok_or_else(integrity)?;
        if key.len() as u64 * 8 != u64::from(bit_length) {
            return Err(integrity());
        }
        tracing::debug!(backend = "embedded", %project, key_id = %id, "read key");
        Ok(key)
    }

    async fn store_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        check_stored(key, algorithm, bit_length)?;
        name.map(check_name).transpose()?;
        let id = self.insert(project, name, key, algorithm, bit_length).await?;
        tracing::info!(backend = "embedded", %project, key_id = %id, algorithm, bit_length, "stored key");
        Ok(id)
    }

    async fn delete_key(&self, project: &Project, id: &KeyId) -> Result<(), KeyError> {
        let mut tx = self.pool.begin().await.map_err(db("delete key"))?;
        let done = sqlx::query("DELETE FROM keys WHERE id = ? AND project = ?")
            .bind(id.as_str())
            .bind(project.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db("delete key"))?;
        tx.commit().await.map_err(db("delete key"))?;
        if done.rows_affected() == 0 {
            return Err(KeyError::NotFound {
                project: project.clone(),
                id: id.clone(),
            });
        }
        tracing::info!(backend = "embedded", %project, key_id = %id, "deleted key");
        Ok(())
    }

    async fn exists(&self, project: &Project, id: &KeyId) -> Result<bool, KeyError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM keys WHERE id = ? AND project = ?")
                .bind(id.as_str())
                .bind(project.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("look up key"))?;
        Ok(found.is_some())
    }

    async fn list(&self, project: &Project) -> Result<Vec<KeyId>, KeyError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM keys WHERE project = ? ORDER BY created_ms, rowid")
                .bind(project.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db("list keys"))?;
        ids.iter().map(|s| KeyId::parse(s)).collect()
    }

    async fn find_named(&self, project: &Project, name: &str) -> Result<Option<KeyId>, KeyError> {
        check_name(name)?;
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM keys WHERE project = ? AND name = ? ORDER BY created_ms, rowid LIMIT 1",
        )
        .bind(project.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("find key"))?;
        id.map(|s| KeyId::parse(&s)).transpose()
    }

    async fn list_named(&self, project: &Project, prefix: &str) -> Result<Vec<(KeyId, String)>, KeyError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, name FROM keys WHERE project = ? AND name IS NOT NULL ORDER BY created_ms, rowid",
        )
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("list keys"))?;
        rows.into_iter()
            .filter(|(_, n)| n.starts_with(prefix))
            .map(|(id, n)| Ok((KeyId::parse(&id)?, n)))
            .collect()
    }
}

fn db(op: &'static str) -> impl Fn(sqlx::Error) -> KeyError {
    move |e| KeyError::storage(op, e)
}

fn io_cause(path: &Path, e: io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Length-prefixed fields, so no two (project, id, algorithm, bits) tuples
/// share an encoding.
fn aad(project: &Project, id: &KeyId, algorithm: &str, bit_length: u32) -> Vec<u8> {
    let mut out = AAD_DOMAIN.to_vec();
    for field in [project.as_str(), id.as_str(), algorithm] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&bit_length.to_be_bytes());
    out
}

/// `nonce || ciphertext || tag`.
fn wrap(kek: &Kek, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).map_err(|e| KeyError::storage("wrap key", e))?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        &kek.0[..],
        Some(&nonce),
        aad,
        plain,
        &mut tag,
    )
    .map_err(|e| KeyError::storage("wrap key", e))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The plaintext of `blob`, or `None` if it does not authenticate.
fn unwrap(kek: &Kek, aad: &[u8], blob: &[u8]) -> Option<KeyBytes> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = blob.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), &kek.0[..], Some(nonce), aad, ct, tag)
        .ok()
        .map(KeyBytes::new)
}

/// The KEK and a description of where it came from (for messages).
fn load_kek(config: &EmbeddedConfig, store_has_check: bool) -> Result<(Kek, String), KeyError> {
    if let Some(hex) = &config.kek_hex {
        return Ok((
            parse_kek_hex(hex, "the configuration")?,
            "the configuration".into(),
        ));
    }
    if let Some(value) = std::env::var_os(KEK_ENV) {
        let value = Zeroizing::new(value.into_string().map_err(|_| {
            KeyError::invalid("key-encryption key", format!("{KEK_ENV} is not UTF-8"))
        })?);
        return Ok((parse_kek_hex(&value, KEK_ENV)?, KEK_ENV.into()));
    }
    let path = config.resolved_kek_path();
    let source = format!("file {}", path.display());
    match read_kek_file(&path) {
        Ok(kek) => Ok((kek, source)),
        Err(KekFileError::Missing) if !store_has_check => Ok((create_kek_file(&path)?, source)),
        Err(KekFileError::Missing) => Err(KeyError::invalid(
            "key-encryption key",
            format!(
                "{} is missing but key store {} already holds keys wrapped under a KEK; restore the KEK file or set {KEK_ENV}",
                path.display(),
                config.db_path.display()
            ),
        )),
        Err(KekFileError::Bad(e)) => Err(e),
    }
}

fn parse_kek_hex(text: &str, source: &str) -> Result<Kek, KeyError> {
    let text = text.trim();
    let bad = || {
        KeyError::invalid(
            "key-encryption key",
            format!("{source} must hold exactly {} hex digits", KEK_LEN * 2),
        )
    };
    if text.len() != KEK_LEN * 2 {
        return Err(bad());
    }
    let mut kek = Zeroizing::new([0u8; KEK_LEN]);
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        kek[i] = (hi * 16 + lo) as u8;
    }
    Ok(Kek(kek))
}

enum KekFileError {
    Missing,
    Bad(KeyError),
}

fn read_kek_file(path: &Path) -> Result<Kek, KekFileError> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(KekFileError::Missing),
        Err(e) => {
            return Err(KekFileError::Bad(KeyError::storage(
                "read KEK file",
                io_cause(path, e),
            )))
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| KekFileError::Bad(KeyError::storage("read KEK file", io_cause(path, e))))?;
    if !meta.is_file() {
        return Err(KekFileError::Bad(KeyError::invalid(
            "KEK file",
            format!("{} is not a regular file", path.display()),
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KekFileError::Bad(KeyError::invalid(
            "KEK file",
            format!(
                "{} has mode {mode:03o}; group and others must have no access (chmod 600)",
                path.display()
            ),
        )));
    }
    // 64 hex digits and a newline; anything much longer is not a KEK file.
    let mut text = Zeroizing::new(String::with_capacity(128));
    Read::take(&mut file, 128)
        .read_to_string(&mut text)
        .map_err(|e| KekFileError::Bad(KeyError::storage("read KEK file", io_cause(path, e))))?;
    parse_kek_hex(&text, &format!("KEK file {}", path.display())).map_err(KekFileError::Bad)
}

/// Writes a new random KEK to `path`: temp file (0600) → fsync → publish →
/// fsync the directory.
///
/// Publishing is `link(2)` rather than `rename(2)`: rename would silently
/// replace a KEK that another process created a moment earlier, orphaning
/// every key wrapped under it. If we lose that race we use the winner's KEK.
fn create_kek_file(path: &Path) -> Result<Kek, KeyError> {
    let err = |e: io::Error| KeyError::storage("create KEK file", io_cause(path, e));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(err)?;
    let mut kek = Zeroizing::new([0u8; KEK_LEN]);
    openssl::rand::rand_bytes(&mut kek[..]).map_err(|e| KeyError::storage("create KEK", e))?;
    let mut text = Zeroizing::new(String::with_capacity(KEK_LEN * 2 + 1));
    for b in kek.iter() {
        text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    text.push('\n');

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kek".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tracing::info!(kek = %path.display(), "another process created the KEK file first; using it");
            return match read_kek_file(path) {
                Ok(k) => Ok(k),
                Err(KekFileError::Bad(e)) => Err(e),
                Err(KekFileError::Missing) => Err(KeyError::storage(
                    "create KEK file",
                    format!("{} vanished", path.display()),
                )),
            };
        }
        Err(e) => return Err(err(e)),
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    tracing::info!(kek = %path.display(), "created a new key-encryption key file");
    Ok(Kek(kek))
}
