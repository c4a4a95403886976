//! `rekey luks reencrypt`: cryptsetup agrees on the result, and kill -9 at
//! random points followed by --resume never loses or corrupts a byte.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

fn setup(env: &Env, data_mib: u64, seed: u64) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let key = env.key("k", b"the passphrase");
    let img = env.path("v.img");
    let size = ((16 + data_mib) << 20).to_string();
    let mut args = vec!["luks", "format", "--size", &size, "--key-file", s(&key)];
    args.extend(FAST);
    args.push(s(&img));
    rekey(&args).ok();
    let mut x = seed | 1;
    let plain: Vec<u8> = (0..(data_mib << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let p = env.path("plain");
    std::fs::write(&p, &plain).unwrap();
    rekey(&["luks", "import", "--key-file", s(&key), s(&p), s(&img)]).ok();
    (img, key, plain)
}

fn export(env: &Env, img: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
    let out = env.path("out");
    rekey(&["luks", "export", "--key-file", s(key), s(img), s(&out)]).ok();
    std::fs::read(out).unwrap()
}

#[test]
fn reencrypt_gives_a_new_key_cryptsetup_accepts() {
    let env = Env::new();
    let (img, key, plain) = setup(&env, 8, 1);
    let new_key = env.key("new", b"another passphrase");
    let before = cryptsetup_volume_key(&img, &key);
    let mut args = vec!["luks", "reencrypt", "--json", "--key-file", s(&key), "--new-key-file", s(&new_key), "--key-size", "256"];
    args.extend(FAST);
    args.push(s(&img));
    let r = rekey(&args).ok();
    assert!(r.stdout.contains("\"result\""), "{}", r.stdout);
    assert!(cs_opens(&img, &new_key, None), "cryptsetup must open with the new passphrase");
    assert!(!cs_opens(&img, &key, None), "old passphrase must be gone");
    let after = cryptsetup_volume_key(&img, &new_key);
    assert_ne!(after, before);
    assert_eq!(after.len(), 64, "256-bit key asked for");
    assert!(export(&env, &img, &new_key) == plain, "plaintext changed");
    cryptsetup(&["luksDump", s(&img)]).ok();
}

#[test]
fn luks1_reencrypt_is_refused_with_the_alternative_named() {
    let env = Env::new();
    let key = env.key("k", b"pw");
    let img = env.path("a.img");
    rekey(&["luks", "format", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--size", "4194304", "--key-file", s(&key), s(&img)]).ok();
    let r = rekey(&["luks", "reencrypt", "--key-file", s(&key), s(&img)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cryptsetup convert"), "{}", r.stderr);
}

/// kill -9 at random points, then --resume (itself sometimes killed), 50
/// times: the plaintext is byte-identical and the key is new every time.
#[test]
fn kill_9_at_random_points_then_resume_loses_nothing() {
    let env = Env::new();
    let (img, key, plain) = setup(&env, 12, 99);
    let pristine = std::fs::read(&img).unwrap();
    let orig_vk = our_volume_key(&img, &key);
    let run = |resume: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rekey"));
        c.args(["luks", "reencrypt", "--hotzone-mib", "1", "--key-file", s(&key)]).args(FAST);
        if resume {
            c.arg("--resume");
        }
        c.arg(s(&img)).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    // How long an uninterrupted run takes, to spread the kills over it.
    let t0 = Instant::now();
    assert!(run(false).status().unwrap().success());
    let full = t0.elapsed().as_micros() as u64;
    let mut rnd = kill_points();
    eprintln!("full run {full} us");
    let mut interrupted = 0;
    // At least 50 trials; more (up to 150) when a loaded machine made the
    // timing run unrepresentative and too few kills landed mid-run.
    for trial in 0..150 {
        if trial >= 50 && interrupted >= 25 {
            break;
        }
        std::fs::write(&img, &pristine).unwrap();
        let mut resume = false;
        for attempt in 0.. {
            let mut child = run(resume).spawn().unwrap();
            let kill = attempt < 3 && rnd(4) != 0;
            if kill {
                std::thread::sleep(Duration::from_micros(rnd(full * 11 / 10)));
                let _ = child.kill(); // SIGKILL
            }
            let out = child.wait_with_output().unwrap();
            if out.status.success() {
                break;
            }
            if out.status.code().is_some() {
                panic!("trial {trial}: reencrypt failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            interrupted += 1;
            let dump = our_dump(&img);
            let busy = dump["requirements"].as_array().unwrap().iter().any(|r| r.as_str().is_some_and(|r| r.starts_with("rekey-reencrypt-") || r.starts_with("online-reencrypt")));
            resume = busy;
            if !busy && our_volume_key(&img, &key) != orig_vk {
                break; // killed after the final commit: finished
            }
        }
        let vk = our_volume_key(&img, &key);
        assert_ne!(vk, orig_vk, "trial {trial}: key must be new");
        assert!(export(&env, &img, &key) == plain, "trial {trial}: plaintext differs");
    }
    assert!(interrupted >= 25, "only {interrupted} runs were actually interrupted");
    assert!(cs_opens(&img, &key, None));
}
