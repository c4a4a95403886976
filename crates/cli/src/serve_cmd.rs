//! `rekey serve`: the Cinder v3 compatible volume service.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rekey_keys::{BarbicanConfig, KeyManagerConfig};
use rekey_service::Config;
use rekey_storage::BackendConfig;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (flags given here override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory: volumes, service database, embedded key store
    /// [default: ./rekey-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8776].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// sqlx database URL: sqlite://PATH or postgres://… [default:
    /// sqlite://DATA_DIR/rekey.sqlite].
    #[arg(long)]
    database_url: Option<String>,
    /// This node's name among the `rekey serve` processes sharing the
    /// database (job leases and the step log carry it) [default: local].
    #[arg(long)]
    node_name: Option<String>,
    /// Job lease without a heartbeat, seconds [default: 15].
    #[arg(long)]
    lease_seconds: Option<u64>,
    /// Log lines as text or as one JSON object per line (stderr).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Where volume keys live.
    #[arg(long, value_enum)]
    key_manager: Option<KeyManagerKind>,
    /// Barbican endpoint (implies --key-manager barbican).
    #[arg(long)]
    barbican_url: Option<String>,
    /// Volume backend.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// RBD pool for volumes (implies --backend rbd).
    #[arg(long)]
    rbd_pool: Option<String>,
    /// ceph.conf for the RBD backend (default: $CEPH_CONF, then Ceph's search path).
    #[arg(long)]
    ceph_conf: Option<PathBuf>,
    /// Ceph client name for the RBD backend (default: admin).
    #[arg(long)]
    ceph_user: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyManagerKind {
    /// SQLite key store in the data directory.
    Embedded,
    /// OpenStack Barbican (needs --barbican-url or a config file url).
    Barbican,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendKind {
    /// One sparse file per volume under DATA_DIR/volumes.
    File,
    /// Ceph RBD images `volume-<id>` in --rbd-pool, through librbd.
    Rbd,
}

/// Config file (if any) with the command-line flags applied on top.
pub fn resolve_config(config: Option<&PathBuf>, data_dir: Option<&PathBuf>) -> Result<Config> {
    let mut c = match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        c.data_dir = d.clone();
    }
    Ok(c)
}

pub fn run(args: ServeArgs) -> Result<()> {
    let log_format = args.log_format;
    let mut config = resolve_config(args.config.as_ref(), args.data_dir.as_ref())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(u) = args.database_url {
        config.database_url = Some(u);
    }
    if let Some(n) = args.node_name {
        config.node_name = Some(n);
    }
    if let Some(s) = args.lease_seconds {
        config.lease_seconds = s;
    }
    match (args.key_manager, args.barbican_url) {
        (Some(KeyManagerKind::Embedded), Some(_)) => bail!("--barbican-url needs --key-manager barbican"),
        (Some(KeyManagerKind::Embedded), None) => config.key_manager = Some(KeyManagerConfig::embedded_in(&config.data_dir)),
        (_, Some(url)) => config.key_manager = Some(KeyManagerConfig::Barbican(BarbicanConfig::new(url))),
        (Some(KeyManagerKind::Barbican), None) => {
            if !matches!(config.key_manager, Some(KeyManagerConfig::Barbican(_))) {
                bail!("--key-manager barbican needs --barbican-url (or [key_manager] url in the config file)");
            }
        }
        (None, None) => {}
    }
    let rbd_flags = args.rbd_pool.is_some() || args.ceph_conf.is_some() || args.ceph_user.is_some();
    match (args.backend, rbd_flags) {
        (Some(BackendKind::File), true) => bail!("--rbd-pool, --ceph-conf and --ceph-user need --backend rbd"),
        (Some(BackendKind::File), false) => {
            config.backend = Some(BackendConfig::File { data_dir: config.data_dir.clone() });
        }
        (Some(BackendKind::Rbd), _) | (None, true) => {
            let mut rbd = match config.backend.take() {
                Some(BackendConfig::Rbd(r)) => r,
                _ => rekey_storage::RbdConfig::new(
                    args.rbd_pool.clone().context("--backend rbd needs --rbd-pool (or [backend] pool in the config file)")?,
                ),
            };
            if let Some(p) = args.rbd_pool {
                rbd.pool = p;
            }
            if let Some(c) = args.ceph_conf {
                rbd.ceph_conf = Some(c);
            }
            if let Some(u) = args.ceph_user {
                rbd.ceph_user = u;
            }
            config.backend = Some(BackendConfig::Rbd(rbd));
        }
        (None, false) => {}
    }
    init_logging(log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async move {
        let data_dir = config.data_dir.clone();
        let svc = rekey_service::open(config).await?;
        rekey_service::serve(
            svc,
            |addr| {
                use std::io::Write;
                println!("rekey: listening on http://{addr}/v3 (data in {})", data_dir.display());
                let _ = std::io::stdout().flush();
            },
            shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.with_ansi(false).event_format(crate::json_log::JsonLines).try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
