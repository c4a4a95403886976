//! Ceph stops answering in the middle of `rekey luks reencrypt`: the command
//! fails within its timeout with a clear error, and once Ceph is back
//! `--resume` finishes with the plaintext intact.
//!
//! Runs on a private cluster (own directory and ports, started with
//! scripts/ceph.sh) so pausing its OSD disturbs no other test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

fn ceph_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph.sh")
}

/// A throw-away cluster of our own, stopped (and wiped) on drop.
struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    conf: PathBuf,
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A mon port whose msgr1 companion (port + 3489, see ceph.sh) is free too.
fn free_mon_port() -> u16 {
    for _ in 0..50 {
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if p < 60000 && port_free(p + 3489) {
            return p;
        }
    }
    panic!("no free pair of ports for a private Ceph monitor");
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let dir = tempfile::Builder::new().prefix("rekey-outage-").tempdir().unwrap();
        let port = free_mon_port();
        let out = Command::new("bash")
            .arg(ceph_sh())
            .arg("start")
            .env("REKEY_TEST_DIR", dir.path())
            .env("CEPH_MON_PORT", port.to_string())
            .env_remove("CEPH_CONF")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/ceph.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let cluster = PrivateCluster { conf: dir.path().join("ceph/ceph.conf"), dir, port };
        assert!(
            out.status.success() && stdout.contains("export CEPH_CONF="),
            "scripts/ceph.sh start of a private cluster (port {port}) failed \
             (scripts/ceph.sh install first?): {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn osd_pid(&self) -> String {
        let f = self.dir.path().join("ceph/run/osd.0.pid");
        std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .trim()
            .to_owned()
    }

    fn signal_osd(&self, sig: &str) {
        let ok =
            Command::new("kill").args([sig, &self.osd_pid()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} of the private OSD failed");
    }

    /// A client ceph.conf with short timeouts (what an operator would set).
    fn client_conf(&self, secs: u32) -> PathBuf {
        let mut text = std::fs::read_to_string(&self.conf).unwrap();
        text.push_str(&format!(
            "\n[client]\nrados osd op timeout = {secs}\nrados mon op timeout = {secs}\n\
             client mount timeout = {secs}\nlog file = /dev/null\n"
        ));
        let p = self.dir.path().join("client.conf");
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // A stopped OSD would only die by SIGKILL after ceph.sh's grace period.
        let _ = Command::new("kill").args(["-CONT", &self.osd_pid()]).status();
        let _ = Command::new("bash")
            .arg(ceph_sh())
            .arg("stop")
            .env("REKEY_TEST_DIR", self.dir.path())
            .env("CEPH_MON_PORT", self.port.to_string())
            .env("WIPE", "1")
            .stdin(Stdio::null())
            .output();
    }
}

/// Kills the child if the test fails before it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let back = Instant::now();
    while rbd(&conf, &["status", &img.path()]).code != 0 {
        assert!(back.elapsed() < Duration::from_secs(120), "Ceph did not come back after SIGCONT");
        std::thread::sleep(Duration::from_millis(500));
    }
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
