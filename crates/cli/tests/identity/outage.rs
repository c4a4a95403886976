//! A private Keystone (its own state and port, short-lived tokens): expired
//! tokens, the service token renewed before it expires, Keystone stopped or
//! hung → a quick 503, and service again once it is back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{scratch, token_at, Server, Setup};

/// Token lifetime of the private Keystone, seconds.
const LIFETIME: u64 = 15;

struct PrivateKeystone {
    dir: tempfile::TempDir,
    port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/keystone.sh")
}

impl PrivateKeystone {
    fn run(&self, verb: &str) -> String {
        // The venv the shared Keystone was installed into (no second pip install).
        let venv = std::env::var("REKEY_KS_VENV").unwrap_or_else(|_| format!("{}/venv-keystone", scratch().display()));
        let out = Command::new("bash")
            .arg(script())
            .arg(verb)
            .env("REKEY_TEST_DIR", self.dir.path())
            .env("REKEY_KS_VENV", venv)
            .env("KEYSTONE_PORT", self.port.to_string())
            .env("KEYSTONE_TOKEN_EXPIRATION", LIFETIME.to_string())
            .output()
            .expect("run scripts/keystone.sh");
        assert!(out.status.success(), "keystone.sh {verb}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> (PrivateKeystone, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ks = PrivateKeystone { dir: tempfile::tempdir_in(scratch()).unwrap(), port };
        let url = ks.run("start");
        (ks, url)
    }

    /// The gunicorn worker (the process answering requests), by its parent's PID file.
    fn worker_pid(&self) -> String {
        let master = std::fs::read_to_string(self.dir.path().join("keystone/gunicorn.pid")).unwrap();
        let out = Command::new("pgrep").args(["-P", master.trim()]).output().unwrap();
        let pids = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!pids.is_empty() && !pids.contains('\n'), "one gunicorn worker expected, got {pids:?}");
        pids
    }
}

impl Drop for PrivateKeystone {
    fn drop(&mut self) {
        // Never leave it stopped (SIGSTOP) or running.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("keystone/gunicorn.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
            let _ = Command::new("pkill").args(["-CONT", "-P", pid.trim()]).status();
        }
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("REKEY_TEST_DIR", self.dir.path())
            .env("KEYSTONE_PORT", self.port.to_string())
            .output();
    }
}

fn timed(srv: &Server, tok: &str, path: &str) -> (u16, Duration) {
    let t0 = Instant::now();
    let a = srv.call(tok, "GET", path, None);
    (a.status, t0.elapsed())
}

#[test]
fn expired_tokens_renewed_service_token_and_keystone_outages() {
    let (ks, url) = PrivateKeystone::start();
    // Cache longer than a token lives: expiry, not the cache time, must end it.
    let srv = Server::start(Setup { token_cache_seconds: 60, timeout_seconds: 2, ..Setup::new(&url) });
    let (old, project) = token_at(&url, "member-a", "rekey-a");
    let path = format!("/v3/{project}/volumes");
    assert_eq!(srv.call(&old, "GET", &path, None).status, 200);

    // Past its expiry the token is refused, though still in the cache; a new
    // one works, which needs the service token renewed meanwhile (it lives
    // LIFETIME seconds too).
    std::thread::sleep(Duration::from_secs(LIFETIME + 1));
    let a = srv.call(&old, "GET", &path, None);
    assert_eq!(a.status, 401, "expired token accepted: {}", a.body);
    assert!(a.header("www-authenticate").unwrap().starts_with("Keystone uri="));
    let (fresh, _) = token_at(&url, "member-a", "rekey-a");
    assert_eq!(srv.call(&fresh, "GET", &path, None).status, 200);

    // Keystone stopped: 503, quickly, with Cinder's body.
    let (cached, _) = token_at(&url, "member-a", "rekey-a");
    let (uncached, _) = token_at(&url, "member-a", "rekey-a");
    assert_eq!(srv.call(&cached, "GET", &path, None).status, 200);
    ks.run("stop");
    let t0 = Instant::now();
    let a = srv.call(&uncached, "GET", &path, None);
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["serviceUnavailable"]["code"], 503, "{}", a.body);
    assert!(t0.elapsed() < Duration::from_secs(10), "503 took {:?}", t0.elapsed());
    // A token validated before the outage is served from the cache meanwhile.
    assert_eq!(srv.call(&cached, "GET", &path, None).status, 200);

    // Back (same database and keys): service resumes.
    ks.run("start");
    let (after, _) = token_at(&url, "member-a", "rekey-a");
    assert_eq!(srv.call(&after, "GET", &path, None).status, 200);

    // Keystone hung (its worker stopped, connections accepted, never
    // answered): 503 within the configured timeout, not a hang.
    let (hung_tok, _) = token_at(&url, "member-a", "rekey-a");
    let worker = ks.worker_pid();
    assert!(Command::new("kill").args(["-STOP", &worker]).status().unwrap().success());
    let (st, took) = timed(&srv, &hung_tok, &path);
    assert!(Command::new("kill").args(["-CONT", &worker]).status().unwrap().success());
    assert_eq!(st, 503);
    assert!(took < Duration::from_secs(10), "503 after a hung keystone took {took:?} (timeout_seconds = 2)");
    let start = Instant::now();
    loop {
        let (st, _) = timed(&srv, &hung_tok, &path);
        if st == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no recovery after Keystone resumed: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    srv.stop_and_check_log(&[&old, &fresh, &cached, &uncached, &after, &hung_tok]);
}
