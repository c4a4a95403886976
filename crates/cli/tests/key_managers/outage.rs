//! Vault sealed or frozen while a clone is in progress: the clone either
//! waits and finishes or fails with a clear reason, and every volume is
//! opened by the key its record names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;
use rekey_service::fault::{Point, Step};
use crate::*;

/// The private instance's port (the dev server also takes the next one for
/// its cluster listener): REKEY_OUTAGE_BAO_PORT, default 8211.
fn port() -> u16 {
    std::env::var("REKEY_OUTAGE_BAO_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8211)
}

/// A private OpenBao (the tests seal and freeze it), stopped by PID on drop.
struct OwnBao {
    script: PathBuf,
    state: PathBuf,
    bao: Bao,
}

impl OwnBao {
    fn start() -> OwnBao {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openbao.sh");
        let test_dir = std::env::var("REKEY_TEST_DIR").unwrap_or_else(|_| "/tmp/rekey-test".into());
        let out = Command::new("bash").arg(&script).arg("start").env("OPENBAO_PORT", port().to_string()).output().unwrap();
        assert!(out.status.success(), "openbao.sh start on {}: {}", port(), String::from_utf8_lossy(&out.stderr));
        OwnBao {
            script,
            state: PathBuf::from(test_dir).join(format!("openbao-{}", port())),
            bao: Bao::at(&format!("http://127.0.0.1:{}", port()), "rekey-dev-root"),
        }
    }

    fn bao_cli(&self, args: &[&str]) {
        let out = Command::new(need("REKEY_BAO"))
            .args(args)
            .env("BAO_ADDR", &self.bao.url)
            .env("BAO_TOKEN", &self.bao.token)
            .env("HOME", &self.state)
            .output()
            .unwrap();
        assert!(out.status.success(), "bao {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn seal(&self) {
        self.bao_cli(&["operator", "seal"]);
    }

    fn unseal(&self) {
        let log = std::fs::read_to_string(self.state.join("bao.log")).unwrap();
        let key = log.lines().find_map(|l| l.trim().strip_prefix("Unseal Key: ")).expect("the dev server prints its unseal key").trim().to_owned();
        self.bao_cli(&["operator", "unseal", &key]);
    }

    fn signal(&self, sig: &str) {
        let pid = std::fs::read_to_string(self.state.join("bao.pid")).unwrap();
        assert!(Command::new("kill").args([sig, pid.trim()]).status().unwrap().success());
    }
}

impl Drop for OwnBao {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = Command::new("bash").arg(&self.script).arg("stop").env("OPENBAO_PORT", port().to_string()).status();
    }
}

enum Outage {
    Sealed,
    Frozen,
}

fn settle(srv: &Server, id: &str, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = srv.volume(id);
        let st = v["status"].as_str().unwrap_or("").to_owned();
        if !matches!(st.as_str(), "creating" | "deleting" | "maintenance") {
            return v;
        }
        assert!(start.elapsed() < within, "volume {id} stuck in {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(outage: Outage, stall_at: &str) {
    venv();
    require_cryptsetup();
    let own = OwnBao::start();
    let kv = kv_path(&format!("outage-{}", stall_at.replace('.', "-")));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stall = format!("{stall_at}:3000");
    let srv = Server::start_with(
        &data,
        &["--key-manager", "vault", "--vault-url", &own.bao.url, "--vault-kv-path", &kv],
        &[("REKEY_VAULT_TOKEN", &own.bao.token), ("REKEY_STALL_AT", &stall)],
    );
    make_type(&srv);
    let src = json_ok(&srv.openstack(&["volume", "create", "--size", "1", "--type", "LUKS", "src", "-f", "json"]));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let src = settle(&srv, &src_id, Duration::from_secs(60));
    assert_eq!(src["status"], "available", "{src}");
    let src_key = src["encryption_key_id"].as_str().unwrap().to_owned();

    let clone = json_ok(&srv.openstack(&["volume", "create", "--source", "src", "clone", "-f", "json"]));
    let clone_id = clone["id"].as_str().unwrap().to_owned();
    // The job is paused at `stall_at` for 3 s: take Vault away now, give it
    // back after the job has met the outage.
    std::thread::sleep(Duration::from_millis(500));
    match outage {
        Outage::Sealed => own.seal(),
        Outage::Frozen => own.signal("-STOP"),
    }
    // The job wakes 2.5 s from now; the outage then lasts longer than the
    // client's 10 s request timeout, so a frozen Vault is surely met as one
    // that does not answer.
    std::thread::sleep(Duration::from_secs(15));
    match outage {
        Outage::Sealed => own.unseal(),
        Outage::Frozen => own.signal("-CONT"),
    }
    let clone = settle(&srv, &clone_id, Duration::from_secs(180));
    let status = clone["status"].as_str().unwrap().to_owned();
    assert!(status == "available" || status == "error", "{clone}");
    eprintln!("clone after the outage: {status}");
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    let said = match outage {
        Outage::Sealed => "sealed",
        Outage::Frozen => "no answer in time",
    };
    assert!(log.contains(said), "the service log names the outage ({said})");

    // The source is untouched and opens with its key.
    let src_pass = own.bao.value(&kv, &src_key);
    assert!(cryptsetup_opens(&volume_path(&data, &src_id), src_pass.as_bytes()), "the source opens with its recorded key");
    match clone["encryption_key_id"].as_str() {
        Some(k) if status == "available" => {
            assert_ne!(k, src_key);
            let pass = own.bao.value(&kv, k);
            assert!(cryptsetup_opens(&volume_path(&data, &clone_id), pass.as_bytes()), "an available clone opens with its recorded key");
            assert!(!cryptsetup_opens(&volume_path(&data, &src_id), pass.as_bytes()), "the clone's key does not open the source");
        }
        recorded => {
            // A failed clone: if it has data, the key its record names is in
            // Vault and opens it; never data that no recorded key opens.
            let path = volume_path(&data, &clone_id);
            let has_data = path.exists() && std::fs::metadata(&path).unwrap().len() > 0;
            eprintln!("failed clone: key {recorded:?}, data {has_data}");
            if has_data {
                let k = recorded.expect("a failed clone with data records a key");
                assert_eq!(own.bao.metadata_status(&kv, k), 200, "the failed clone's recorded key {k} is in Vault");
                let pass = own.bao.value(&kv, k);
                assert!(cryptsetup_opens(&path, pass.as_bytes()), "the failed clone opens with its recorded key");
            }
        }
    }
}

/// One test for every outage, in turn: they share one private OpenBao port.
#[test]
fn vault_sealed_or_frozen_mid_clone() {
    // Sealed before the clone makes its interim and new keys (while it
    // copies the data), and before it adds the new key's keyslot; frozen
    // (SIGSTOP) after the keys were made.
    run(Outage::Sealed, &Point::start(Step::CloneData).to_string());
    run(Outage::Sealed, &Point::recorded(Step::CloneData).to_string());
    run(Outage::Frozen, &Point::done(Step::CloneData).to_string());
}
