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
mod attach;
pub mod config;
mod db;
mod defaults;
mod manageable;
mod engine;
mod error;
pub mod exports;
pub mod fault;
pub mod group_types;
pub mod groups;
pub mod inventory;
pub mod messages;
pub mod key_migrate;
mod metered;
mod metrics;
pub mod model;
mod online;
pub mod paths;
pub mod quotas;
mod qos;
mod service;
mod type_access;

use std::sync::Arc;

pub use config::Config;
pub use error::{ErrorKind, Result, ServiceError};
pub use attach::AttachmentInfo;
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
    svc.config().auth.check(svc.config().listen)?;
    svc.exports.check()?;
    let app = api::router(svc.clone()).map_err(ServiceError::Config)?;
    let listener = tokio::net::TcpListener::bind(svc.config().listen)
        .await
        .map_err(|e| ServiceError::Config(format!("cannot listen on {}: {e}", svc.config().listen)))?;
    let addr = listener.local_addr().map_err(|e| ServiceError::Internal(e.to_string()))?;
    inventory::start_heartbeat(svc.clone()).await?;
    let resumed = engine::recover::<paths::Flow>(svc.clone()).await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished jobs");
    }
    let exports = attach::restore_exports(&svc).await?;
    if exports > 0 {
        tracing::info!(exports, "serving the exports of attached volumes again");
    }
    on_listening(addr);
    // `/metrics` beside the Cinder API (whose router answers every other
    // path), outside its authentication as Prometheus scrapes expect.
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .with_state(svc.clone())
        .merge(app);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServiceError::Internal(format!("server: {e}")))
}

/// `GET /metrics` (see [`metrics`]): counts from the shared database, this
/// node's measurements.
async fn metrics_handler(axum::extract::State(svc): axum::extract::State<Arc<Service>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let counts = async {
        let mut c = svc.conn().await?;
        Ok::<_, ServiceError>((db::job_counts(&mut c).await?, db::volume_counts(&mut c).await?))
    };
    match counts.await {
        Ok((jobs, volumes)) => {
            let body = metrics::render(svc.engine.node_name(), &jobs, &volumes, &svc.engine.metrics);
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
        }
        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("# cannot read the database: {e}\n")).into_response(),
    }
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

    /// An unfinished job as `rekey job list|show` prints it: the engine's
    /// bookkeeping and the machine's state (ids and where it stands; the
    /// state holds key ids, never keys).
    #[derive(Debug, Clone, serde::Serialize)]
    pub struct JobInfo {
        /// Job id.
        pub id: String,
        /// Flow (`clone`, `restore`, …).
        pub kind: String,
        /// The record it works on.
        pub target_id: String,
        /// The project it works for.
        pub project_id: String,
        /// The record it reads from.
        pub source_id: Option<String>,
        /// The key it replaces (deleted when it is done).
        pub old_key_id: Option<String>,
        /// The key it is giving the target: the passphrase that finishes an
        /// interrupted re-encryption by hand (docs/reencrypt.md).
        pub new_key_id: Option<String>,
        /// The current state's label.
        pub step: String,
        /// Failed attempts at the current state.
        pub attempts: u32,
        /// No attempt before this time (ms since the epoch).
        pub next_attempt_at: i64,
        /// Why the last attempt failed.
        pub last_error: Option<String>,
        /// Bumped whenever a node takes the job up.
        pub epoch: i64,
        /// The node holding its lease.
        pub lease_owner: Option<String>,
        /// When that lease runs out without a heartbeat (ms since the epoch).
        pub lease_until: i64,
        /// When it was admitted.
        pub created_at: String,
        /// The whole machine state.
        pub state: serde_json::Value,
    }

    /// Every unfinished job, oldest first.
    pub async fn jobs(config: &Config) -> Result<Vec<JobInfo>> {
        let pool = db::open(&config.database_url()).await?;
        let mut c = pool.conn().await?;
        let rows = db::list_jobs(&mut c).await?;
        Ok(rows
            .into_iter()
            .map(|r| JobInfo {
                state: serde_json::from_str(&r.state).unwrap_or(serde_json::Value::Null),
                id: r.id,
                kind: r.kind,
                target_id: r.target_id,
                project_id: r.project_id,
                source_id: r.source_id,
                old_key_id: r.old_key_id,
                new_key_id: r.new_key_id,
                step: r.step,
                attempts: r.attempts,
                next_attempt_at: r.next_attempt_at,
                last_error: r.last_error,
                epoch: r.epoch,
                lease_owner: r.lease_owner,
                lease_until: r.lease_until,
                created_at: r.created_at,
            })
            .collect())
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
