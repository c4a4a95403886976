//! `rekey serve`: the Cinder v3 compatible volume service.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rekey_keys::{BarbicanConfig, KeyManagerConfig, VaultConfig};
use rekey_service::config::AuthStrategy;
use rekey_service::Config;
use rekey_storage::BackendConfig;
use zeroize::Zeroizing;

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
    #[command(flatten)]
    vault: VaultArgs,
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
    /// Who callers are: noauth (they name themselves; loopback only) or
    /// keystone (tokens; the service user comes from the [auth] section).
    #[arg(long, value_enum)]
    auth: Option<AuthKind>,
    /// Allow noauth on a non-loopback address: anyone who reaches the port
    /// can act as any project.
    #[arg(long)]
    insecure_noauth: bool,
    /// Where attachments' NBD exports listen (opened at the first export)
    /// [default: 127.0.0.1:10809].
    #[arg(long)]
    nbd_listen: Option<SocketAddr>,
    /// The host put in NBD connection info [default: the --nbd-listen address].
    #[arg(long)]
    nbd_host: Option<String>,
    /// Also serve NBD on this Unix socket (for connectors with "nbd_socket": true).
    #[arg(long)]
    nbd_socket: Option<PathBuf>,
    /// Require TLS on NBD, with server-cert.pem and server-key.pem from this
    /// directory (qemu's tls-creds-x509 layout).
    #[arg(long)]
    nbd_tls_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthKind {
    /// Cinder's noauth: `X-Auth-Token: user:project`.
    Noauth,
    /// Keystone tokens, validated with the [auth] service user.
    Keystone,
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
    /// HashiCorp Vault / OpenBao KV v2, in castellan's layout (needs
    /// --vault-url and a token or an AppRole, or a config file).
    Vault,
}

/// The Vault flags; each overrides the config file's `[key_manager]` key of
/// the same name.
#[derive(Args)]
struct VaultArgs {
    /// Vault address, e.g. http://127.0.0.1:8200 (with --key-manager vault).
    #[arg(long)]
    vault_url: Option<String>,
    /// Vault token (or set REKEY_VAULT_TOKEN; prefer that: flags show in `ps`).
    #[arg(long, env = "REKEY_VAULT_TOKEN", hide_env_values = true)]
    vault_token: Option<String>,
    /// AppRole role_id.
    #[arg(long, requires = "vault_approle_secret_id")]
    vault_approle_role_id: Option<String>,
    /// AppRole secret_id.
    #[arg(long, requires = "vault_approle_role_id")]
    vault_approle_secret_id: Option<String>,
    /// KV v2 mount [default: secret].
    #[arg(long)]
    vault_kv_mountpoint: Option<String>,
    /// Folder inside the mount for the keys.
    #[arg(long)]
    vault_kv_path: Option<String>,
}

impl VaultArgs {
    fn any(&self) -> bool {
        self.vault_url.is_some()
            || self.vault_approle_role_id.is_some()
            || self.vault_kv_mountpoint.is_some()
            || self.vault_kv_path.is_some()
    }

    /// The Vault settings: the config file's, with these flags on top.
    fn apply(self, from_file: Option<VaultConfig>) -> Result<VaultConfig> {
        let mut c = match (from_file, self.vault_url) {
            (Some(mut c), url) => {
                if let Some(url) = url {
                    c.url = url;
                }
                c
            }
            (None, Some(url)) => VaultConfig::new(url),
            (None, None) => bail!("--key-manager vault needs --vault-url (or [key_manager] url in the config file)"),
        };
        // An AppRole given on the command line wins over a token that came
        // from the environment.
        if let Some(t) = self.vault_token {
            c = c.with_token(Zeroizing::new(t));
        }
        if let (Some(r), Some(s)) = (self.vault_approle_role_id, self.vault_approle_secret_id) {
            c = c.with_approle(Zeroizing::new(r), Zeroizing::new(s));
        }
        if let Some(m) = self.vault_kv_mountpoint {
            c.kv_mountpoint = m;
        }
        if let Some(p) = self.vault_kv_path {
            c = c.with_kv_path(p);
        }
        if c.token.is_none() && c.approle_role_id.is_none() {
            bail!("--key-manager vault needs --vault-token (or REKEY_VAULT_TOKEN) or --vault-approle-role-id with --vault-approle-secret-id");
        }
        Ok(c)
    }
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
    let vault_flags = args.vault.any();
    if vault_flags && args.barbican_url.is_some() {
        bail!("--barbican-url and --vault-* flags exclude each other");
    }
    let wants_vault = matches!(args.key_manager, Some(KeyManagerKind::Vault))
        || (args.key_manager.is_none() && (vault_flags || matches!(config.key_manager, Some(KeyManagerConfig::Vault(_)))));
    if vault_flags && !wants_vault {
        bail!("--vault-* flags need --key-manager vault");
    }
    if wants_vault {
        let from_file = match config.key_manager.take() {
            Some(KeyManagerConfig::Vault(v)) => Some(v),
            _ => None,
        };
        config.key_manager = Some(KeyManagerConfig::Vault(args.vault.apply(from_file)?));
    } else {
        // A token from REKEY_VAULT_TOKEN alone does not choose Vault.
        match (args.key_manager, args.barbican_url) {
        (Some(KeyManagerKind::Vault), _) => unreachable!("handled above"),
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
    match args.auth {
        Some(AuthKind::Noauth) => config.auth.strategy = AuthStrategy::Noauth,
        Some(AuthKind::Keystone) => config.auth.strategy = AuthStrategy::Keystone,
        None => {}
    }
    config.auth.insecure_noauth = args.insecure_noauth;
    if let Some(l) = args.nbd_listen {
        config.nbd.listen = l;
    }
    if let Some(h) = args.nbd_host {
        config.nbd.host = Some(h);
    }
    if let Some(s) = args.nbd_socket {
        config.nbd.socket = Some(s);
    }
    if let Some(d) = args.nbd_tls_dir {
        config.nbd.tls_dir = Some(d);
    }
    config.auth.check(config.listen)?;
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
