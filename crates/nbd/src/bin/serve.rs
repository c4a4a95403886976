//! Serves image files over NBD without the service, for tests and
//! benchmarks: `rekey-nbd-serve --listen 127.0.0.1:PORT --export NAME=IMAGE
//! [--luks --key-file F] [--read-only]`.
//!
//! With `--online-reencrypt --new-key-file F2`, a `--luks` export is
//! re-encrypted under a new volume key (whose keyslot opens with F2) while
//! it is served; started again after a crash, it resumes from the header.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use rekey_luks::reencrypt::live::Online;
use rekey_luks::reencrypt::{self, OldKey, ReencryptOptions};
use rekey_luks::{BlockIo, FileIo, PbkdfKind, PbkdfOptions, Volume};
use rekey_nbd::{Export, Exports, ListenAddr, Server, TlsConfig};
use zeroize::Zeroizing;

#[derive(Parser, Debug)]
#[command(name = "rekey-nbd-serve", about = "Serve image files over NBD")]
struct Args {
    /// HOST:PORT, or unix:PATH / an absolute path for a Unix socket.
    #[arg(long)]
    listen: String,
    /// NAME=IMAGE; repeat for several exports.
    #[arg(long = "export", required = true)]
    exports: Vec<String>,
    /// Export the decrypted data of LUKS images (back-end) instead of their
    /// raw bytes.
    #[arg(long, requires = "key_file")]
    luks: bool,
    /// Passphrase file for --luks, used byte for byte as cryptsetup does.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Refuse writes.
    #[arg(long)]
    read_only: bool,
    /// Re-encrypt each --luks export under a new volume key while serving
    /// it. Resumes one in progress; an export already under the new key is
    /// served as it is.
    #[arg(long, requires_all = ["luks", "new_key_file"])]
    online_reencrypt: bool,
    /// Passphrase file for the new keyslot of --online-reencrypt.
    #[arg(long)]
    new_key_file: Option<PathBuf>,
    /// Bytes converted per crash-safe step of --online-reencrypt (requests
    /// into that range wait for one step).
    #[arg(long, default_value_t = 1 << 20)]
    hotzone: u64,
    /// Pause between hotzones, leaving the disk to the consumer.
    #[arg(long, default_value_t = 0)]
    hotzone_pause_ms: u64,
    /// PBKDF2 iterations for the new keyslot instead of a calibrated Argon2id
    /// (for machine-generated passphrases, as cryptsetup's option).
    #[arg(long)]
    pbkdf_force_iterations: Option<u32>,
    /// Require TLS, with server-cert.pem and server-key.pem from this
    /// directory (qemu's tls-creds-x509 layout).
    #[arg(long)]
    tls_creds: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rekey-nbd-serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let listen: ListenAddr = args
        .listen
        .parse()
        .with_context(|| format!("bad --listen {}", args.listen))?;
    let passphrase = match &args.key_file {
        Some(p) => Some(Zeroizing::new(
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        None => None,
    };
    let exports = Exports::new();
    for spec in &args.exports {
        let Some((name, image)) = spec.split_once('=') else {
            bail!("--export wants NAME=IMAGE, got {spec}")
        };
        let file = if args.read_only {
            FileIo::open_read_only(image)
        } else {
            FileIo::open(image)
        }
        .with_context(|| format!("opening {image}"))?;
        let export = match (&passphrase, args.luks) {
            (Some(pass), true) if args.online_reencrypt => {
                let (io, sector) = online_reencrypt(file, pass, &args)
                    .with_context(|| format!("online re-encryption of {image}"))?;
                Export::plaintext(io, sector, args.read_only)?
            }
            (Some(pass), true) => {
                let volume =
                    Volume::open(file).with_context(|| format!("{image} is not a LUKS volume"))?;
                let plain = volume
                    .decrypted(pass)
                    .with_context(|| format!("unlocking {image}"))?;
                let sector = plain.sector_size() as u32;
                let io: Arc<dyn BlockIo> = Arc::new(plain);
                Export::plaintext(io, sector, args.read_only)?
            }
            _ => Export::raw(Arc::new(file), args.read_only)?,
        };
        exports
            .add(name, export)
            .with_context(|| format!("export {name}"))?;
    }
    let tls = match &args.tls_creds {
        Some(dir) => Some(
            TlsConfig::from_dir(dir)
                .with_context(|| format!("TLS credentials in {}", dir.display()))?,
        ),
        None => None,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut server = Server::bind(&listen, exports)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        if let Some(addr) = server.local_addr() {
            eprintln!("rekey-nbd-serve: listening on {addr}");
        }
        server.run().await;
        Ok(())
    })
}

/// The plaintext view of `file` under online re-encryption (started,
/// resumed, or — when only the new passphrase opens it — already done), with
/// the driver running on its own thread.
fn online_reencrypt(
    file: FileIo,
    pass: &[u8],
    args: &Args,
) -> anyhow::Result<(Arc<dyn BlockIo>, u32)> {
    let path = args.new_key_file.as_ref().expect("required by clap");
    let new_pass =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let volume = Volume::open(file).context("not a LUKS volume")?;
    let online = if reencrypt::in_progress(&volume) {
        Online::resume(volume, pass, Some(&new_pass))?
    } else if volume.unlock(pass, None).is_ok() {
        let pbkdf = match args.pbkdf_force_iterations {
            Some(n) => PbkdfOptions {
                kind: Some(PbkdfKind::Pbkdf2),
                force_iterations: Some(n),
                ..Default::default()
            },
            None => PbkdfOptions::default(),
        };
        let opts = ReencryptOptions {
            pbkdf,
            hotzone: args.hotzone,
            ..Default::default()
        };
        Online::start(volume, OldKey::Passphrase(pass), &new_pass, &opts)?
    } else {
        let plain = volume
            .decrypted(&new_pass)
            .context("neither passphrase opens it")?;
        eprintln!("rekey-nbd-serve: already under the new key");
        let sector = plain.sector_size() as u32;
        return Ok((Arc::new(plain), sector));
    };
    let online = Arc::new(online);
    let sector = online.sector_size() as u32;
    let driver = online.clone();
    let (hotzone, pause) = (
        args.hotzone,
        std::time::Duration::from_millis(args.hotzone_pause_ms),
    );
    std::thread::spawn(move || {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        match driver.run(hotzone, threads, &|_, _| std::thread::sleep(pause)) {
            Ok(r) => eprintln!(
                "rekey-nbd-serve: re-encryption finished: {} bytes, new keyslot {}",
                r.bytes, r.keyslot
            ),
            Err(e) => eprintln!("rekey-nbd-serve: re-encryption failed: {e}"),
        }
    });
    Ok((online, sector))
}
