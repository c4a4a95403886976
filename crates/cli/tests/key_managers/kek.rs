//! `rekey key rotate-kek` killed with SIGKILL at random points: every key
//! stays readable, and a rerun finishes the rotation.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rekey_keys::{EmbeddedConfig, EmbeddedKeyManager, KeyBytes, KeyId, KeyManager, Project};

use crate::harness::REKEY;

type Stored = Vec<(Project, KeyId, KeyBytes)>;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn config(data: &Path) -> EmbeddedConfig {
    EmbeddedConfig::new(data.join("keys.sqlite"))
}

/// Opens the store afresh (as the service would after a crash) and reads
/// every key back.
fn assert_all_readable(data: &Path, keys: &Stored, when: &str) {
    rt().block_on(async {
        let km = EmbeddedKeyManager::open(&config(data)).await.unwrap_or_else(|e| panic!("{when}: the store does not open: {e}"));
        for (p, id, bytes) in keys {
            let got = km.get_key(p, id).await.unwrap_or_else(|e| panic!("{when}: key {id} unreadable: {e}"));
            assert_eq!(&got, bytes, "{when}: key {id} changed");
        }
    });
}

fn rotate(data: &Path, crash_at: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(REKEY);
    cmd.args(["key", "rotate-kek", "--data-dir"]).arg(data).env_remove("REKEY_KEK").stdout(Stdio::null()).stderr(Stdio::piped());
    match crash_at {
        Some(p) => cmd.env("REKEY_CRASH_AT", p),
        None => cmd.env_remove("REKEY_CRASH_AT"),
    };
    cmd.spawn().expect("run rekey key rotate-kek")
}

fn rotate_to_end(data: &Path) {
    let out = rotate(data, None).wait_with_output().unwrap();
    assert!(out.status.success(), "rotate-kek: {}", String::from_utf8_lossy(&out.stderr));
}

/// A number in 0..n from the OS's randomness (no extra crate for it).
fn random_below(n: u64) -> u64 {
    u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap()) % n.max(1)
}

#[test]
fn kek_rotation_killed_at_random_points_loses_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys: Stored = rt().block_on(async {
        let km = EmbeddedKeyManager::open(&config(&data)).await.unwrap();
        let mut keys = Vec::new();
        for i in 0..600 {
            let p = Project::new(format!("p{}", i % 3)).unwrap();
            let bytes = KeyBytes::random(32).unwrap();
            let id = km.store_key(&p, &bytes, "aes", 256).await.unwrap();
            keys.push((p, id, bytes));
        }
        keys
    });
    let kek_file = data.join("keys.kek");
    let first_kek = std::fs::read(&kek_file).unwrap();

    // One full rotation, timed, to know where random kills land.
    let start = Instant::now();
    rotate_to_end(&data);
    let full = start.elapsed();
    assert_all_readable(&data, &keys, "after a full rotation");
    let mut previous = std::fs::read(&kek_file).unwrap();
    assert_ne!(previous, first_kek, "the KEK file holds a new KEK");

    // Kills spread over a run; the window adapts to how long runs take on
    // this (shared, noisy) machine. A kill counts as mid-way when it left
    // the rotation's pending KEK behind: a new KEK exists, keys are partly
    // re-wrapped, the old KEK file is still in place.
    // Under a loaded CI a run's length swings, so trials go on (up to 72)
    // until 8 kills have landed mid-way; each trial still checks every key.
    let mut window = full.as_micros() as u64;
    let mut mid_way = 0;
    let mut trials = 0;
    for trial in 0..72 {
        if trial >= 24 && mid_way >= 8 {
            break;
        }
        trials += 1;
        let mut child = rotate(&data, None);
        let delay = Duration::from_micros(random_below(window * 6 / 5));
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        let pending = data.join("keys.kek.new").exists();
        if pending {
            mid_way += 1;
        } else if finished {
            window = window * 4 / 5;
        } else {
            window = window * 6 / 5;
        }
        assert_all_readable(&data, &keys, &format!("trial {trial}, killed after {delay:?} (pending KEK left: {pending})"));
    }
    eprintln!("{mid_way} of {trials} kills left a rotation half done");
    assert!(mid_way >= 8, "kills must land mid-rotation ({mid_way} of {trials} did)");

    // The one step between the flipped check and the renamed KEK file.
    let st = rotate(&data, Some("rotate-kek-before-rename")).wait().unwrap();
    assert!(!st.success(), "the crash point aborts");
    assert!(data.join("keys.kek.new").exists(), "the new KEK waits next to the old one");
    assert_all_readable(&data, &keys, "crashed before the rename");

    rotate_to_end(&data);
    assert_all_readable(&data, &keys, "after the final rerun");
    assert!(!data.join("keys.kek.new").exists(), "no pending KEK is left");
    let last = std::fs::read(&kek_file).unwrap();
    assert_ne!(last, previous, "the final run rotated again");
    previous = last;

    // With only the final KEK file (no pending one) every key still opens:
    // the rotation really re-wrapped them all.
    let kek_hex = String::from_utf8(previous).unwrap();
    rt().block_on(async {
        let only_new = config(&data).with_kek_hex(zeroize::Zeroizing::new(kek_hex.trim().to_owned()));
        let km = EmbeddedKeyManager::open(&only_new).await.unwrap();
        for (p, id, bytes) in &keys {
            assert_eq!(&km.get_key(p, id).await.unwrap(), bytes);
        }
    });
}
