//! The rekey volume service: a Cinder v3 compatible block-storage API in
//! which every volume owns its own key, and a clone is rekeyed before it is
//! handed out.
//!
//! Layers, top down: [`api`] (HTTP: routing, identity, bodies, Cinder error
//! bodies) → [`paths`] (admissions and the jobs' typed state machines: what
//! a request means and how it is carried out) → [`Service`] (the parts;
//! types and plain records) → `engine` (runs, persists and retries state
//! machines it does not look inside) → `db` (SQL) and the `rekey-keys`,
//! `rekey-storage` and `rekey-luks` crates.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
mod db;
mod engine;
mod error;
pub mod fault;
pub mod model;
pub mod paths;
mod service;

use std::sync::Arc;

pub use config::Config;
pub use error::{ErrorKind, Result, ServiceError};
pub use service::{CreateVolume, EncryptionSpec, Service, UpdateVolume, VolumeFilter};

/// Opens the database, key manager and backend `config` names.
pub async fn open(config: Config) -> Result<Arc<Service>> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServiceError::Config(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let pool = db::open(&config.database_url()).await?;
    let keys = rekey_keys::open_key_manager(&config.key_manager()).await?;
    let backend_config = config.backend();
    let backend = tokio::task::spawn_blocking(move || rekey_storage::open_backend(&backend_config))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
    Ok(Arc::new(Service::new(pool, keys, backend, config)))
}

/// Runs the service until `shutdown` resolves: binds, resumes unfinished
/// jobs, starts the key-deletion worker, serves. `on_listening` gets the
/// bound address (useful with port 0).
pub async fn serve(
    svc: Arc<Service>,
    on_listening: impl FnOnce(std::net::SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(svc.config().listen)
        .await
        .map_err(|e| ServiceError::Config(format!("cannot listen on {}: {e}", svc.config().listen)))?;
    let addr = listener.local_addr().map_err(|e| ServiceError::Internal(e.to_string()))?;
    let resumed = engine::recover::<paths::Flow>(svc.clone()).await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished jobs");
    }
    on_listening(addr);
    axum::serve(listener, api::router(svc))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServiceError::Internal(format!("server: {e}")))
}

/// Admin access to the data directory without a running server: the key
/// behind a key id, the backing location of a volume.
pub mod admin {
    use super::*;

    /// The bytes of key `key_id` (any project: this reads the store directly,
    /// as an operator with admin rights on the key manager would).
    pub async fn key_bytes(config: &Config, key_id: &str) -> Result<rekey_keys::KeyBytes> {
        let id = rekey_keys::KeyId::parse(key_id)?;
        let pool = db::open(&config.database_url()).await?;
        let mut c = pool.conn().await?;
        let project = db::key_project(&mut c, id.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("Key", key_id))?;
        let keys = rekey_keys::open_key_manager(&config.key_manager()).await?;
        let project = rekey_keys::Project::new(project)?;
        Ok(keys.get_key(&project, &id).await?)
    }

    /// The key-independence audit over the data directory (see
    /// [`crate::paths::audit`]).
    pub async fn audit(config: &Config) -> Result<crate::paths::audit::AuditReport> {
        let svc = crate::open(config.clone()).await?;
        crate::paths::audit::run(&svc).await
    }

    /// Where volume `volume_id` lives (a path for the file backend).
    pub async fn volume_location(config: &Config, volume_id: &str) -> Result<String> {
        let pool = db::open(&config.database_url()).await?;
        let mut c = pool.conn().await?;
        db::get_volume(&mut c, volume_id).await?.ok_or_else(|| ServiceError::not_found("Volume", volume_id))?;
        let backend_config = config.backend();
        let id = volume_id.to_owned();
        tokio::task::spawn_blocking(move || rekey_storage::open_backend(&backend_config)?.location(&id))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(Into::into)
    }
}
