//! Ceph stops answering in the middle of `rekey luks reencrypt`: the command
//! fails within its timeout with a clear error, and once Ceph is back
//! `--resume` finishes with the plaintext intact.
//!
//! Runs on a private cluster (own directory and ports, started with
//! scripts/ceph.sh) so pausing its OSD disturbs no other test.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn osd_stopped_mid_reencrypt_fails_in_bounded_time_then_resume_completes() {
    require_tool("rbd", "ceph-common");
    let cluster = PrivateCluster::start();
    let conf = cluster.client_conf(5);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"outage").unwrap();

    let img = TestImage::create(&conf, "outage", 256 * MIB);
    let spec = img.spec();
    let mut args = vec!["format", "-d", s(&key)];
    args.extend(CHEAP_KDF);
    args.push(&spec);
    rekey_luks(&conf, &args).ok();
    let plain = data(4, 200 * MIB as usize);
    let input = dir.path().join("plain.in");
    std::fs::write(&input, &plain).unwrap();
    rekey_luks(&conf, &["import", "-d", s(&key), s(&input), &spec]).ok();

    // Start re-encrypting; stop the OSD once the first steps are done.
    let mut child = KillOnDrop(
        rekey_cmd()
            .args(["luks", "--ceph-conf", s(&conf), "reencrypt", "-d", s(&key), "--json"])
            .args(["--hotzone-mib", "4"])
            .args(CHEAP_KDF)
            .arg(&spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rekey"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let done = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["done"].as_u64())
            .unwrap_or(0)
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60).saturating_sub(started.elapsed()))
            .expect("reencrypt reported no progress within 60 s");
        if done(&line) >= 8 * MIB {
            break;
        }
    }
    cluster.signal_osd("-STOP");
    let stopped = Instant::now();

    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(90),
            "rekey luks reencrypt still hangs 90 s after the OSD stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = stopped.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let last_done = rx.try_iter().map(|l| done(&l)).max().unwrap_or(0);
    cluster.signal_osd("-CONT");

    assert_eq!(status.code(), Some(1), "must fail, not succeed or crash: {stderr}");
    assert!(
        took < Duration::from_secs(60),
        "failed only after {took:?} with 5 s client timeouts: {stderr}"
    );
    assert!(
        stderr.contains("did not answer") && stderr.contains(&img.path()),
        "the error should say Ceph did not answer for which image: {stderr}"
    );
    assert!(last_done < 256 * MIB, "the OSD must stop it mid-way (done {last_done})");
    eprintln!("reencrypt failed {took:?} after the OSD stopped: {}", stderr.trim());

    // Ceph is back (once it answers again): the interrupted re-encryption
    // resumes and completes, with the client's default timeouts.
    let conf = cluster.conf.clone();
    cluster.wait_answering(&img.name);
    let mut args = vec!["reencrypt", "--resume", "-d", s(&key)];
    args.extend(CHEAP_KDF);
    args.push(&spec);
    rekey_luks(&conf, &args).ok();
    let out = dir.path().join("plain.out");
    rekey_luks(&conf, &["export", "-d", s(&key), &spec, s(&out)]).ok();
    assert_same(&std::fs::read(&out).unwrap()[..plain.len()], &plain, "plaintext after resume");
    let r = rekey_luks(&conf, &["reencrypt", "--resume", "-d", s(&key), &spec]);
    assert_eq!(r.code, 1, "nothing left to resume: {}", r.stderr);
    drop(img);
}
