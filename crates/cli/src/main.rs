//! `rekey`: thin command line over the rekey crates. Parses arguments, calls
//! a library function, prints. No LUKS logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin_cmd;
mod bench_cmd;
mod json_log;
mod luks_cmd;
mod serve_cmd;
mod size;

/// Exit code for "no keyslot opens with that passphrase" (as cryptsetup).
const EXIT_WRONG_PASSPHRASE: u8 = 2;

#[derive(Parser)]
#[command(name = "rekey", version, about = "Encrypted volumes whose clones never share a key")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// LUKS volume operations on an image file or block device.
    Luks {
        #[command(flatten)]
        ceph: luks_cmd::CephArgs,
        #[command(subcommand)]
        cmd: luks_cmd::LuksCommand,
    },
    /// Run the Cinder v3 compatible volume service.
    Serve(serve_cmd::ServeArgs),
    /// Keys in the service's key manager (reads the data directory).
    Key {
        #[command(subcommand)]
        cmd: admin_cmd::KeyCommand,
    },
    /// Volumes of the service (reads the data directory).
    Volume {
        #[command(subcommand)]
        cmd: admin_cmd::VolumeCommand,
    },
    /// Unfinished jobs of the service (reads its database).
    Job {
        #[command(subcommand)]
        cmd: admin_cmd::JobCommand,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors with 2;
            // our contract reserves 2 for a wrong passphrase, so usage errors are 1.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Luks { ceph, cmd } => luks_cmd::run(cmd, &ceph),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Key { cmd } => admin_cmd::run_key(cmd),
        Command::Volume { cmd } => admin_cmd::run_volume(cmd),
        Command::Job { cmd } => admin_cmd::run_job(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// One clear line on stderr, and the exit code the contract gives it.
fn report(e: &anyhow::Error) -> ExitCode {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    // Some errors already print their cause; show each message once.
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let m = c.to_string();
        if !parts.last().is_some_and(|p| p.ends_with(&m)) {
            parts.push(m);
        }
    }
    let msg = parts.join(": ");
    eprintln!("rekey: {msg}");
    match e.downcast_ref::<rekey_luks::Error>() {
        Some(le) if le.kind() == rekey_luks::ErrorKind::WrongPassphrase => ExitCode::from(EXIT_WRONG_PASSPHRASE),
        _ => ExitCode::from(1),
    }
}
