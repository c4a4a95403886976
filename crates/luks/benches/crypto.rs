//! Crypto primitives against their anchors, in one run (issues 2 and 3):
//!
//! - PBKDF2-SHA256 iterations per CPU-second vs `cryptsetup benchmark`
//!   (both count CPU time, as cryptsetup does);
//! - Argon2id wall time for fixed parameters vs cryptsetup running the same
//!   KDF: `cryptsetup open --test-passphrase` on a keyslot with exactly these
//!   parameters, minus the same command on a PBKDF2-1000 keyslot of the same
//!   header (what remains is cryptsetup's Argon2; process start, header read,
//!   AF merge and digest cancel out);
//! - AES-XTS with 4 KiB data units vs `openssl speed -evp aes-256-xts -bytes
//!   4096` (CPU time, one thread). The ratio with a target is taken under
//!   the anchor's own conditions: `openssl speed` enciphers one 4 KiB buffer
//!   over and over, one data unit per call, the buffer hot in L1; ours does
//!   the same, with a new sector number each call; 256-bit LUKS keys
//!   likewise against `aes-128-xts`. Printed beside it, as information:
//!   ours streaming a 64 MiB buffer in 1 MiB calls, which adds the memory
//!   traffic `openssl speed` does not have.
//!
//! Ratios are ours/anchor as throughput (higher is better). Run through
//! `bench/crypto.sh`; `REKEY_BENCH_QUICK=1` shrinks every case for a smoke run.

use std::process::Command;
use std::time::{Duration, Instant};

use rekey_luks::crypto::kdf::{self, Argon2Variant, KdfParams};
use rekey_luks::crypto::{CipherSpec, HashAlg, SectorCipher, XtsImplementation};
use rekey_luks::Secret;

fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn quick() -> bool {
    std::env::var_os("REKEY_BENCH_QUICK").is_some()
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install it to run this benchmark"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Row {
    what: String,
    ours: String,
    anchor: String,
    ratio: f64,
    /// `None`: printed for information, no target.
    target: Option<f64>,
}

// ------------------------------------------------------------ (a) PBKDF2

fn ours_pbkdf2_per_sec(iterations: u32) -> f64 {
    let params = KdfParams::Pbkdf2 { hash: HashAlg::Sha256, iterations };
    let start = cpu_time();
    let out = kdf::derive(&params, b"foo", b"bar", 32).expect("pbkdf2");
    let spent = cpu_time() - start;
    std::hint::black_box(out);
    f64::from(iterations) / spent.as_secs_f64()
}

fn cryptsetup_pbkdf2_per_sec() -> f64 {
    let out = run("cryptsetup", &["benchmark", "--pbkdf", "pbkdf2", "--hash", "sha256"]);
    out.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("PBKDF2-sha256")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no PBKDF2-sha256 line in cryptsetup benchmark output:\n{out}"))
}

fn bench_pbkdf2(rows: &mut Vec<Row>) {
    let rounds = if quick() { 1 } else { 3 };
    // About one CPU-second per run, like cryptsetup's own measurement.
    let probe = ours_pbkdf2_per_sec(1 << 18);
    let iterations = if quick() { 1 << 18 } else { probe.clamp(1e5, 2e9) as u32 };
    let (mut ours, mut theirs) = (0f64, 0f64);
    for _ in 0..rounds {
        ours = ours.max(ours_pbkdf2_per_sec(iterations));
        theirs = theirs.max(cryptsetup_pbkdf2_per_sec());
    }
    println!("PBKDF2-sha256, 256-bit key: ours {ours:.0} it/s, cryptsetup {theirs:.0} it/s (best of {rounds})");
    rows.push(Row {
        what: "PBKDF2-SHA256 iterations/s".into(),
        ours: format!("{:.2} M", ours / 1e6),
        anchor: format!("{:.2} M (cryptsetup benchmark)", theirs / 1e6),
        ratio: ours / theirs,
        target: Some(0.95),
    });
}

// ------------------------------------------------------------ (b) Argon2id

fn ours_argon2(time: u32, memory_kib: u32, lanes: u32) -> Duration {
    let params = KdfParams::Argon2 { variant: Argon2Variant::Id, time, memory_kib, lanes };
    let start = Instant::now();
    let out = kdf::derive(&params, b"bench passphrase", &[7; 32], 64).expect("argon2");
    let spent = start.elapsed();
    std::hint::black_box(out);
    spent
}

/// cryptsetup's time for one Argon2id derivation with these parameters.
fn cryptsetup_argon2(dir: &std::path::Path, time: u32, memory_kib: u32, lanes: u32, rounds: usize) -> Duration {
    let img = dir.join(format!("argon-{memory_kib}-{lanes}.img"));
    std::fs::File::create(&img).and_then(|f| f.set_len(32 << 20)).expect("image");
    let (ka, kb) = (dir.join("argon.key"), dir.join("pbkdf2.key"));
    std::fs::write(&ka, b"argon passphrase").expect("key");
    std::fs::write(&kb, b"pbkdf2 passphrase").expect("key");
    let img_s = img.to_str().expect("utf-8 path");
    let (ka_s, kb_s) = (ka.to_str().expect("utf-8"), kb.to_str().expect("utf-8"));
    let (t, m, p) = (time.to_string(), memory_kib.to_string(), lanes.to_string());
    run("cryptsetup", &["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "argon2id",
        "--pbkdf-force-iterations", &t, "--pbkdf-memory", &m, "--pbkdf-parallel", &p,
        "--key-slot", "0", "--key-file", ka_s, img_s]);
    run("cryptsetup", &["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
        "--key-slot", "1", "--key-file", ka_s, img_s, kb_s]);
    let timed = |slot: &str, key: &str| {
        let start = Instant::now();
        run("cryptsetup", &["open", "--test-passphrase", "--key-slot", slot, "--key-file", key, img_s]);
        start.elapsed()
    };
    let (mut with_argon, mut without) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        with_argon = with_argon.min(timed("0", ka_s));
        without = without.min(timed("1", kb_s));
    }
    // Add back the 1000 PBKDF2 iterations the baseline spent.
    let pbkdf2_1000 = Duration::from_secs_f64(1000.0 / ours_pbkdf2_per_sec(1000));
    with_argon.saturating_sub(without) + pbkdf2_1000
}

fn bench_argon2(rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(u32, u32, u32, usize)] = if quick() {
        &[(4, 16 * 1024, 1, 1)]
    } else {
        &[(4, 64 * 1024, 1, 5), (4, 1024 * 1024, 4, 3)]
    };
    for &(time, memory_kib, lanes, rounds) in cases {
        let mut ours = Duration::MAX;
        for _ in 0..rounds {
            ours = ours.min(ours_argon2(time, memory_kib, lanes));
        }
        let theirs = cryptsetup_argon2(dir.path(), time, memory_kib, lanes, rounds);
        let label = format!("Argon2id t={time} m={} MiB p={lanes}", memory_kib / 1024);
        println!("{label}: ours {:.0} ms, cryptsetup {:.0} ms (best of {rounds})",
            ours.as_secs_f64() * 1e3, theirs.as_secs_f64() * 1e3);
        rows.push(Row {
            what: format!("{label} (speed = 1/time)"),
            ours: format!("{:.0} ms", ours.as_secs_f64() * 1e3),
            anchor: format!("{:.0} ms (cryptsetup open --test-passphrase)", theirs.as_secs_f64() * 1e3),
            ratio: theirs.as_secs_f64() / ours.as_secs_f64(),
            target: Some(0.95),
        });
    }
    let info = run("cryptsetup", &["benchmark", "--pbkdf", "argon2id"]);
    for l in info.lines().filter(|l| l.contains("Argon2id")) {
        println!("info: cryptsetup benchmark: {}", l.trim());
    }
}

// ------------------------------------------------------------ (c) AES-XTS

/// Bytes per CPU-second for `passes` passes over `buf` with `sector` sectors,
/// `per_call` bytes handed to the cipher per call.
fn ours_xts(c: &SectorCipher, buf: &mut [u8], per_call: usize, passes: usize, decrypt: bool) -> f64 {
    let start = cpu_time();
    for _ in 0..passes {
        for (i, chunk) in buf.chunks_mut(per_call).enumerate() {
            let iv = (i * per_call / 512) as u64;
            if decrypt {
                c.decrypt(chunk, 4096, iv).expect("xts");
            } else {
                c.encrypt(chunk, 4096, iv).expect("xts");
            }
        }
    }
    let spent = cpu_time() - start;
    (buf.len() * passes) as f64 / spent.as_secs_f64()
}

/// OpenSSL's XTS over 4 KiB blocks with one IV for all, as `openssl speed`
/// runs it: the ceiling for a per-sector EVP call.
fn raw_evp_xts(key_len: usize, buf: &mut [u8], passes: usize) -> f64 {
    let cipher = openssl::cipher::Cipher::fetch(None, &format!("AES-{}-XTS", key_len * 4), None).expect("fetch");
    let mut ctx = openssl::cipher_ctx::CipherCtx::new().expect("ctx");
    let key = Secret::random(key_len);
    ctx.encrypt_init(Some(&cipher), Some(key.expose()), Some(&[0u8; 16])).expect("init");
    let start = cpu_time();
    for _ in 0..passes {
        for sector in buf.chunks_mut(4096) {
            ctx.cipher_update_inplace(sector, 4096).expect("update");
        }
    }
    let spent = cpu_time() - start;
    (buf.len() * passes) as f64 / spent.as_secs_f64()
}

/// OpenSSL's XTS with the IV re-set per sector through `EVP_EncryptInit_ex`,
/// the only way the safe `openssl` crate offers (what `SectorCipher` did
/// before it moved to the `aes` crate).
fn evp_xts_reinit(key_len: usize, buf: &mut [u8], sector: usize, passes: usize) -> f64 {
    let cipher = openssl::cipher::Cipher::fetch(None, &format!("AES-{}-XTS", key_len * 4), None).expect("fetch");
    let mut ctx = openssl::cipher_ctx::CipherCtx::new().expect("ctx");
    let key = Secret::random(key_len);
    ctx.encrypt_init(Some(&cipher), Some(key.expose()), None).expect("init");
    let start = cpu_time();
    for _ in 0..passes {
        for (i, s) in buf.chunks_mut(sector).enumerate() {
            let mut iv = [0u8; 16];
            iv[..8].copy_from_slice(&((i * sector / 512) as u64).to_le_bytes());
            ctx.encrypt_init(None, None, Some(&iv)).expect("iv");
            ctx.cipher_update_inplace(s, sector).expect("update");
        }
    }
    let spent = cpu_time() - start;
    (buf.len() * passes) as f64 / spent.as_secs_f64()
}

/// `ours_xts` with `sector`-byte sectors.
fn ours_xts_sectors(c: &SectorCipher, buf: &mut [u8], sector: usize, passes: usize) -> f64 {
    let start = cpu_time();
    for _ in 0..passes {
        for (i, chunk) in buf.chunks_mut(1 << 20).enumerate() {
            c.encrypt(chunk, sector, (i * (1 << 20) / 512) as u64).expect("xts");
        }
    }
    let spent = cpu_time() - start;
    (buf.len() * passes) as f64 / spent.as_secs_f64()
}

fn openssl_speed(cipher: &str, decrypt: bool) -> f64 {
    let secs = if quick() { "1" } else { "3" };
    let mut args = vec!["speed", "-mr", "-seconds", secs, "-bytes", "4096"];
    if decrypt {
        args.push("-decrypt");
    }
    args.extend(["-evp", cipher]);
    let out = run("openssl", &args);
    // Machine-readable result: "+F:<n>:<NAME>:<bytes per second>".
    out.lines()
        .find_map(|l| l.strip_prefix("+F:")?.rsplit(':').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no +F line in openssl speed output:\n{out}"))
}

/// One 4 KiB data unit per call on a hot 4 KiB buffer, a new sector number
/// each call: `openssl speed`'s loop, with the per-call work LUKS needs.
fn ours_xts_hot_unit(c: &SectorCipher, calls: usize, decrypt: bool) -> f64 {
    let mut unit = vec![0x5au8; 4096];
    let start = cpu_time();
    for i in 0..calls {
        let iv = (i * 8) as u64;
        if decrypt {
            c.decrypt(&mut unit, 4096, iv).expect("xts");
        } else {
            c.encrypt(&mut unit, 4096, iv).expect("xts");
        }
    }
    let spent = cpu_time() - start;
    (4096 * calls) as f64 / spent.as_secs_f64()
}

/// The target for an implementation's hot 4 KiB figure against `openssl
/// speed` (OpenSSL 3.0 has no VAES XTS): 1.5 for the VAES kernels, 1.0 for
/// AES-NI (what an AES-NI-only CPU runs); the portable path has none.
fn xts_target(imp: XtsImplementation) -> Option<f64> {
    match imp {
        XtsImplementation::VaesAvx512 | XtsImplementation::VaesAvx2 => Some(1.5),
        XtsImplementation::AesNi => Some(1.0),
        XtsImplementation::Portable => None,
    }
}

fn bench_xts(rows: &mut Vec<Row>) {
    let size = if quick() { 8 << 20 } else { 64 << 20 };
    let passes = if quick() { 2 } else { 8 };
    let rounds = if quick() { 1 } else { 3 };
    let calls = if quick() { 50_000 } else { 500_000 };
    let mut buf = Secret::random(size);
    let imps = XtsImplementation::supported();
    println!(
        "XTS kernels this CPU runs: {} (selected: {})",
        imps.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
        XtsImplementation::selected()
    );
    // aes-256-xts is the anchor: the 512-bit LUKS key, what `rekey
    // luks format` and cryptsetup 2.x use by default; 256-bit keys are held
    // to the same target against aes-128-xts.
    for (key_len, openssl_name) in [(64usize, "aes-256-xts"), (32, "aes-128-xts")] {
        let key = Secret::random(key_len);
        let bits = key_len * 8;
        for decrypt in [false, true] {
            let dir = if decrypt { "decrypt" } else { "encrypt" };
            // Best of `rounds` for each side, the runs of the two interleaved
            // so that a noisy moment of the shared machine hits both.
            let mut theirs = 0f64;
            let mut ours: Vec<(XtsImplementation, f64, f64)> = imps.iter().map(|&i| (i, 0.0, 0.0)).collect();
            for _ in 0..rounds {
                theirs = theirs.max(openssl_speed(openssl_name, decrypt));
                for (imp, hot, stream) in &mut ours {
                    let c = SectorCipher::with_xts_implementation(key.expose(), *imp).expect("cipher");
                    *hot = hot.max(ours_xts_hot_unit(&c, calls, decrypt));
                    *stream = stream.max(ours_xts(&c, buf.as_mut(), 1 << 20, passes, decrypt));
                }
            }
            let anchor = format!("{:.2} GB/s (openssl speed -evp {openssl_name}{})", theirs / 1e9, if decrypt { " -decrypt" } else { "" });
            for (imp, hot, stream) in ours {
                println!(
                    "AES-XTS {bits}-bit key {dir} [{imp}]: {:.2} GB/s one 4 KiB unit per call on a hot buffer \
                     ({:.2}x openssl speed {:.2} GB/s), {:.2} GB/s streaming 64 MiB in 1 MiB calls",
                    hot / 1e9, hot / theirs, theirs / 1e9, stream / 1e9
                );
                rows.push(Row {
                    what: format!("AES-XTS {bits}-bit key {dir}, 4 KiB unit per call, hot buffer, {imp}"),
                    ours: format!("{:.2} GB/s", hot / 1e9),
                    anchor: anchor.clone(),
                    ratio: hot / theirs,
                    target: xts_target(imp),
                });
                rows.push(Row {
                    what: format!("AES-XTS {bits}-bit key {dir}, streaming 64 MiB, {imp}"),
                    ours: format!("{:.2} GB/s", stream / 1e9),
                    anchor: anchor.clone(),
                    ratio: stream / theirs,
                    target: None,
                });
            }
        }
        if quick() || std::env::var_os("REKEY_BENCH_XTS_INFO").is_none() {
            continue;
        }
        // Where the cost goes (REKEY_BENCH_XTS_INFO=1): OpenSSL's XTS driven
        // like `openssl speed` does (no IV reset between sectors, so not
        // usable for LUKS) in this same process, and the per-sector EVP
        // re-init the engine used first.
        let c = SectorCipher::new(&CipherSpec::parse("aes-xts-plain64").expect("spec"), key.expose()).expect("cipher");
        let mut hot = vec![0u8; 256 << 10];
        let raw = raw_evp_xts(key_len, &mut hot, 2000);
        let per_sector = ours_xts(&c, buf.as_mut(), 4096, passes / 2, false);
        let evp4k = evp_xts_reinit(key_len, buf.as_mut(), 4096, passes / 2);
        let ours512 = ours_xts_sectors(&c, buf.as_mut(), 512, passes / 2);
        let evp512 = evp_xts_reinit(key_len, buf.as_mut(), 512, passes / 2);
        println!(
            "info: XTS {bits}-bit encrypt [{}], 64 MiB: one call per 4 KiB sector {:.2} GB/s; 512-byte sectors {:.2} GB/s; \
             EVP XTS with the IV re-set per sector {:.2} GB/s (4 KiB), {:.2} GB/s (512 B); raw EVP loop without per-sector IV \
             (256 KiB hot) {:.2} GB/s",
            XtsImplementation::selected(), per_sector / 1e9, ours512 / 1e9, evp4k / 1e9, evp512 / 1e9, raw / 1e9
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter word picks sections.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let mut rows = Vec::new();
    if want("pbkdf2") {
        bench_pbkdf2(&mut rows);
    }
    if want("argon2") {
        bench_argon2(&mut rows);
    }
    if want("xts") {
        bench_xts(&mut rows);
    }
    println!();
    println!("| case | ours | anchor | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let target = match r.target {
            Some(t) if r.ratio >= t => format!("≥ {t:.2} met"),
            Some(t) => format!("≥ {t:.2} MISSED"),
            None => "(information)".to_string(),
        };
        println!("| {} | {} | {} | {:.2} | {target} |", r.what, r.ours, r.anchor, r.ratio);
    }
}
