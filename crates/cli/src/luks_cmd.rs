//! `rekey luks …`: cryptsetup-like commands over the engine.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rekey_luks::crypto::{CipherSpec, HashAlg};
use rekey_luks::dump::DumpInfo;
use rekey_luks::{BlockIo, FileIo, FormatOptions, PbkdfKind, PbkdfOptions, Secret, Version, Volume};

#[derive(Subcommand)]
pub enum LuksCommand {
    /// Format IMAGE as a new LUKS volume (destroys what it held).
    Format(FormatArgs),
    /// Show the header.
    Dump(DumpArgs),
    /// Check a passphrase (exit 0 if it opens a keyslot, 2 if not).
    TestKey(TestKeyArgs),
    /// Add a keyslot for a new passphrase.
    AddKey(AddKeyArgs),
    /// Replace a passphrase: new keyslot first, then the old one destroyed.
    ChangeKey(ChangeKeyArgs),
    /// Destroy the keyslot that opens with the passphrase.
    RemoveKey(RemoveKeyArgs),
    /// Destroy keyslot N (authorised by a passphrase of another keyslot).
    KillSlot(KillSlotArgs),
    /// Re-encrypt all data under a new volume key (resumable).
    Reencrypt(ReencryptArgs),
    /// Write the plaintext to OUTPUT (sparse where the plaintext is zero).
    Export(ExportArgs),
    /// Write INPUT's bytes as plaintext at offset 0 of IMAGE.
    Import(ImportArgs),
    /// Cipher speeds on this CPU (in memory, one core, 4 KiB data units).
    Benchmark(crate::bench_cmd::BenchmarkArgs),
    /// Save the header and keyslots to a file (cryptsetup luksHeaderBackup's format).
    HeaderBackup(HeaderBackupArgs),
    /// Write a header backup back over IMAGE's metadata (cryptsetup luksHeaderRestore).
    HeaderRestore(HeaderRestoreArgs),
    /// Print the UUID, or set it with --uuid (cryptsetup luksUUID).
    Uuid(UuidArgs),
    /// Set the LUKS2 label and/or subsystem (cryptsetup config).
    Config(ConfigArgs),
}

#[derive(Args)]
pub struct UuidArgs {
    /// New UUID.
    #[arg(long)]
    uuid: Option<String>,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// New label.
    #[arg(long)]
    label: Option<String>,
    /// New subsystem.
    #[arg(long)]
    subsystem: Option<String>,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct HeaderBackupArgs {
    /// Backup file to create (must not exist).
    #[arg(long)]
    header_backup_file: PathBuf,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct HeaderRestoreArgs {
    /// Backup file made by header-backup or cryptsetup luksHeaderBackup.
    #[arg(long)]
    header_backup_file: PathBuf,
    /// Replace a different LUKS header without asking.
    #[arg(long, short = 'q')]
    batch_mode: bool,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct ReencryptArgs {
    /// Current passphrase file (`-` = stdin).
    #[arg(long, short = 'd', required_unless_present = "volume_key_file")]
    key_file: Option<PathBuf>,
    /// Current raw volume key file instead of a passphrase (needs --new-key-file; not with --resume).
    #[arg(long, conflicts_with_all = ["key_file", "resume"], requires = "new_key_file")]
    volume_key_file: Option<PathBuf>,
    /// Passphrase for the new volume key (default: the current one).
    #[arg(long)]
    new_key_file: Option<PathBuf>,
    /// New cipher (default: keep).
    #[arg(long, short = 'c')]
    cipher: Option<String>,
    /// New key size in bits (default: keep).
    #[arg(long, short = 's')]
    key_size: Option<u32>,
    /// Continue an interrupted re-encryption.
    #[arg(long)]
    resume: bool,
    /// Data converted per crash-safe step, in MiB (default: 256 in
    /// cryptsetup's format, as the resilience area allows).
    #[arg(long)]
    hotzone_mib: Option<u64>,
    /// Crypt workers (default: one per CPU).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Hotzone protection, as cryptsetup's: checksum, journal or none.
    #[arg(long, default_value = "checksum")]
    resilience: String,
    /// Data converted per crash-safe step (64M, 16MiB, bytes); overrides --hotzone-mib.
    #[arg(long, value_parser = crate::size::parse_size, conflicts_with = "hotzone_mib")]
    hotzone_size: Option<u64>,
    /// Encrypt the plaintext IMAGE in place (a new LUKS2 header: in --header FILE,
    /// or at the start of IMAGE with --reduce-device-size).
    #[arg(long, conflicts_with_all = ["decrypt", "resume", "volume_key_file", "new_key_file"])]
    encrypt: bool,
    /// Remove the encryption: IMAGE ends up holding the plaintext (needs --header, as cryptsetup 2.6).
    #[arg(long, conflicts_with_all = ["resume", "volume_key_file", "new_key_file"])]
    decrypt: bool,
    /// With --encrypt and no --header: room freed at the end of IMAGE (the data moves
    /// towards it by half of this; the header takes the first half).
    #[arg(long, value_parser = crate::size::parse_size, requires = "encrypt")]
    reduce_device_size: Option<u64>,
    /// Encryption sector size for --encrypt.
    #[arg(long, default_value_t = 512, value_parser = crate::size::parse_size_u32)]
    sector_size: u32,
    /// Detached LUKS header file (cryptsetup's --header); IMAGE then holds only the data.
    #[arg(long)]
    header: Option<PathBuf>,
    #[command(flatten)]
    pbkdf: PbkdfArgs,
    #[command(flatten)]
    progress: ProgressArgs,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Passphrase file (`-` = stdin).
    #[arg(long, short = 'd', required_unless_present = "volume_key_file")]
    key_file: Option<PathBuf>,
    /// Raw volume key file instead of a passphrase.
    #[arg(long, conflicts_with = "key_file")]
    volume_key_file: Option<PathBuf>,
    #[command(flatten)]
    progress: ProgressArgs,
    /// Crypt workers (default: one per CPU).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Detached LUKS header file (cryptsetup's --header); IMAGE then holds only the data.
    #[arg(long)]
    header: Option<PathBuf>,
    /// Image file or block device.
    image: PathBuf,
    /// Plaintext output file.
    output: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Passphrase file (`-` = stdin).
    #[arg(long, short = 'd', required_unless_present = "volume_key_file")]
    key_file: Option<PathBuf>,
    /// Raw volume key file instead of a passphrase.
    #[arg(long, conflicts_with = "key_file")]
    volume_key_file: Option<PathBuf>,
    #[command(flatten)]
    progress: ProgressArgs,
    /// Crypt workers (default: one per CPU).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Plaintext input file.
    input: PathBuf,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args, Clone, Copy)]
pub struct ProgressArgs {
    /// Progress as JSON lines on stdout instead of a bar.
    #[arg(long)]
    json: bool,
}

/// Where `rbd:POOL/IMAGE[@SNAP]` images live.
#[derive(Args, Clone, Default)]
pub struct CephArgs {
    /// ceph.conf for `rbd:` images (default: $CEPH_CONF, then Ceph's search path).
    #[arg(long, global = true)]
    ceph_conf: Option<PathBuf>,
    /// Ceph client name for `rbd:` images (default: admin).
    #[arg(long, global = true)]
    ceph_user: Option<String>,
}

thread_local! {
    static CEPH: std::cell::RefCell<CephArgs> = std::cell::RefCell::new(CephArgs::default());
}

/// An image: a file or block device, or `rbd:POOL/IMAGE[@SNAP]` through librbd.
type Image = Box<dyn BlockIo>;

fn open_image(image: &Path, write: bool) -> Result<Image> {
    let name = image.to_string_lossy();
    if let Some(_spec) = name.strip_prefix("rbd:") {
        #[cfg(feature = "rbd")]
        {
            let ceph = CEPH.with(|c| c.borrow().clone());
            let io = rekey_storage::rbd::open_rbd_spec(&name, ceph.ceph_conf.as_deref(), ceph.ceph_user.as_deref())
                .with_context(|| format!("cannot open {name}"))?;
            if write && _spec.contains('@') {
                bail!("{name} is a snapshot and cannot be written");
            }
            return Ok(io);
        }
        #[cfg(not(feature = "rbd"))]
        bail!("{name}: this rekey was built without RBD support (cargo feature `rbd`)");
    }
    let io = if write { FileIo::open(image) } else { FileIo::open_read_only(image) };
    Ok(Box::new(io.with_context(|| format!("cannot open {}", image.display()))?))
}

#[derive(Args, Clone)]
pub struct PbkdfArgs {
    /// pbkdf2, argon2i or argon2id.
    #[arg(long)]
    pbkdf: Option<String>,
    /// Hash for PBKDF2 and the AF splitter.
    #[arg(long, default_value = "sha256")]
    hash: String,
    /// Fixed iterations (PBKDF2) or time cost (Argon2); skips benchmarking.
    #[arg(long)]
    pbkdf_force_iterations: Option<u32>,
    /// Unlock time target in milliseconds.
    #[arg(long, short = 'i', default_value_t = rekey_luks::pbkdf::DEFAULT_ITER_TIME_MS)]
    iter_time: u32,
    /// Argon2 memory cost in KiB.
    #[arg(long)]
    pbkdf_memory: Option<u32>,
    /// Argon2 threads/lanes.
    #[arg(long)]
    pbkdf_parallel: Option<u32>,
}

impl PbkdfArgs {
    fn options(&self) -> Result<PbkdfOptions> {
        Ok(PbkdfOptions {
            kind: self.pbkdf.as_deref().map(PbkdfKind::parse).transpose()?,
            hash: HashAlg::from_name(&self.hash).map_err(rekey_luks::Error::from)?,
            force_iterations: self.pbkdf_force_iterations,
            iter_time_ms: self.iter_time,
            memory_kib: self.pbkdf_memory,
            parallel: self.pbkdf_parallel,
        })
    }
}

#[derive(Args)]
pub struct FormatArgs {
    /// luks1 or luks2.
    #[arg(long = "type", default_value = "luks2")]
    kind: String,
    /// aes-xts-plain64, aes-cbc-essiv:sha256 or aes-cbc-plain64.
    #[arg(long, short = 'c', default_value = "aes-xts-plain64")]
    cipher: String,
    /// Volume key size in bits.
    #[arg(long, short = 's')]
    key_size: Option<u32>,
    /// Encryption sector size (LUKS2): 512 to 4096 (4K).
    #[arg(long, default_value_t = 512, value_parser = crate::size::parse_size_u32)]
    sector_size: u32,
    #[command(flatten)]
    pbkdf: PbkdfArgs,
    /// LUKS2 label.
    #[arg(long)]
    label: Option<String>,
    /// LUKS2 subsystem.
    #[arg(long)]
    subsystem: Option<String>,
    /// UUID instead of a random one.
    #[arg(long)]
    uuid: Option<String>,
    /// Keyslot for the passphrase.
    #[arg(long, short = 'S')]
    key_slot: Option<u32>,
    /// Create (or grow) IMAGE as a sparse file of this size (40M, 1G, bytes).
    #[arg(long, value_parser = crate::size::parse_size)]
    size: Option<u64>,
    /// Passphrase file (`-` = stdin), taken byte for byte.
    #[arg(long, short = 'd')]
    key_file: PathBuf,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct DumpArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Also print the volume key (needs --key-file).
    #[arg(long, requires = "key_file")]
    dump_volume_key: bool,
    /// Passphrase file for --dump-volume-key.
    #[arg(long, short = 'd')]
    key_file: Option<PathBuf>,
    /// Detached LUKS header file (cryptsetup's --header); IMAGE then holds only the data.
    #[arg(long)]
    header: Option<PathBuf>,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct TestKeyArgs {
    /// Passphrase file (`-` = stdin).
    #[arg(long, short = 'd', required_unless_present = "volume_key_file")]
    key_file: Option<PathBuf>,
    /// Raw volume key file (as `cryptsetup luksDump --dump-volume-key` gives it) instead of a passphrase.
    #[arg(long, conflicts_with = "key_file")]
    volume_key_file: Option<PathBuf>,
    /// Only try this keyslot.
    #[arg(long, short = 'S')]
    key_slot: Option<u32>,
    /// Report as JSON.
    #[arg(long)]
    json: bool,
    /// Detached LUKS header file (cryptsetup's --header); IMAGE then holds only the data.
    #[arg(long)]
    header: Option<PathBuf>,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct AddKeyArgs {
    /// Existing passphrase file (`-` = stdin).
    #[arg(long, short = 'd', required_unless_present = "volume_key_file")]
    key_file: Option<PathBuf>,
    /// Raw volume key file instead of an existing passphrase (to regain one).
    #[arg(long, conflicts_with = "key_file")]
    volume_key_file: Option<PathBuf>,
    /// New passphrase file.
    #[arg(long)]
    new_key_file: PathBuf,
    /// Keyslot for the new passphrase.
    #[arg(long, short = 'S')]
    key_slot: Option<u32>,
    #[command(flatten)]
    pbkdf: PbkdfArgs,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct ChangeKeyArgs {
    /// Current passphrase file (`-` = stdin).
    #[arg(long, short = 'd')]
    key_file: PathBuf,
    /// New passphrase file.
    #[arg(long)]
    new_key_file: PathBuf,
    /// Only the keyslot to change (the new one still goes to a free slot).
    #[arg(long, short = 'S')]
    key_slot: Option<u32>,
    #[command(flatten)]
    pbkdf: PbkdfArgs,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct RemoveKeyArgs {
    /// Passphrase file of the keyslot to destroy (`-` = stdin).
    #[arg(long, short = 'd')]
    key_file: PathBuf,
    /// Allow destroying the last keyslot (the volume can then never be opened).
    #[arg(long, short = 'q')]
    batch_mode: bool,
    /// Image file or block device.
    image: PathBuf,
}

#[derive(Args)]
pub struct KillSlotArgs {
    /// Passphrase file of any keyslot (`-` = stdin).
    #[arg(long, short = 'd')]
    key_file: PathBuf,
    /// Allow destroying the last keyslot.
    #[arg(long, short = 'q')]
    batch_mode: bool,
    /// Image file or block device.
    image: PathBuf,
    /// Keyslot to destroy.
    slot: u32,
}

/// Reads a key file whole, byte for byte (no newline stripping), as cryptsetup.
fn read_key_file(path: &Path) -> Result<Secret> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut buf).context("reading passphrase from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .with_context(|| format!("reading key file {}", path.display()))?;
    }
    let s = Secret::from(buf);
    if s.is_empty() {
        bail!("key file {} is empty", path.display());
    }
    Ok(s)
}

/// A raw volume key from `path`, checked against the header's digest; a key
/// that does not match is exit 2, like a wrong passphrase.
fn volume_key(v: &Volume<Image>, path: &Path) -> Result<Secret> {
    let vk = Secret::from(std::fs::read(path).with_context(|| format!("reading volume key file {}", path.display()))?);
    if !v.verify_volume_key(&vk)? {
        return Err(anyhow::Error::new(rekey_luks::Error::WrongPassphrase)
            .context(format!("volume key in {} does not match the header's digest", path.display())));
    }
    Ok(vk)
}

fn decrypted(v: Volume<Image>, key_file: Option<&Path>, vk_file: Option<&Path>) -> Result<rekey_luks::Decrypted<Image>> {
    Ok(match (vk_file, key_file) {
        (Some(f), _) => {
            let vk = volume_key(&v, f)?;
            v.decrypted_with_key(&vk)?
        }
        (None, Some(k)) => v.decrypted(read_key_file(k)?.expose())?,
        (None, None) => bail!("give --key-file or --volume-key-file"),
    })
}

fn open_volume(image: &Path) -> Result<Volume<Image>> {
    Volume::open(open_image(image, true)?).with_context(|| format!("{}", image.display()))
}

fn open_volume_ro(image: &Path) -> Result<Volume<Image>> {
    Volume::open(open_image(image, false)?).with_context(|| format!("{}", image.display()))
}

fn refuse_last_slot(v: &Volume<Image>, slot: u32, batch: bool) -> Result<()> {
    let active = v.active_keyslots();
    if !batch && active.len() == 1 && active[0] == slot {
        bail!("keyslot {slot} is the last one; destroying it makes the volume unusable (use --batch-mode to force)");
    }
    Ok(())
}

pub fn run(cmd: LuksCommand, ceph: &CephArgs) -> Result<()> {
    CEPH.with(|c| *c.borrow_mut() = ceph.clone());
    match cmd {
        LuksCommand::Benchmark(a) => crate::bench_cmd::run(a),
        LuksCommand::Format(a) => {
            let version = Version::parse(&a.kind)?;
            let cipher = CipherSpec::parse(&a.cipher).map_err(rekey_luks::Error::from)?;
            let key_size_bits = a.key_size.unwrap_or(match cipher.mode {
                rekey_luks::crypto::cipher::Mode::XtsPlain64 => 512,
                _ => 256,
            });
            let passphrase = read_key_file(&a.key_file)?;
            let opts = FormatOptions {
                version,
                cipher,
                key_size_bits,
                sector_size: a.sector_size,
                pbkdf: a.pbkdf.options()?,
                label: a.label,
                subsystem: a.subsystem,
                uuid: a.uuid,
                keyslot: a.key_slot,
                // An image given to `luks format` may hold anything: wipe.
                zeroed: false,
            };
            opts.validate()?;
            let is_rbd = a.image.to_string_lossy().starts_with("rbd:");
            if is_rbd && a.size.is_some() {
                bail!("--size creates files only; create the RBD image with `rbd create`");
            }
            let created = a.size.is_some() && !a.image.exists();
            if let Some(size) = a.size {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&a.image)
                    .with_context(|| format!("cannot create {}", a.image.display()))?;
                f.set_len(size).with_context(|| format!("cannot resize {}", a.image.display()))?;
            }
            let result = open_image(&a.image, true)
                .and_then(|io| {
                    Volume::format(io, &opts, passphrase.expose(), None)
                        .with_context(|| format!("{}", a.image.display()))
                });
            if result.is_err() && created {
                let _ = std::fs::remove_file(&a.image);
            }
            result.map(drop)
        }
        LuksCommand::Dump(a) => {
            let v = open_volume_ro(a.header.as_deref().unwrap_or(&a.image))?;
            let info = DumpInfo::from_header(v.header());
            let vk = match &a.key_file {
                Some(k) if a.dump_volume_key => Some(v.unlock(read_key_file(k)?.expose(), None)?.1),
                _ => None,
            };
            let mut out = std::io::stdout().lock();
            if a.json {
                let mut j = serde_json::to_value(&info)?;
                if let Some(vk) = &vk {
                    j["volume_key"] = serde_json::Value::String(hex(vk.expose()));
                }
                writeln!(out, "{}", serde_json::to_string_pretty(&j)?)?;
            } else {
                write!(out, "{}", info.to_text())?;
                if let Some(vk) = &vk {
                    writeln!(out, "MK dump:\t{}", hex(vk.expose()))?;
                }
            }
            Ok(())
        }
        LuksCommand::TestKey(a) => {
            let v = open_volume_ro(a.header.as_deref().unwrap_or(&a.image))?;
            if let Some(f) = &a.volume_key_file {
                volume_key(&v, f)?;
                if a.json {
                    println!("{}", serde_json::json!({ "volume_key": "valid" }));
                } else {
                    eprintln!("Volume key matches.");
                }
                return Ok(());
            }
            let (slot, _) = v.unlock(read_key_file(a.key_file.as_deref().expect("clap"))?.expose(), a.key_slot)?;
            if a.json {
                println!("{}", serde_json::json!({ "keyslot": slot }));
            } else {
                eprintln!("Key slot {slot} unlocked.");
            }
            Ok(())
        }
        LuksCommand::AddKey(a) => {
            let mut v = open_volume(&a.image)?;
            let new = read_key_file(&a.new_key_file)?;
            let vk = match (&a.volume_key_file, &a.key_file) {
                (Some(f), _) => volume_key(&v, f)?,
                (None, Some(k)) => v.unlock(read_key_file(k)?.expose(), None)?.1,
                (None, None) => unreachable!("clap requires one"),
            };
            let slot = v.add_keyslot_with_key(&vk, new.expose(), a.key_slot, &a.pbkdf.options()?)?;
            eprintln!("Key slot {slot} created.");
            Ok(())
        }
        LuksCommand::Uuid(a) => {
            let v = if a.uuid.is_some() { open_volume(&a.image)? } else { open_volume_ro(&a.image)? };
            let v = match &a.uuid {
                Some(u) => rekey_luks::config::set_uuid(v, u)?,
                None => v,
            };
            println!("{}", rekey_luks::config::uuid(&v));
            Ok(())
        }
        LuksCommand::Config(a) => {
            if a.label.is_none() && a.subsystem.is_none() {
                bail!("nothing to change: give --label and/or --subsystem");
            }
            let mut v = open_volume(&a.image)?;
            rekey_luks::config::set_label(&mut v, a.label.as_deref(), a.subsystem.as_deref())?;
            Ok(())
        }
        LuksCommand::HeaderBackup(a) => {
            let v = open_volume_ro(&a.image)?;
            let bytes = rekey_luks::backup::backup(v.io())?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&a.header_backup_file)
                .with_context(|| format!("cannot create header backup file {}", a.header_backup_file.display()))?;
            f.write_all(&bytes).and_then(|_| f.sync_all()).context("writing the header backup")?;
            Ok(())
        }
        LuksCommand::HeaderRestore(a) => {
            let file = std::fs::read(&a.header_backup_file)
                .with_context(|| format!("cannot read {}", a.header_backup_file.display()))?;
            let io = open_image(&a.image, true)?;
            let (bytes, existing) = rekey_luks::backup::check_restore(&io, &file)?;
            if let rekey_luks::backup::Existing::Other(uuid) = &existing {
                if !a.batch_mode {
                    bail!(
                        "{} holds another LUKS header (UUID {uuid}); restoring destroys its keyslots: add --batch-mode",
                        a.image.display()
                    );
                }
            }
            rekey_luks::backup::restore(&io, &bytes)?;
            Ok(())
        }
        LuksCommand::ChangeKey(a) => {
            let mut v = open_volume(&a.image)?;
            let old = read_key_file(&a.key_file)?;
            let new = read_key_file(&a.new_key_file)?;
            let (from, to) = v.change_key(old.expose(), new.expose(), a.key_slot, &a.pbkdf.options()?)?;
            eprintln!("Key slot {from} destroyed; new passphrase in key slot {to}.");
            Ok(())
        }
        LuksCommand::RemoveKey(a) => {
            let mut v = open_volume(&a.image)?;
            let (slot, _) = v.unlock(read_key_file(&a.key_file)?.expose(), None)?;
            refuse_last_slot(&v, slot, a.batch_mode)?;
            v.destroy_keyslot(slot)?;
            eprintln!("Key slot {slot} destroyed.");
            Ok(())
        }
        LuksCommand::Reencrypt(a) => {
            use rekey_luks::reencrypt::{self, ReencryptOptions};
            let pass = match &a.key_file {
                Some(k) => Some(read_key_file(k)?),
                None => None,
            };
            let new = a.new_key_file.as_deref().map(read_key_file).transpose()?;
            let opts = ReencryptOptions {
                cipher: a.cipher.as_deref().map(CipherSpec::parse).transpose().map_err(rekey_luks::Error::from)?,
                key_size_bits: a.key_size,
                pbkdf: a.pbkdf.options()?,
                hotzone: match (a.hotzone_size, a.hotzone_mib) {
                    (Some(bytes), _) => bytes,
                    (None, Some(mib)) => mib.checked_mul(1 << 20).context("--hotzone-mib too large")?,
                    (None, None) => reencrypt::DEFAULT_HOTZONE,
                },
                threads: if a.threads == 0 { rekey_luks::pipeline::default_threads() } else { a.threads },
                resilience: reencrypt::ResilienceMode::parse(&a.resilience)?,
                ..Default::default()
            };
            if a.encrypt {
                return encrypt_cmd(&a, &opts);
            }
            let v = open_volume(a.header.as_deref().unwrap_or(&a.image))?;
            if a.decrypt || (a.resume && reencrypt::encdec::pending_mode(v.header())?.is_some()) {
                return decrypt_or_resume_cmd(&a, v, &opts);
            }
            if a.header.is_some() {
                bail!("--header is for --encrypt, --decrypt and resuming them; a re-encryption needs the header on IMAGE");
            }
            let vk = a.volume_key_file.as_deref().map(|f| volume_key(&v, f)).transpose()?;
            let new_ref = new.as_ref().map(|n| n.expose());
            let result = with_progress(a.progress, "reencrypt", |report| {
                match (&vk, &pass) {
                    (Some(vk), _) => reencrypt::reencrypt_with_volume_key(v, vk, new_ref.expect("clap"), &opts, report),
                    (None, Some(p)) if a.resume => reencrypt::resume(v, p.expose(), new_ref, &opts, report),
                    (None, Some(p)) => reencrypt::reencrypt(v, p.expose(), new_ref, &opts, report),
                    (None, None) => unreachable!("clap requires one"),
                }
            });
            let (_, rep) = result.with_context(|| format!("{}", a.image.display()))?;
            if a.progress.json {
                println!("{}", serde_json::json!({"op": "reencrypt", "result": rep}));
            } else {
                eprintln!(
                    "Re-encrypted {} bytes under a new volume key (key slot {}; destroyed key slots {:?}).",
                    rep.bytes, rep.keyslot, rep.destroyed_keyslots
                );
            }
            Ok(())
        }
        LuksCommand::Export(a) => {
            let d = match &a.header {
                Some(h) => {
                    let v = open_volume_ro(h)?;
                    let vk = match (&a.volume_key_file, &a.key_file) {
                        (Some(f), _) => volume_key(&v, f)?,
                        (None, Some(k)) => v.unlock(read_key_file(k)?.expose(), None)?.1,
                        (None, None) => unreachable!("clap requires one"),
                    };
                    rekey_luks::reencrypt::encdec::decrypted_detached(&v, open_image(&a.image, false)?, &vk)?
                }
                None => decrypted(open_volume_ro(&a.image)?, a.key_file.as_deref(), a.volume_key_file.as_deref())?,
            };
            let out = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&a.output)
                .with_context(|| format!("cannot create {}", a.output.display()))?;
            with_progress(a.progress, "export", |report| rekey_luks::transfer::export(&d, &out, a.threads, report))?;
            Ok(())
        }
        LuksCommand::Import(a) => {
            let v = open_volume(&a.image)?;
            let d = decrypted(v, a.key_file.as_deref(), a.volume_key_file.as_deref())?;
            let input = std::fs::File::open(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
            with_progress(a.progress, "import", |report| rekey_luks::transfer::import(&input, &d, a.threads, report))?;
            Ok(())
        }
        LuksCommand::KillSlot(a) => {
            let mut v = open_volume(&a.image)?;
            if !v.active_keyslots().contains(&a.slot) {
                bail!("keyslot {} is not active", a.slot);
            }
            // Any passphrase of the volume authorises it, as cryptsetup.
            v.unlock(read_key_file(&a.key_file)?.expose(), None)?;
            refuse_last_slot(&v, a.slot, a.batch_mode)?;
            v.destroy_keyslot(a.slot)?;
            eprintln!("Key slot {} destroyed.", a.slot);
            Ok(())
        }
    }
}

/// `reencrypt --encrypt`: a new LUKS2 header for the plaintext IMAGE, then
/// the data encrypted in place.
fn encrypt_cmd(a: &ReencryptArgs, opts: &rekey_luks::reencrypt::ReencryptOptions) -> Result<()> {
    if a.header.is_some() && a.reduce_device_size.is_some() {
        bail!("--reduce-device-size with --header is not supported (the data does not move with a detached header)");
    }
    if a.header.is_none() && a.reduce_device_size.is_none() {
        bail!("--encrypt needs --header FILE, or --reduce-device-size SIZE to make room for the header in IMAGE (as cryptsetup)");
    }
    let cipher = CipherSpec::parse(a.cipher.as_deref().unwrap_or("aes-xts-plain64")).map_err(rekey_luks::Error::from)?;
    let key_size_bits = a.key_size.unwrap_or(match cipher.mode {
        rekey_luks::crypto::cipher::Mode::XtsPlain64 => 512,
        _ => 256,
    });
    let format = FormatOptions {
        version: Version::Luks2,
        cipher,
        key_size_bits,
        sector_size: a.sector_size,
        pbkdf: a.pbkdf.options()?,
        ..Default::default()
    };
    format.validate()?;
    let pass = read_key_file(a.key_file.as_deref().context("--encrypt needs --key-file")?)?;
    let data = open_image(&a.image, true)?;
    let Some(header) = &a.header else {
        let reduce = a.reduce_device_size.expect("checked above");
        let result = with_progress(a.progress, "reencrypt", |report| {
            rekey_luks::reencrypt::encrypt_shift(data, reduce, &format, pass.expose(), opts, report)
        });
        let (_, rep) = result.with_context(|| format!("{}", a.image.display()))?;
        report_encdec(a.progress, "encrypt", &rep);
        return Ok(());
    };
    // A new header file, as cryptsetup makes it: 16 MiB, owner-only.
    let created = !header.exists();
    let file = if created {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new().write(true).read(true).create_new(true).mode(0o600).open(header)
    } else {
        OpenOptions::new().write(true).read(true).open(header)
    }
    .with_context(|| format!("cannot create header file {}", header.display()))?;
    if !created && file.metadata()?.len() > 0 && rekey_luks::volume::read_header(&FileIo::from_file(file.try_clone()?, header)?).is_ok() {
        bail!("{} already holds a LUKS header", header.display());
    }
    if file.metadata()?.len() < rekey_luks::volume::LUKS2_DATA_OFFSET {
        file.set_len(rekey_luks::volume::LUKS2_DATA_OFFSET)?;
    }
    let hdr_io = FileIo::from_file(file, header)?;
    let result = with_progress(a.progress, "reencrypt", |report| {
        rekey_luks::reencrypt::encdec::encrypt(hdr_io, &data, &format, pass.expose(), opts, report)
    });
    let rep = result.with_context(|| format!("{}", a.image.display()))?;
    report_encdec(a.progress, "encrypt", &rep);
    Ok(())
}

/// `reencrypt --decrypt`, or `--resume` of an encryption or decryption.
fn decrypt_or_resume_cmd(a: &ReencryptArgs, v: Volume<Image>, opts: &rekey_luks::reencrypt::ReencryptOptions) -> Result<()> {
    use rekey_luks::reencrypt::encdec;
    if a.decrypt && a.header.is_none() {
        bail!("--decrypt needs --header FILE (cryptsetup 2.6 decrypts LUKS2 only with a detached header)");
    }
    let op = match encdec::pending_mode(v.header())? {
        Some(rekey_luks::luks2::reenc::Mode::Encrypt) => "encrypt",
        _ => "decrypt",
    };
    // Without --header, IMAGE is both header and data: an encryption there
    // moves the data (cryptsetup's --reduce-device-size), and a decryption's
    // header is a detached one, whose data is elsewhere.
    if a.header.is_none() && op != "encrypt" {
        bail!("this is a detached header's decryption: give it as --header FILE and the data device as IMAGE");
    }
    let pass = read_key_file(a.key_file.as_deref().context("give --key-file")?)?;
    let data = open_image(&a.image, true)?;
    let result = with_progress(a.progress, "reencrypt", |report| {
        if a.resume {
            encdec::resume(v, &data, pass.expose(), opts, report)
        } else {
            encdec::decrypt(v, &data, pass.expose(), opts, report)
        }
    });
    let rep = result.with_context(|| format!("{}", a.image.display()))?;
    report_encdec(a.progress, op, &rep);
    Ok(())
}

fn report_encdec(progress: ProgressArgs, op: &str, rep: &rekey_luks::reencrypt::ReencryptReport) {
    if progress.json {
        println!("{}", serde_json::json!({"op": op, "result": rep}));
    } else if op == "encrypt" {
        eprintln!("Encrypted {} bytes in place (key slot {}).", rep.bytes, rep.keyslot);
    } else {
        eprintln!("Decrypted {} bytes in place (destroyed key slots {:?}).", rep.bytes, rep.destroyed_keyslots);
    }
}

/// A bar with throughput on a terminal, JSON lines with --json, else quiet.
fn progress_reporter(args: ProgressArgs, what: &'static str) -> (impl Fn(u64, u64) + Sync, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.set_message(what);
        b
    });
    let b2 = bar.clone();
    let last = std::sync::Mutex::new(std::time::Instant::now() - std::time::Duration::from_secs(1));
    let start = std::time::Instant::now();
    let f = move |done: u64, total: u64| {
        if let Some(b) = &b2 {
            b.set_length(total);
            b.set_position(done);
        } else if args.json {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            if done == total || l.elapsed().as_millis() >= 500 {
                *l = std::time::Instant::now();
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                println!(
                    "{}",
                    serde_json::json!({"op": what, "done": done, "total": total, "bytes_per_sec": (done as f64 / secs) as u64})
                );
            }
        }
    };
    (f, bar)
}

/// Runs `f` with a progress reporter, clearing the bar afterwards.
fn with_progress<T>(args: ProgressArgs, what: &'static str, f: impl FnOnce(&(dyn Fn(u64, u64) + Sync)) -> T) -> T {
    let (report, bar) = progress_reporter(args, what);
    let r = f(&report);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
