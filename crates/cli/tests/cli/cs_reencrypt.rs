//! Re-encryption interchangeable with cryptsetup 2.6: what `cryptsetup
//! reencrypt` started (`--init-only`) or was killed in, `rekey luks reencrypt
//! --resume` finishes; what rekey was killed in, `cryptsetup reencrypt
//! --resume-only` finishes. Every case checks the plaintext byte for byte,
//! that the passphrase opens, that luksDump shows no re-encryption left and
//! that the volume key is a new one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

struct Case {
    img: PathBuf,
    key: PathBuf,
    plain: Vec<u8>,
    vk_before: String,
}

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

/// A cryptsetup-formatted LUKS2 image with `sector`-byte sectors and a known
/// pattern written through our engine.
fn setup(env: &Env, name: &str, data_mib: u64, sector: u32, seed: u64) -> Case {
    let key = env.key("k", b"the passphrase");
    let img = env.sparse(name, (16 + data_mib) << 20);
    let ss = sector.to_string();
    let mut args = vec!["luksFormat", "--type", "luks2", "--sector-size", &ss, "--key-file", s(&key)];
    args.extend(FAST);
    args.push(s(&img));
    cryptsetup(&args).ok();
    let plain = pattern((data_mib << 20) as usize, seed);
    let p = env.path("plain");
    std::fs::write(&p, &plain).unwrap();
    rekey(&["luks", "import", "--key-file", s(&key), s(&p), s(&img)]).ok();
    let vk_before = cryptsetup_volume_key(&img, &key);
    Case { img, key, plain, vk_before }
}

fn in_reencryption(img: &Path) -> bool {
    let r = cryptsetup(&["luksDump", s(img)]).ok();
    r.stdout.contains("online-reencrypt")
}

#[track_caller]
fn check_finished(env: &Env, c: &Case, what: &str) {
    let dump = cryptsetup(&["luksDump", s(&c.img)]).ok().stdout;
    assert!(!dump.contains("Requirements:") && !dump.contains("reencrypt"), "{what}: re-encryption left:\n{dump}");
    assert!(cs_opens(&c.img, &c.key, None), "{what}: passphrase must open");
    assert_ne!(cryptsetup_volume_key(&c.img, &c.key), c.vk_before, "{what}: volume key must be new");
    let out = env.path("out");
    let _ = std::fs::remove_file(&out);
    rekey(&["luks", "export", "--key-file", s(&c.key), s(&c.img), s(&out)]).ok();
    assert!(std::fs::read(&out).unwrap() == c.plain, "{what}: plaintext differs");
}

fn rekey_resume(c: &Case) -> Run {
    let mut args = vec!["luks", "reencrypt", "--resume", "--hotzone-mib", "1", "--key-file", s(&c.key)];
    args.extend(FAST);
    args.push(s(&c.img));
    rekey(&args)
}

#[test]
fn cryptsetup_init_only_then_rekey_resume() {
    for sector in [512, 4096] {
        for res in ["checksum", "journal", "none"] {
            let env = Env::new();
            let c = setup(&env, "v.img", 6, sector, sector as u64);
            let mut args = vec!["reencrypt", "--init-only", "--resilience", res, "--key-file", s(&c.key)];
            args.extend(FAST);
            args.push(s(&c.img));
            cryptsetup(&args).ok();
            assert!(in_reencryption(&c.img));
            rekey_resume(&c).ok();
            check_finished(&env, &c, &format!("{sector}/{res}"));
        }
    }
}

fn cryptsetup_run(c: &Case, res: &str) -> Command {
    let mut cmd = Command::new("cryptsetup");
    cmd.args(["--batch-mode", "reencrypt", "--force-offline-reencrypt", "--resilience", res, "--hotzone-size", "1M"])
        .args(["--key-file", s(&c.key)])
        .args(FAST)
        .arg(s(&c.img))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// cryptsetup killed with SIGKILL part-way (checked: its requirement is
/// still there), then rekey finishes. `none` is left out: cryptsetup
/// commits no progress with it, so its own kill is unrecoverable by design.
#[test]
fn cryptsetup_killed_then_rekey_resume() {
    require_tool("cryptsetup", "cryptsetup-bin");
    for sector in [512, 4096] {
        for res in ["checksum", "journal"] {
            let env = Env::new();
            let c = setup(&env, "v.img", 24, sector, 7 + sector as u64);
            let pristine = std::fs::read(&c.img).unwrap();
            let t0 = Instant::now();
            assert!(cryptsetup_run(&c, res).status().unwrap().success());
            let full = t0.elapsed();
            let mut landed = false;
            for attempt in 1..=40u32 {
                std::fs::write(&c.img, &pristine).unwrap();
                let mut child = cryptsetup_run(&c, res).spawn().unwrap();
                std::thread::sleep(full * (attempt % 9 + 1) / 10);
                let _ = child.kill();
                let st = child.wait().unwrap();
                if st.code().is_none() && in_reencryption(&c.img) {
                    landed = true;
                    break;
                }
            }
            assert!(landed, "{sector}/{res}: no kill landed mid-way in 40 attempts");
            rekey_resume(&c).ok();
            check_finished(&env, &c, &format!("{sector}/{res} after cryptsetup was killed"));
        }
    }
}

/// rekey killed with SIGKILL at random points (a trial counts only when the
/// header still carries `online-reencrypt-v2`), then stock cryptsetup
/// finishes, for both sector sizes and both resilience modes that survive a
/// crash.
#[test]
fn rekey_killed_then_cryptsetup_resume_only() {
    require_tool("cryptsetup", "cryptsetup-bin");
    let mut rnd = kill_points();
    let (mut counted, mut hot) = (0, 0);
    for (i, (sector, res)) in [(512, "checksum"), (4096, "checksum"), (512, "journal"), (4096, "journal")].into_iter().enumerate() {
        let env = Env::new();
        let c = setup(&env, "v.img", 16, sector, 100 + i as u64);
        let pristine = std::fs::read(&c.img).unwrap();
        let run = || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
            cmd.args(["luks", "reencrypt", "--hotzone-mib", "1", "--resilience", res, "--key-file", s(&c.key)])
                .args(FAST)
                .arg(s(&c.img))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd
        };
        let t0 = Instant::now();
        assert!(run().status().unwrap().success());
        let full = t0.elapsed().as_micros() as u64;
        let mut here = 0;
        for _ in 0..40 {
            if here >= 6 {
                break;
            }
            std::fs::write(&c.img, &pristine).unwrap();
            let mut child = run().spawn().unwrap();
            std::thread::sleep(Duration::from_micros(rnd(full)));
            let _ = child.kill();
            let st = child.wait().unwrap();
            if st.code().is_some() || !in_reencryption(&c.img) {
                continue; // finished, or killed before it began: not a trial
            }
            // Killed inside a hotzone: cryptsetup wants `repair` (its hotzone
            // recovery from our checksums or journal) before it resumes, as it
            // does after its own crash.
            if cryptsetup(&["luksDump", s(&c.img)]).ok().stdout.contains("in-reencryption") {
                cryptsetup(&["repair", "--key-file", s(&c.key), s(&c.img)]).ok();
                hot += 1;
            }
            // (repair of the last hotzone also finishes the re-encryption)
            if in_reencryption(&c.img) {
                let mut args = vec!["reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", s(&c.key)];
                args.extend(FAST);
                args.push(s(&c.img));
                cryptsetup(&args).ok();
            }
            check_finished(&env, &c, &format!("{sector}/{res} trial {here}"));
            here += 1;
        }
        counted += here;
    }
    eprintln!("{counted} trials, {hot} of them inside a hotzone");
    assert!(counted >= 20, "only {counted} kills landed mid-conversion");
    assert!(hot > 0, "no kill landed inside a hotzone: the recovery path went untested");
}

/// The service's volume-key mode changes the passphrase too: killed mid-way,
/// stock cryptsetup finishes with the new passphrase alone, after which only
/// the new passphrase opens (what the service checks to see it rekeyed).
#[test]
fn new_passphrase_run_killed_is_finished_by_cryptsetup_with_the_new_passphrase() {
    require_tool("cryptsetup", "cryptsetup-bin");
    let env = Env::new();
    let c = setup(&env, "v.img", 16, 4096, 5);
    let new_key = env.key("new", b"the new passphrase");
    let pristine = std::fs::read(&c.img).unwrap();
    let run = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
        cmd.args(["luks", "reencrypt", "--hotzone-mib", "1", "--key-file", s(&c.key), "--new-key-file", s(&new_key)])
            .args(FAST)
            .arg(s(&c.img))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let t0 = Instant::now();
    assert!(run().status().unwrap().success());
    let full = t0.elapsed();
    let mut landed = 0;
    for attempt in 0..30u32 {
        if landed >= 3 {
            break;
        }
        std::fs::write(&c.img, &pristine).unwrap();
        let mut child = run().spawn().unwrap();
        std::thread::sleep(full * (attempt % 8 + 1) / 10);
        let _ = child.kill();
        if child.wait().unwrap().code().is_some() || !in_reencryption(&c.img) {
            continue;
        }
        landed += 1;
        if cryptsetup(&["luksDump", s(&c.img)]).ok().stdout.contains("in-reencryption") {
            cryptsetup(&["repair", "--key-file", s(&new_key), s(&c.img)]).ok();
        }
        if in_reencryption(&c.img) {
            let mut args = vec!["reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", s(&new_key)];
            args.extend(FAST);
            args.push(s(&c.img));
            cryptsetup(&args).ok();
        }
        let done = Case { img: c.img.clone(), key: new_key.clone(), plain: c.plain.clone(), vk_before: c.vk_before.clone() };
        check_finished(&env, &done, &format!("attempt {attempt}"));
        assert!(!cs_opens(&c.img, &c.key, None), "attempt {attempt}: the old passphrase must be gone");
    }
    assert!(landed >= 3, "only {landed} kills landed mid-conversion");
}

/// A detached header's decryption given without its data device: `rekey
/// luks reencrypt --resume` refuses it with one line, exit 1, and leaves
/// every byte as it was (encrypt/decrypt themselves: cs_encdec.rs).
#[test]
fn detached_decrypt_without_its_data_device_is_refused_untouched() {
    let env = Env::new();
    let key = env.key("k", b"the passphrase");
    // Decrypt: cryptsetup 2.6 does it only with a detached header; without
    // --header the header file would be taken for the data.
    let (hdr, data) = (env.path("hdr"), env.sparse("dec.img", 8 << 20));
    let mut args = vec!["luksFormat", "--type", "luks2", "--header", s(&hdr), "--key-file", s(&key)];
    args.extend(FAST);
    args.push(s(&data));
    cryptsetup(&args).ok();
    cryptsetup(&["reencrypt", "--decrypt", "--init-only", "--force-offline-reencrypt", "--header", s(&hdr), "--key-file", s(&key), s(&data)])
        .ok();
    let before = std::fs::read(&hdr).unwrap();
    let r = rekey(&["luks", "reencrypt", "--resume", "--key-file", s(&key), s(&hdr)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.trim().lines().count() == 1, "{}", r.stderr);
    assert!(std::fs::read(&hdr).unwrap() == before, "a refused resume wrote to the header");
}
