//! Ceph stops answering in the middle of an operation: `rekey luks
//! reencrypt` fails within its timeout with a clear error, and once Ceph is
//! back `--resume` finishes with the plaintext intact; a clone or backup in
//! `rekey serve --backend rbd` ends `error` within its timeout while the API
//! keeps answering, and succeeds once Ceph is back.
//!
//! Each test runs on a private cluster (own directory and ports, started with
//! scripts/ceph.sh) so pausing its OSD disturbs no other test.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rekey_service::fault::{Point, Step};
use serde_json::{json, Value};

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
    cluster.resume_osd(&img.name);
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

/// Polls volume/backup `id` through the API until its status leaves `busy`.
/// Every poll must be answered with a 200 (never a hang, never a 5xx);
/// `guard` bounds the whole wait.
fn settles_while_down(srv: &Serve, kind: &str, id: &str, busy: &[&str], guard: Duration) -> (Value, Duration) {
    let path = format!("/v3/{PROJECT}/{kind}s/{id}");
    let t0 = Instant::now();
    loop {
        let (st, v) = srv.api("GET", &path, None);
        assert_eq!(st, 200, "GET {path} while the OSD is stopped must answer 200, got {st}: {v}");
        let status = v[kind]["status"].as_str().unwrap_or("").to_owned();
        if !busy.contains(&status.as_str()) {
            return (v[kind].clone(), t0.elapsed());
        }
        assert!(t0.elapsed() < guard, "{kind} {id} still {status} {:?} after the OSD stopped: hangs", t0.elapsed());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The log lines of `rekey serve` that name `id`.
fn log_lines_of(log: &std::path::Path, id: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines().filter(|l| l.contains(id)).collect::<Vec<_>>().join("\n")
}

/// A private cluster, a scratch directory and in it a `rekey serve` config
/// for the RBD backend with 5 s Ceph timeouts.
fn cluster_with_short_service_timeouts() -> (PrivateCluster, tempfile::TempDir, PathBuf) {
    require_tool("rbd", "ceph-common");
    require_tool("cryptsetup", "cryptsetup-bin");
    let cluster = PrivateCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rekey.toml");
    std::fs::write(
        &config,
        "[backend]\ntype = \"rbd\"\npool = \"rbd\"\nconnect_timeout_secs = 5\nop_timeout_secs = 5\n",
    )
    .unwrap();
    (cluster, dir, config)
}

/// Ceph stops answering while `rekey serve --backend rbd` clones and backs
/// up a volume: each operation ends `error` within its timeout, the API keeps
/// answering, the log says why, and once Ceph is back the source is intact
/// and the same operations succeed.
#[test]
fn osd_stopped_during_service_clone_and_backup_fails_cleanly_then_retries_succeed() {
    let (cluster, dir, config) = cluster_with_short_service_timeouts();
    let log = dir.path().join("serve.log");
    // The rbd CLI checks share the service's ceph.conf: bounded, so they cannot hang either.
    let conf = cluster.client_conf(60);
    let srv = Serve::start_with(
        &conf,
        &dir.path().join("data"),
        &["--config", s(&config)],
        &[("REKEY_STALL_AT", &format!("{}:8000", Point::recorded(Step::CloneData)))],
        Some(&log),
    );

    srv.create_encrypted_type("T", "luks2", None);
    let v = srv.create_volume(json!({"size": 1, "volume_type": "T", "name": "src"}));
    let src_id = v["id"].as_str().unwrap().to_owned();
    let src_key_id = v["encryption_key_id"].as_str().unwrap().to_owned();
    let src_key = dir.path().join("src.key");
    srv.passphrase_file(&src_key_id, &src_key);
    let plain = data(31, 4 * MIB as usize);
    srv.write_plaintext(&src_id, &src_key, &plain);

    // A clone, caught mid-way: its data is cloned on Ceph and its interim
    // key recorded (the volume names a key), the rekey steps are still to
    // come. The job pauses there (REKEY_STALL_AT) while the OSD is stopped.
    let c = srv.post(&format!("/v3/{PROJECT}/volumes"), json!({"volume": {"size": 1, "source_volid": src_id, "name": "c1"}}), 202);
    let failed_clone = c["volume"]["id"].as_str().unwrap().to_owned();
    let t0 = Instant::now();
    loop {
        let (st, v) = srv.api("GET", &format!("/v3/{PROJECT}/volumes/{failed_clone}"), None);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["volume"]["status"], "creating", "the clone must still be in progress: {v}");
        if v["volume"]["encryption_key_id"].is_string() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the clone never reached its interim key: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rbd(&conf, &["info", &format!("{POOL}/volume-{failed_clone}")]).code == 0, "the clone's data is on Ceph");
    cluster.signal_osd("-STOP");
    // With 5 s op timeouts a failing job needs a few timeouts at most.
    let guard = Duration::from_secs(120);
    let (clone, took) = settles_while_down(&srv, "volume", &failed_clone, &["creating"], guard);
    assert_eq!(clone["status"], "error", "a clone while Ceph is down must fail: {clone}");
    eprintln!("clone failed {took:?} after the OSD stopped");
    assert_eq!(srv.settled(&src_id)["status"], "available", "the source must be usable again");

    // A backup: admitted, then error with a reason; the volume is available again.
    let b = srv.post(&format!("/v3/{PROJECT}/backups"), json!({"backup": {"volume_id": src_id, "name": "b1"}}), 202);
    let failed_backup = b["backup"]["id"].as_str().unwrap().to_owned();
    let (backup, took) = settles_while_down(&srv, "backup", &failed_backup, &["creating"], guard);
    assert_eq!(backup["status"], "error", "a backup while Ceph is down must fail: {backup}");
    let reason = backup["fail_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("timed out") && reason.contains(&format!("volume-{src_id}")),
        "a failed backup says Ceph did not answer for which image: {backup}"
    );
    eprintln!("backup failed {took:?} after it was requested with the OSD stopped: {}", backup["fail_reason"]);
    let (st, list) = srv.api("GET", &format!("/v3/{PROJECT}/volumes/detail"), None);
    assert_eq!(st, 200, "{list}");
    let src = list["volumes"].as_array().unwrap().iter().find(|v| v["id"] == src_id.as_str()).unwrap().clone();
    assert_eq!((src["status"].as_str(), src["encryption_key_id"].as_str()), (Some("available"), Some(src_key_id.as_str())));

    // The log says what went wrong, for each job: Ceph did not answer in time.
    for id in [&failed_clone, &failed_backup] {
        let lines = log_lines_of(&log, id);
        assert!(
            lines.contains("timed out") || lines.contains("did not answer"),
            "the service log should say Ceph did not answer for {id}: {lines}"
        );
        assert!(!lines.contains("panicked"), "{lines}");
        eprintln!("service log for {id}:\n{lines}");
    }

    cluster.resume_osd(&format!("volume-{src_id}"));

    // The source is intact: its own key, its data.
    let img = dir.path().join("src.img");
    rbd_export(&conf, &format!("volume-{src_id}"), &img);
    assert!(cryptsetup_opens(&img, &src_key), "the source must still open with its own key");
    assert_eq!(cryptsetup_keyslots(&img), 1, "no keyslot was added to the source");
    assert_same(&plaintext_of(&img, &src_key, plain.len()), &plain, "the source's plaintext after the outage");

    // The failed records can be deleted (the half-made clone's image and
    // its parent snapshot go too); the same operations now succeed.
    srv.delete_volume(&failed_clone);
    let snaps = rbd(&conf, &["snap", "ls", &format!("{POOL}/volume-{src_id}")]).ok();
    assert!(!snaps.stdout.contains(&failed_clone), "the failed clone's snapshot was left on the source: {}", snaps.stdout);
    let (st, body) = srv.api("DELETE", &format!("/v3/{PROJECT}/backups/{failed_backup}"), None);
    assert_eq!(st, 202, "{body}");
    let v = srv.create_volume(json!({"size": 1, "source_volid": src_id, "name": "c2"}));
    let clone_id = v["id"].as_str().unwrap().to_owned();
    let clone_key = dir.path().join("clone.key");
    srv.passphrase_file(v["encryption_key_id"].as_str().unwrap(), &clone_key);
    let img = dir.path().join("clone.img");
    rbd_export(&conf, &format!("volume-{clone_id}"), &img);
    assert!(cryptsetup_opens(&img, &clone_key), "the retried clone must open with its own key");
    assert!(!cryptsetup_opens(&img, &src_key), "the retried clone must NOT open with the source's key");
    assert_same(&plaintext_of(&img, &clone_key, plain.len()), &plain, "the retried clone's plaintext");
    let b = srv.post(&format!("/v3/{PROJECT}/backups"), json!({"backup": {"volume_id": src_id, "name": "b2"}}), 202);
    let backup = srv.settled_as("backup", b["backup"]["id"].as_str().unwrap(), &["creating"]);
    assert_eq!(backup["status"], "available", "the retried backup must succeed: {backup}");
    drop(srv);
}

/// The passphrase of key `key_id`, as bytes.
fn passphrase_of(srv: &Serve, key_id: &str, scratch: &std::path::Path) -> Vec<u8> {
    srv.passphrase_file(key_id, scratch);
    std::fs::read(scratch).unwrap()
}

/// Ceph stops after a clone's point of no return (the record names the new
/// key; the interim keyslot is still to be wiped): the engine retries, then
/// gives the volume `error` within bounded time without losing the new key;
/// once Ceph is back the image opens with that key, and the service, still
/// retrying, finishes the rekey without a restart.
#[test]
fn osd_stopped_after_the_new_key_is_recorded_keeps_it_and_finishes_once_ceph_is_back() {
    let (cluster, dir, config) = cluster_with_short_service_timeouts();
    let data_dir = dir.path().join("data");
    let args = ["--config", s(&config)];
    let conf = cluster.client_conf(60);
    let srv = Serve::start_with(&conf, &data_dir, &args, &[("REKEY_STALL_AT", &format!("{}:8000", Point::recorded(Step::Persist)))], None);

    srv.create_encrypted_type("T", "luks2", None);
    let v = srv.create_volume(json!({"size": 1, "volume_type": "T", "name": "src"}));
    let src_id = v["id"].as_str().unwrap().to_owned();
    let src_key = dir.path().join("src.key");
    srv.passphrase_file(v["encryption_key_id"].as_str().unwrap(), &src_key);
    let src_pass = std::fs::read(&src_key).unwrap();
    let plain = data(41, 4 * MIB as usize);
    srv.write_plaintext(&src_id, &src_key, &plain);

    // Wait until the clone's record names a key that is not a copy of the
    // source's: step 3 (persist) is recorded and the job pauses before step 4.
    let c = srv.post(&format!("/v3/{PROJECT}/volumes"), json!({"volume": {"size": 1, "source_volid": src_id, "name": "c"}}), 202);
    let clone_id = c["volume"]["id"].as_str().unwrap().to_owned();
    let scratch = dir.path().join("scratch.key");
    let t0 = Instant::now();
    let new_key_id = loop {
        let (st, v) = srv.api("GET", &format!("/v3/{PROJECT}/volumes/{clone_id}"), None);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["volume"]["status"], "creating", "the clone must still be in progress: {v}");
        if let Some(k) = v["volume"]["encryption_key_id"].as_str() {
            if passphrase_of(&srv, k, &scratch) != src_pass {
                break k.to_owned();
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the clone never recorded its new key: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    cluster.signal_osd("-STOP");

    // Step 4 cannot reach Ceph: retried, then the volume is `error`, the
    // record still naming the new key (never the interim one, never none).
    let (v, took) = settles_while_down(&srv, "volume", &clone_id, &["creating"], Duration::from_secs(180));
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["encryption_key_id"], new_key_id.as_str(), "the new key must stay recorded");
    eprintln!("the clone's late step gave up {took:?} after the OSD stopped");
    assert_eq!(srv.api("GET", &format!("/v3/{PROJECT}/volumes/detail"), None).0, 200);

    cluster.resume_osd(&format!("volume-{clone_id}"));
    let new_key = dir.path().join("new.key");
    srv.passphrase_file(&new_key_id, &new_key);
    let img = dir.path().join("clone.img");
    rbd_export(&conf, &format!("volume-{clone_id}"), &img);
    assert!(cryptsetup_opens(&img, &new_key), "after the outage the clone must open with the key its record names");
    assert_same(&plaintext_of(&img, &new_key, plain.len()), &plain, "the clone's plaintext after the outage");

    // The late step is never given up: the running service keeps retrying it
    // (every 30 s at most) and finishes the rekey once Ceph answers again.
    let t0 = Instant::now();
    let v = loop {
        let v = srv.settled(&clone_id);
        if v["status"] == "available" {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the service did not finish the rekey after Ceph came back: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("the clone became available {:?} after Ceph came back", t0.elapsed());
    assert_eq!(v["encryption_key_id"], new_key_id.as_str());
    rbd_export(&conf, &format!("volume-{clone_id}"), &img);
    assert!(cryptsetup_opens(&img, &new_key), "the clone must open with its own key");
    assert!(!cryptsetup_opens(&img, &src_key), "the clone must NOT open with the source's key");
    assert_eq!(cryptsetup_keyslots(&img), 1);
    assert_same(&plaintext_of(&img, &new_key, plain.len()), &plain, "the clone's plaintext");
    let src_img = dir.path().join("src.img");
    rbd_export(&conf, &format!("volume-{src_id}"), &src_img);
    assert!(cryptsetup_opens(&src_img, &src_key), "the source must still open with its own key");
    assert_same(&plaintext_of(&src_img, &src_key, plain.len()), &plain, "the source's plaintext");
}
