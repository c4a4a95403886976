//! Serves image files over NBD without the service, for tests and
//! benchmarks: `rekey-nbd-serve --listen 127.0.0.1:PORT --export NAME=IMAGE
//! [--luks --key-file F] [--read-only]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use rekey_luks::{BlockIo, FileIo, Volume};
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
