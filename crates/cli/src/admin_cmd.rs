//! Local admin commands that read the data directory directly (as root on
//! the host, like reading Barbican with admin rights): `rekey key show`,
//! `rekey key rotate-kek`, `rekey key migrate`, `rekey volume path`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::serve_cmd::resolve_config;

#[derive(Args)]
pub struct DataDirArgs {
    /// Data directory of the service [default: ./rekey-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The service's TOML configuration (for a non-default key manager or database).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Print a key's bytes as lowercase hex (= its os-brick passphrase).
    Show {
        /// Key id (the volume's encryption_key_id).
        key_id: String,
        /// Print exactly the passphrase, without a newline (for --key-file=-).
        #[arg(long)]
        passphrase: bool,
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Re-wrap every key of the embedded store under a new key-encryption
    /// key and replace the KEK file (crash-safe, resumable; stop the service
    /// first).
    RotateKek {
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Move every key the volumes, snapshots and backups name to another key
    /// manager: copy, check the copy opens the volume, record it, delete the
    /// old key. Run it with the service stopped; safe to kill and rerun.
    /// Afterwards start the service with the target's [key_manager].
    Migrate {
        /// A rekey TOML configuration whose [key_manager] is the target.
        #[arg(long)]
        to_config: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArgs,
    },
}

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Report volumes that share a key id, a passphrase or a volume key
    /// (keyed fingerprints only, never keys), with the fix for each group.
    Audit {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Print where a volume's bytes live (the backing file for the file backend).
    Path {
        /// Volume id.
        volume_id: String,
        #[command(flatten)]
        dir: DataDirArgs,
    },
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// List unfinished jobs: id, kind, target, current state, lease holder.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Show one unfinished job as JSON, its machine state included.
    Show {
        /// Job id.
        job_id: String,
        #[command(flatten)]
        dir: DataDirArgs,
    },
}

pub fn run_job(cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::List { json, dir } => {
            let config = resolve_config(dir.config.as_ref(), dir.data_dir.as_ref())?;
            let jobs = runtime()?.block_on(rekey_service::admin::jobs(&config))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                for j in &jobs {
                    println!(
                        "{} {} {} {} attempts={} node={} epoch={}",
                        j.id,
                        j.kind,
                        j.target_id,
                        j.step,
                        j.attempts,
                        j.lease_owner.as_deref().unwrap_or("-"),
                        j.epoch
                    );
                }
            }
            Ok(())
        }
        JobCommand::Show { job_id, dir } => {
            let config = resolve_config(dir.config.as_ref(), dir.data_dir.as_ref())?;
            let jobs = runtime()?.block_on(rekey_service::admin::jobs(&config))?;
            let job = jobs.iter().find(|j| j.id == job_id).with_context(|| format!("no unfinished job {job_id}"))?;
            println!("{}", serde_json::to_string_pretty(job)?);
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")
}

pub fn run_key(cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Show { key_id, passphrase, dir } => {
            let config = resolve_config(dir.config.as_ref(), dir.data_dir.as_ref())?;
            let key = runtime()?.block_on(rekey_service::admin::key_bytes(&config, &key_id))?;
            let pass = rekey_keys::passphrase_hex(&key);
            let mut out = std::io::stdout().lock();
            out.write_all(pass.as_bytes())?;
            if !passphrase {
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        KeyCommand::Migrate { to_config, json, dir } => migrate(to_config, json, dir),
        KeyCommand::RotateKek { dir } => {
            let config = resolve_config(dir.config.as_ref(), dir.data_dir.as_ref())?;
            let rekey_keys::KeyManagerConfig::Embedded(store) = config.key_manager() else {
                anyhow::bail!("rotate-kek rotates the embedded key store's KEK; this service's keys live in another key manager");
            };
            let bar = count_bar("re-wrapping keys");
            let done = runtime()?.block_on(rekey_keys::rotate_kek(&store, |done, total| {
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(done);
                }
            }))?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            println!(
                "rotated the KEK: {} of {} keys re-wrapped by this run; new KEK in {}",
                done.rewrapped,
                done.total,
                done.kek_path.display()
            );
            Ok(())
        }
    }
}

fn migrate(to_config: PathBuf, json: bool, dir: DataDirArgs) -> Result<()> {
    let config = resolve_config(dir.config.as_ref(), dir.data_dir.as_ref())?;
    let target = rekey_service::Config::load(&to_config)?
        .key_manager
        .with_context(|| format!("{} has no [key_manager] section to migrate to", to_config.display()))?;
    let bar = count_bar("migrating keys");
    let summary = runtime()?.block_on(rekey_service::key_migrate::migrate_keys(&config, &target, |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    }))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} -> {}: {} records, {} keys moved, {} already moved, {} leftover old keys deleted, {} missing",
            summary.from,
            summary.to,
            summary.records,
            summary.migrated,
            summary.already_migrated,
            summary.leftovers_deleted,
            summary.missing.len()
        );
        for m in &summary.missing {
            println!("  missing key: {m}");
        }
    }
    if !summary.missing.is_empty() {
        anyhow::bail!("{} records name a key that is in neither key manager", summary.missing.len());
    }
    Ok(())
}

/// A counting progress bar on a terminal (stderr), none otherwise.
fn count_bar(what: &'static str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} eta {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        b.set_message(what);
        b
    })
}

pub fn run_volume(cmd: VolumeCommand) -> Result<()> {
    match cmd {
        VolumeCommand::Audit { json, dir } => {
            let config = resolve_config(dir.config.as_ref(), dir.data_dir.as_ref())?;
            let report = runtime()?.block_on(rekey_service::admin::audit(&config))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_audit(&report);
            }
            Ok(())
        }
        VolumeCommand::Path { volume_id, dir } => {
            let config = resolve_config(dir.config.as_ref(), dir.data_dir.as_ref())?;
            let loc = runtime()?.block_on(rekey_service::admin::volume_location(&config, &volume_id))?;
            println!("{loc}");
            Ok(())
        }
    }
}

fn print_audit(r: &rekey_service::paths::audit::AuditReport) {
    println!("{} volumes, {} encrypted and unlocked", r.volumes, r.encrypted);
    for k in &r.shared_key_ids {
        println!("shared key id {}: {}", k.key_id, k.records.join(", "));
    }
    for (what, groups) in [("passphrase", &r.shared_passphrases), ("volume key", &r.shared_volume_keys)] {
        for g in groups.iter() {
            println!("shared {what} {}: {}", g.fingerprint, g.volumes.join(", "));
            println!("  fix: {}", g.fix);
        }
    }
    for x in &r.extra_keyslots {
        println!("volume {} has {} keyslots {:?}", x.volume, x.keyslots.len(), x.keyslots);
    }
    for k in &r.unreferenced_keys {
        println!("unreferenced key {} of project {} ({}): nothing names it; delete it", k.key_id, k.project, k.name);
    }
    for u in &r.unfinished_reencryptions {
        println!("volume {} ({}) has an unfinished re-encryption ({})", u.volume, u.status, u.requirement);
        println!("  fix: {}", u.fix);
    }
    for e in &r.errors {
        println!("cannot check volume {}: {}", e.volume, e.error);
    }
    for m in &r.key_managers {
        println!("key manager {}: {} keys referenced, {} not", m.backend, m.referenced, m.unreferenced);
    }
    if r.is_clean() {
        println!("no shared keys, no unreferenced keys: every volume is independent");
    }
}
