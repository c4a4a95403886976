//! Encrypting in place and decrypting with a detached header (`--header`),
//! interchangeable with cryptsetup 2.6 both ways: what either tool started
//! (`--init-only`) or was killed in, the other finishes. Every case checks
//! the plaintext byte for byte; an encryption also that the passphrase opens
//! in cryptsetup and that cryptsetup's own decryption of our ciphertext gives
//! the plaintext back; a decryption that the data device is the plaintext
//! and the header holds no keyslot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Case {
    data: PathBuf,
    hdr: PathBuf,
    key: PathBuf,
    plain: Vec<u8>,
}

/// A plaintext data image and where its detached header goes.
fn plain_case(env: &Env, mib: usize, seed: u64) -> Case {
    let c = Case { data: env.path("data.img"), hdr: env.path("hdr.img"), key: env.key("k", b"the passphrase"), plain: pattern(mib * MIB, seed) };
    std::fs::write(&c.data, &c.plain).unwrap();
    c
}

/// The same, encrypted by cryptsetup (its own `reencrypt --encrypt --header`).
fn cs_encrypted_case(env: &Env, mib: usize, sector: u32, seed: u64) -> Case {
    let c = plain_case(env, mib, seed);
    let ss = sector.to_string();
    let mut args = vec!["reencrypt", "--encrypt", "--force-offline-reencrypt", "--sector-size", &ss, "--header", s(&c.hdr)];
    args.extend(["--key-file", s(&c.key)]);
    args.extend(FAST);
    args.push(s(&c.data));
    cryptsetup(&args).ok();
    assert!(std::fs::read(&c.data).unwrap() != c.plain, "cryptsetup did not encrypt");
    c
}

fn in_conversion(hdr: &Path) -> bool {
    hdr.exists() && cryptsetup(&["luksDump", s(hdr)]).stdout.contains("online-reencrypt")
}

/// Our ciphertext is what cryptsetup reads: the passphrase opens, and
/// cryptsetup's decryption of a copy gives the plaintext back.
#[track_caller]
fn check_encrypted(env: &Env, c: &Case, what: &str) {
    let dump = cryptsetup(&["luksDump", s(&c.hdr)]).ok().stdout;
    assert!(!dump.contains("Requirements:") && !dump.contains("reencrypt"), "{what}: conversion left:\n{dump}");
    assert!(dump.contains("0: crypt") && dump.contains("offset: 0 [bytes]"), "{what}:\n{dump}");
    let r = cryptsetup(&["open", "--test-passphrase", "--header", s(&c.hdr), "--key-file", s(&c.key), s(&c.data)]);
    assert_eq!(r.code, 0, "{what}: cryptsetup must open it: {}", r.stderr);
    let out = env.path("out");
    let _ = std::fs::remove_file(&out);
    rekey(&["luks", "export", "--header", s(&c.hdr), "--key-file", s(&c.key), s(&c.data), s(&out)]).ok();
    assert!(std::fs::read(&out).unwrap() == c.plain, "{what}: our export differs from the plaintext");
    let (h2, d2) = (env.path("h2"), env.path("d2"));
    std::fs::copy(&c.hdr, &h2).unwrap();
    std::fs::copy(&c.data, &d2).unwrap();
    cryptsetup(&["reencrypt", "--decrypt", "--force-offline-reencrypt", "--header", s(&h2), "--key-file", s(&c.key), s(&d2)]).ok();
    assert!(std::fs::read(&d2).unwrap() == c.plain, "{what}: cryptsetup's decryption of our ciphertext differs");
}

#[track_caller]
fn check_decrypted(c: &Case, what: &str) {
    let dump = cryptsetup(&["luksDump", s(&c.hdr)]).ok().stdout;
    assert!(!dump.contains("Requirements:") && !dump.contains("reencrypt"), "{what}: conversion left:\n{dump}");
    assert!(dump.contains("0: linear") && !dump.contains("luks2"), "{what}: a keyslot or crypt segment left:\n{dump}");
    assert!(std::fs::read(&c.data).unwrap() == c.plain, "{what}: the data device is not the plaintext");
}

fn rekey_cmd(c: &Case, op: &str, res: &str, sector: u32) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
    cmd.args(["luks", "reencrypt", op, "--hotzone-mib", "1", "--resilience", res, "--sector-size", &sector.to_string()])
        .args(["--header", s(&c.hdr), "--key-file", s(&c.key)])
        .args(FAST)
        .arg(s(&c.data))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn rekey_resume(c: &Case) -> Run {
    let mut args = vec!["luks", "reencrypt", "--resume", "--hotzone-mib", "1", "--header", s(&c.hdr), "--key-file", s(&c.key)];
    args.extend(FAST);
    args.push(s(&c.data));
    rekey(&args)
}

/// The live segments, for failure messages.
fn live_segments(hdr: &Path) -> String {
    let j: serde_json::Value = serde_json::from_str(&cryptsetup(&["luksDump", "--dump-json-metadata", s(hdr)]).ok().stdout).unwrap();
    let segs = j["segments"].as_object().unwrap().values();
    let live = segs.filter(|v| !v["flags"].to_string().contains("backup"));
    live.map(|v| format!("[{} {} {} {}]", v["type"], v["offset"], v["size"], v["flags"])).collect::<Vec<_>>().join(" ")
}

/// cryptsetup finishes after a crash: `repair` first when a hotzone was
/// being written (its recovery from the checksums or journal), as it needs
/// after its own crash; then `--resume-only`.
fn cryptsetup_finish(c: &Case) -> bool {
    let hot = cryptsetup(&["luksDump", s(&c.hdr)]).ok().stdout.contains("in-reencryption");
    if hot {
        cryptsetup(&["repair", "--header", s(&c.hdr), "--key-file", s(&c.key), s(&c.data)]).ok();
    }
    if in_conversion(&c.hdr) {
        let mut args = vec!["reencrypt", "--resume-only", "--force-offline-reencrypt", "--header", s(&c.hdr), "--key-file", s(&c.key)];
        args.extend(FAST);
        args.push(s(&c.data));
        cryptsetup(&args).ok();
    }
    hot
}

#[test]
fn encrypt_with_detached_header_opens_in_cryptsetup() {
    for sector in [512, 4096] {
        for res in ["checksum", "journal", "none"] {
            let env = Env::new();
            let c = plain_case(&env, 6, sector as u64 + 3);
            assert!(rekey_cmd(&c, "--encrypt", res, sector).status().unwrap().success());
            let dump = cryptsetup(&["luksDump", s(&c.hdr)]).ok().stdout;
            assert!(dump.contains(&format!("sector: {sector} [bytes]")), "{dump}");
            check_encrypted(&env, &c, &format!("{sector}/{res}"));
        }
    }
}

#[test]
fn decrypt_of_cryptsetup_volume_leaves_the_plaintext() {
    for sector in [512, 4096] {
        for res in ["checksum", "journal", "none"] {
            let env = Env::new();
            let c = cs_encrypted_case(&env, 6, sector, sector as u64 + 5);
            assert!(rekey_cmd(&c, "--decrypt", res, sector).status().unwrap().success());
            check_decrypted(&c, &format!("{sector}/{res}"));
        }
    }
}

#[test]
fn cryptsetup_init_only_then_rekey_resume() {
    for res in ["checksum", "journal", "none"] {
        let env = Env::new();
        let c = plain_case(&env, 6, 11);
        let mut args = vec!["reencrypt", "--encrypt", "--init-only", "--resilience", res, "--header", s(&c.hdr), "--key-file", s(&c.key)];
        args.extend(FAST);
        args.push(s(&c.data));
        cryptsetup(&args).ok();
        assert!(in_conversion(&c.hdr));
        rekey_resume(&c).ok();
        check_encrypted(&env, &c, &format!("encrypt {res}"));

        let env = Env::new();
        let c = cs_encrypted_case(&env, 6, 4096, 12);
        let args = ["reencrypt", "--decrypt", "--init-only", "--force-offline-reencrypt", "--resilience", res, "--header", s(&c.hdr), "--key-file", s(&c.key), s(&c.data)];
        cryptsetup(&args).ok();
        assert!(in_conversion(&c.hdr));
        rekey_resume(&c).ok();
        check_decrypted(&c, &format!("decrypt {res}"));
    }
}

/// cryptsetup killed with SIGKILL part-way (its requirement still there),
/// then rekey finishes, whether cryptsetup stopped between hotzones or in one.
#[test]
fn cryptsetup_killed_then_rekey_resume() {
    require_tool("cryptsetup", "cryptsetup-bin");
    for op in ["--encrypt", "--decrypt"] {
        for res in ["checksum", "journal"] {
            let env = Env::new();
            let fresh = || if op == "--encrypt" { plain_case(&env, 24, 21) } else { cs_encrypted_case(&env, 24, 512, 22) };
            let c = fresh();
            let (data0, hdr0) = (std::fs::read(&c.data).unwrap(), std::fs::read(&c.hdr).ok());
            let restore = || {
                std::fs::write(&c.data, &data0).unwrap();
                match &hdr0 {
                    Some(h) => std::fs::write(&c.hdr, h).unwrap(),
                    None => {
                        let _ = std::fs::remove_file(&c.hdr);
                    }
                }
            };
            let run = || {
                let mut cmd = Command::new("cryptsetup");
                cmd.args(["--batch-mode", "reencrypt", op, "--force-offline-reencrypt", "--resilience", res, "--hotzone-size", "1M"])
                    .args(["--header", s(&c.hdr), "--key-file", s(&c.key)])
                    .args(FAST)
                    .arg(s(&c.data))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                cmd
            };
            let t0 = Instant::now();
            assert!(run().status().unwrap().success());
            let full = t0.elapsed();
            let mut landed = false;
            for attempt in 1..=40u32 {
                restore();
                let mut child = run().spawn().unwrap();
                std::thread::sleep(full * (attempt % 9 + 1) / 10);
                let _ = child.kill();
                if child.wait().unwrap().code().is_none() && in_conversion(&c.hdr) {
                    landed = true;
                    break;
                }
            }
            assert!(landed, "{op}/{res}: no kill landed mid-way in 40 attempts");
            rekey_resume(&c).ok();
            if op == "--encrypt" {
                check_encrypted(&env, &c, &format!("{op}/{res} after cryptsetup was killed"));
            } else {
                check_decrypted(&c, &format!("{op}/{res} after cryptsetup was killed"));
            }
        }
    }
}

/// rekey killed with SIGKILL at random points (a trial counts only when the
/// header still carries `online-reencrypt-v2`), then stock cryptsetup
/// finishes, for encrypt and decrypt with both resiliences that survive a
/// crash.
#[test]
fn rekey_killed_then_cryptsetup_resume_only() {
    require_tool("cryptsetup", "cryptsetup-bin");
    let mut rnd = kill_points();
    let (mut counted, mut hot) = (0, 0);
    for (i, (op, res, sector)) in
        [("--encrypt", "checksum", 512), ("--encrypt", "journal", 4096), ("--decrypt", "checksum", 4096), ("--decrypt", "journal", 512)]
            .into_iter()
            .enumerate()
    {
        let env = Env::new();
        let c = if op == "--encrypt" { plain_case(&env, 16, 40 + i as u64) } else { cs_encrypted_case(&env, 16, sector, 40 + i as u64) };
        let (data0, hdr0) = (std::fs::read(&c.data).unwrap(), std::fs::read(&c.hdr).ok());
        let restore = || {
            std::fs::write(&c.data, &data0).unwrap();
            match &hdr0 {
                Some(h) => std::fs::write(&c.hdr, h).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&c.hdr);
                }
            }
        };
        let t0 = Instant::now();
        assert!(rekey_cmd(&c, op, res, sector).status().unwrap().success());
        let full = t0.elapsed().as_micros() as u64;
        let mut here = 0;
        for _ in 0..40 {
            if here >= 5 {
                break;
            }
            restore();
            let mut child = rekey_cmd(&c, op, res, sector).spawn().unwrap();
            std::thread::sleep(Duration::from_micros(rnd(full)));
            let _ = child.kill();
            if child.wait().unwrap().code().is_some() || !in_conversion(&c.hdr) {
                continue; // finished, or killed before its first commit: not a trial
            }
            let segments = live_segments(&c.hdr);
            hot += cryptsetup_finish(&c) as u32;
            let what = format!("{op}/{res}/{sector} trial {here}, killed at {segments}");
            if op == "--encrypt" {
                check_encrypted(&env, &c, &what);
            } else {
                check_decrypted(&c, &what);
            }
            here += 1;
        }
        assert!(here >= 3, "{op}/{res}: only {here} kills landed mid-conversion");
        counted += here;
    }
    eprintln!("{counted} trials, {hot} of them inside a hotzone");
    assert!(counted >= 16, "only {counted} kills landed mid-conversion");
    assert!(hot > 0, "no kill landed inside a hotzone: the recovery path went untested");
}

/// The refusals are one clear line and leave every byte as it was.
#[test]
fn bad_requests_are_refused_untouched() {
    let env = Env::new();
    let c = plain_case(&env, 2, 9);
    // --encrypt without --header would need a data shift.
    let r = rekey(&["luks", "reencrypt", "--encrypt", "--key-file", s(&c.key), s(&c.data)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(std::fs::read(&c.data).unwrap() == c.plain);
    // A wrong passphrase for a decrypt is exit 2 and writes nothing.
    let c = cs_encrypted_case(&env, 2, 512, 10);
    let (d0, h0) = (std::fs::read(&c.data).unwrap(), std::fs::read(&c.hdr).unwrap());
    let wrong = env.key("wrong", b"not it");
    let r = rekey(&["luks", "reencrypt", "--decrypt", "--header", s(&c.hdr), "--key-file", s(&wrong), s(&c.data)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(std::fs::read(&c.data).unwrap() == d0 && std::fs::read(&c.hdr).unwrap() == h0);
    // --encrypt onto a header file that already holds a LUKS header.
    let r = rekey(&["luks", "reencrypt", "--encrypt", "--header", s(&c.hdr), "--key-file", s(&c.key), s(&c.data)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("already holds a LUKS header"), "{}", r.stderr);
    assert!(std::fs::read(&c.data).unwrap() == d0 && std::fs::read(&c.hdr).unwrap() == h0);
}

// --- Encryption with a data shift (`--reduce-device-size`, header on IMAGE).

const SHIFT: usize = 16 << 20;

/// A plaintext image of `mib` MiB of data and the 32 MiB it is reduced by.
fn shift_case(env: &Env, mib: usize, seed: u64) -> (PathBuf, PathBuf, Vec<u8>) {
    let (img, key, plain) = (env.path("shift.img"), env.key("k", b"the passphrase"), pattern(mib * MIB, seed));
    std::fs::write(&img, [&plain[..], &vec![0u8; 2 * SHIFT][..]].concat()).unwrap();
    (img, key, plain)
}

fn shift_cmd(img: &Path, key: &Path, sector: u32) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
    cmd.args(["luks", "reencrypt", "--encrypt", "--reduce-device-size", "32M", "--sector-size", &sector.to_string()])
        .args(["--key-file", s(key)])
        .args(FAST)
        .arg(s(img))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn in_conversion_on(img: &Path) -> bool {
    cryptsetup(&["luksDump", s(img)]).stdout.contains("online-reencrypt")
}

/// The result is what cryptsetup makes: data at 16 MiB, the passphrase
/// opens, our export is the plaintext, the ciphertext is byte for byte what
/// cryptsetup's own `--encrypt --reduce-device-size` makes of the same
/// plaintext with the same volume key (cryptsetup 2.6 decrypts only with the
/// data at offset 0, so its encryption is the oracle), and the plaintext copy
/// that sat at the tail is gone.
#[track_caller]
fn check_shift_encrypted(env: &Env, img: &Path, key: &Path, plain: &[u8], sector: u32, what: &str) {
    let dump = cryptsetup(&["luksDump", s(img)]).ok().stdout;
    assert!(!dump.contains("Requirements:") && !dump.contains("reencrypt"), "{what}: conversion left:\n{dump}");
    assert!(dump.contains("offset: 16777216 [bytes]"), "{what}:\n{dump}");
    assert!(cs_opens(img, key, None), "{what}: cryptsetup must open it");
    let out = env.path("out");
    let _ = std::fs::remove_file(&out);
    rekey(&["luks", "export", "--key-file", s(key), s(img), s(&out)]).ok();
    assert!(std::fs::read(&out).unwrap()[..plain.len()] == plain[..], "{what}: our export differs from the plaintext");
    let hex = cryptsetup_volume_key(img, key);
    let vk: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let (vkf, theirs) = (env.path("vk"), env.path("theirs.img"));
    std::fs::write(&vkf, vk).unwrap();
    std::fs::write(&theirs, [plain, &vec![0u8; 2 * SHIFT][..]].concat()).unwrap();
    let ss = sector.to_string();
    let mut args = vec!["reencrypt", "--encrypt", "--reduce-device-size", "32M", "--sector-size", &ss, "--volume-key-file", s(&vkf)];
    args.extend(["--key-file", s(key)]);
    args.extend(FAST);
    args.push(s(&theirs));
    cryptsetup(&args).ok();
    let (ours, theirs) = (std::fs::read(img).unwrap(), std::fs::read(&theirs).unwrap());
    let data = SHIFT..SHIFT + plain.len();
    assert!(ours[data.clone()] == theirs[data], "{what}: the ciphertext differs from cryptsetup's with the same key");
    let tail = &ours[plain.len() + SHIFT..plain.len() + 2 * SHIFT];
    assert!(tail != &plain[..SHIFT], "{what}: the plaintext copy at the tail was not wiped");
}

#[test]
fn encrypt_with_data_shift_opens_in_cryptsetup() {
    for (sector, mib) in [(512, 40), (4096, 16), (4096, 48)] {
        let env = Env::new();
        let (img, key, plain) = shift_case(&env, mib, mib as u64 + sector as u64);
        assert!(shift_cmd(&img, &key, sector).status().unwrap().success());
        let dump = cryptsetup(&["luksDump", s(&img)]).ok().stdout;
        assert!(dump.contains(&format!("sector: {sector} [bytes]")), "{dump}");
        check_shift_encrypted(&env, &img, &key, &plain, sector, &format!("{sector}/{mib} MiB"));
    }
}

/// cryptsetup `--init-only` (the first S bytes already moved, the header
/// written) and cryptsetup killed mid-way, then rekey `--resume` finishes.
#[test]
fn cryptsetup_data_shift_init_only_or_killed_then_rekey_resume() {
    let env = Env::new();
    let (img, key, plain) = shift_case(&env, 40, 3);
    let mut args = vec!["reencrypt", "--encrypt", "--init-only", "--reduce-device-size", "32M", "--key-file", s(&key)];
    args.extend(FAST);
    args.push(s(&img));
    cryptsetup(&args).ok();
    assert!(in_conversion_on(&img));
    let mut resume = vec!["luks", "reencrypt", "--resume", "--key-file", s(&key)];
    resume.extend(FAST);
    resume.push(s(&img));
    rekey(&resume).ok();
    check_shift_encrypted(&env, &img, &key, &plain, 512, "after cryptsetup --init-only");

    let (img, key, plain) = shift_case(&env, 64, 4);
    let pristine = std::fs::read(&img).unwrap();
    let run = || {
        let mut cmd = Command::new("cryptsetup");
        // cryptsetup builds the header in ./LUKS2-temp-UUID.new; killed,
        // it leaves that file behind: not in the source tree.
        cmd.current_dir(env.dir.path())
            .args(["--batch-mode", "reencrypt", "--encrypt", "--force-offline-reencrypt", "--reduce-device-size", "32M"])
            .args(["--key-file", s(&key)])
            .args(FAST)
            .arg(s(&img))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let t0 = Instant::now();
    assert!(run().status().unwrap().success());
    let full = t0.elapsed();
    let mut landed = false;
    for attempt in 1..=40u32 {
        std::fs::write(&img, &pristine).unwrap();
        let mut child = run().spawn().unwrap();
        std::thread::sleep(full * (attempt % 9 + 1) / 10);
        let _ = child.kill();
        if child.wait().unwrap().code().is_none() && in_conversion_on(&img) {
            landed = true;
            break;
        }
    }
    assert!(landed, "no kill of cryptsetup landed mid-way in 40 attempts");
    rekey(&resume).ok();
    check_shift_encrypted(&env, &img, &key, &plain, 512, "after cryptsetup was killed");
}

/// rekey killed with SIGKILL at random points mid-conversion (counted only
/// when the image carries `online-reencrypt-v2`), then cryptsetup finishes.
#[test]
fn rekey_data_shift_killed_then_cryptsetup_resume_only() {
    require_tool("cryptsetup", "cryptsetup-bin");
    let mut rnd = kill_points();
    let env = Env::new();
    let (img, key, plain) = shift_case(&env, 64, 5);
    let pristine = std::fs::read(&img).unwrap();
    let t0 = Instant::now();
    assert!(shift_cmd(&img, &key, 4096).status().unwrap().success());
    let full = t0.elapsed().as_micros() as u64;
    let (mut here, mut hot) = (0, 0);
    for _ in 0..40 {
        if here >= 6 {
            break;
        }
        std::fs::write(&img, &pristine).unwrap();
        let mut child = shift_cmd(&img, &key, 4096).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rnd(full)));
        let _ = child.kill();
        if child.wait().unwrap().code().is_some() {
            continue;
        }
        if !in_conversion_on(&img) && cryptsetup(&["isLuks", s(&img)]).code == 0 {
            // Killed after the final commit (wiping the tail copy): done.
            let out = env.path("out");
            let _ = std::fs::remove_file(&out);
            rekey(&["luks", "export", "--key-file", s(&key), s(&img), s(&out)]).ok();
            assert!(std::fs::read(&out).unwrap()[..plain.len()] == plain[..], "killed after the final commit: data differs");
            continue;
        }
        if !in_conversion_on(&img) {
            // Killed before the header's commit: the plaintext is still in
            // place, or (inside the header's write) its first S bytes are
            // in the tail copy and the rest untouched, as docs/reencrypt.md says.
            let now = std::fs::read(&img).unwrap();
            let n = plain.len();
            let intact = now[..n] == plain[..] || (now[n + SHIFT..n + 2 * SHIFT] == plain[..SHIFT] && now[SHIFT..n] == plain[SHIFT..]);
            assert!(intact, "killed before the header was committed, the plaintext is lost");
            continue;
        }
        if cryptsetup(&["luksDump", s(&img)]).ok().stdout.contains("in-reencryption") {
            cryptsetup(&["repair", "--key-file", s(&key), s(&img)]).ok();
            hot += 1;
        }
        if in_conversion_on(&img) {
            let mut args = vec!["reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", s(&key)];
            args.extend(FAST);
            args.push(s(&img));
            cryptsetup(&args).ok();
        }
        check_shift_encrypted(&env, &img, &key, &plain, 4096, &format!("trial {here}"));
        here += 1;
    }
    eprintln!("{here} trials, {hot} of them inside a hotzone");
    assert!(here >= 5, "only {here} kills landed mid-conversion");
}

/// cryptsetup stopped in the last step of a decryption: after it destroyed
/// the old keyslot and committed that, before its final header (strace
/// makes the write in between, the wipe of the checksum area, fail; a kill
/// lands there now and then). No keyslot opens the header any more, so
/// cryptsetup cannot go on; the data is all plaintext, and rekey finishes
/// with no key needed.
#[test]
fn decryption_stopped_after_its_keyslot_was_destroyed_is_finished_by_rekey_only() {
    require_tool("strace", "strace");
    let env = Env::new();
    let c = cs_encrypted_case(&env, 8, 512, 31);
    let (data0, hdr0) = (std::fs::read(&c.data).unwrap(), std::fs::read(&c.hdr).unwrap());
    let decrypt = |inject: Option<usize>, log: &Path| {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-e", "trace=write", "-o", s(log)]);
        if let Some(n) = inject {
            cmd.args(["-e", &format!("inject=write:error=EIO:when={n}")]);
        }
        cmd.args(["cryptsetup", "--batch-mode", "reencrypt", "--decrypt", "--force-offline-reencrypt", "--resilience", "checksum"])
            .args(["--hotzone-size", "1M", "--progress-frequency", "3600", "--header", s(&c.hdr), "--key-file", s(&c.key)])
            .args(FAST)
            .arg(s(&c.data))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().unwrap().success()
    };
    // A run to the end counts cryptsetup's writes: the last one longer than
    // a hotzone is its wipe of the checksum area, between the header that
    // drops the old keyslot and the final one.
    let log = env.path("writes.log");
    assert!(decrypt(None, &log), "cryptsetup's own decryption under strace");
    let writes: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|w| w.starts_with("write(")))
        .filter_map(|l| l.rsplit_once('=').and_then(|(_, n)| n.trim().parse().ok()))
        .collect();
    let wipe = writes.iter().rposition(|&n| n > MIB as u64).expect("the checksum area's wipe") + 1;
    std::fs::write(&c.data, &data0).unwrap();
    std::fs::write(&c.hdr, &hdr0).unwrap();
    assert!(!decrypt(Some(wipe), &env.path("writes2.log")), "the injected write error must stop cryptsetup");
    assert!(in_conversion(&c.hdr), "the decryption is still recorded");
    let dump = cryptsetup(&["luksDump", s(&c.hdr)]).ok().stdout;
    assert!(!dump.contains(": luks2"), "the old keyslot was destroyed:\n{dump}");
    let mut resume = vec!["reencrypt", "--resume-only", "--force-offline-reencrypt", "--header", s(&c.hdr), "--key-file", s(&c.key)];
    resume.push(s(&c.data));
    assert_ne!(cryptsetup(&resume).code, 0, "cryptsetup cannot finish it (no keyslot opens it)");
    rekey_resume(&c).ok();
    check_decrypted(&c, "decryption finished after its keyslot was destroyed");
}
