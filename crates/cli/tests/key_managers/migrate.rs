//! `rekey key migrate`: embedded → Barbican → Vault of a data directory
//! with volumes, a clone, snapshots and a backup, killed with SIGKILL at
//! random points and at every step boundary, then rerun.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::*;

/// (table, record id, project, key id) of every record naming a key.
type Records = Vec<(String, String, String, String)>;

fn records(data: &Path) -> Records {
    let db = data.join("rekey.sqlite");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(
            "SELECT 'volumes', id, project_id, encryption_key_id FROM volumes WHERE encryption_key_id IS NOT NULL \
             UNION ALL SELECT 'snapshots', id, project_id, encryption_key_id FROM snapshots WHERE encryption_key_id IS NOT NULL \
             UNION ALL SELECT 'backups', id, project_id, encryption_key_id FROM backups WHERE encryption_key_id IS NOT NULL ORDER BY 1, 2;",
        )
        .output()
        .expect("run sqlite3");
    assert!(out.status.success(), "sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Manager {
    Embedded,
    Barbican,
    Vault,
}

struct World {
    data: PathBuf,
    barbican_url: String,
    bao: Bao,
    kv: String,
    barbican_toml: PathBuf,
    vault_toml: PathBuf,
}

impl World {
    /// Whether `m` holds key `key` of `project`.
    fn holds(&self, m: Manager, project: &str, key: &str) -> bool {
        match m {
            Manager::Embedded => {
                let out = Command::new("sqlite3")
                    .arg(self.data.join("keys.sqlite"))
                    .arg(format!("SELECT COUNT(*) FROM keys WHERE id = '{key}';"))
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim() == "1"
            }
            Manager::Barbican => {
                let port: u16 = self.barbican_url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
                let (st, _) = http(port, "GET", &format!("/v1/secrets/{key}"), &[("X-Project-Id", project)], None).unwrap();
                assert!(st == 200 || st == 404, "barbican GET secret {key}: {st}");
                st == 200
            }
            Manager::Vault => {
                let st = self.bao.metadata_status(&self.kv, key);
                assert!(st == 200 || st == 404, "vault GET metadata {key}: {st}");
                st == 200
            }
        }
    }

    fn source_config(&self, m: Manager) -> Option<&Path> {
        match m {
            Manager::Embedded => None,
            Manager::Barbican => Some(&self.barbican_toml),
            Manager::Vault => Some(&self.vault_toml),
        }
    }

    fn migrate_cmd(&self, from: Manager, to: Manager, crash_at: Option<&str>) -> Command {
        let mut cmd = Command::new(REKEY);
        cmd.args(["key", "migrate", "--json", "--data-dir"]).arg(&self.data).arg("--to-config");
        cmd.arg(self.source_config(to).expect("a target config"));
        if let Some(c) = self.source_config(from) {
            cmd.arg("--config").arg(c);
        }
        cmd.env_remove("REKEY_KEK").env("REKEY_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped());
        match crash_at {
            Some(p) => cmd.env("REKEY_CRASH_AT", p),
            None => cmd.env_remove("REKEY_CRASH_AT"),
        };
        cmd
    }

    fn migrate_to_end(&self, from: Manager, to: Manager) -> Value {
        let out = self.migrate_cmd(from, to, None).output().unwrap();
        assert!(out.status.success(), "migrate {from:?} -> {to:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("summary JSON")
    }

    /// Nothing lost: every record's key is in the source or the target.
    fn assert_nothing_lost(&self, from: Manager, to: Manager, when: &str) {
        for (table, id, project, key) in records(&self.data) {
            assert!(
                self.holds(from, &project, &key) || self.holds(to, &project, &key),
                "{when}: {table}/{id} names key {key}, which is in neither {from:?} nor {to:?}"
            );
        }
    }

    /// The passphrase of a key as `rekey key show` reads it through `m`.
    fn passphrase(&self, m: Manager, key: &str) -> Vec<u8> {
        let mut cmd = Command::new(REKEY);
        cmd.args(["key", "show", key, "--passphrase", "--data-dir"]).arg(&self.data);
        if let Some(c) = self.source_config(m) {
            cmd.arg("--config").arg(c);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "key show {key} via {m:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// One hop with kill -9 trials; returns how many kills landed mid-way.
    fn hop(&self, from: Manager, to: Manager, before: &Records) -> usize {
        let mut mid_way = 0;
        // A crash at each step boundary, several times (each run moves one
        // record further before the crash point comes round again).
        for point in ["migrate_copy.start", "migrate_copy", "migrate_record.recorded"] {
            for _ in 0..2 {
                let st = self.migrate_cmd(from, to, Some(point)).status().unwrap();
                if !st.success() {
                    mid_way += 1;
                }
                self.assert_nothing_lost(from, to, &format!("crashed at {point}"));
            }
        }
        // Random kills over the time a run takes; the window shrinks when
        // runs finish before the kill (a run left with little to do is
        // short).
        let mut window = 900;
        for trial in 0..14 {
            let mut child = self.migrate_cmd(from, to, None).spawn().unwrap();
            let delay = Duration::from_millis(random_below(window));
            std::thread::sleep(delay);
            if child.try_wait().unwrap().is_none() {
                mid_way += 1;
            } else {
                window = (window * 4 / 5).max(50);
            }
            let _ = child.kill();
            let _ = child.wait();
            self.assert_nothing_lost(from, to, &format!("{from:?} -> {to:?} trial {trial} killed after {delay:?}"));
        }
        let summary = self.migrate_to_end(from, to);
        assert_eq!(summary["missing"], serde_json::json!([]), "{summary}");
        assert_eq!(summary["records"], before.len() as u64, "{summary}");

        let after = records(&self.data);
        assert_eq!(after.len(), before.len());
        for ((t0, id0, p0, k0), (t1, id1, _, k1)) in before.iter().zip(&after) {
            assert_eq!((t0, id0), (t1, id1));
            assert_ne!(k0, k1, "{t0}/{id0} has a new key id");
            assert!(self.holds(to, p0, k1), "{t0}/{id0}: its key {k1} is in {to:?}");
            assert!(!self.holds(from, p0, k0), "{t0}/{id0}: the old key {k0} is gone from {from:?}");
            assert!(!self.holds(from, p0, k1), "{t0}/{id0}: the new key is not in {from:?}");
            if t1 == "volumes" {
                let pass = self.passphrase(to, k1);
                assert!(cryptsetup_opens(&volume_path(&self.data, id1), &pass), "volume {id1} opens with its {to:?} key");
            }
        }
        // A rerun finds nothing to do and changes nothing.
        let again = self.migrate_to_end(from, to);
        assert_eq!(again["migrated"], 0, "{again}");
        assert_eq!(again["already_migrated"], before.len() as u64, "{again}");
        assert_eq!(records(&self.data), after, "a rerun changes no record");
        mid_way
    }
}

fn random_below(n: u64) -> u64 {
    u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap()) % n.max(1)
}

fn wait_status(srv: &Server, path: &str, key: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let (st, v) = srv.http("GET", path, None);
        assert_eq!(st, 200, "{path}: {v}");
        if v[key]["status"] == want {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{path} never became {want}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn migrate_embedded_to_barbican_to_vault_survives_kill9() {
    venv();
    require_cryptsetup();
    let barbican_url = std::env::var("REKEY_BARBICAN_URL").unwrap_or_else(|_| panic!("REKEY_BARBICAN_URL is not set: start `scripts/barbican.sh start`"));
    let bao = Bao::from_env();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kv = kv_path("migrate");
    let barbican_toml = dir.path().join("barbican.toml");
    std::fs::write(&barbican_toml, format!("[key_manager]\nbackend = \"barbican\"\nurl = \"{barbican_url}\"\n")).unwrap();
    let vault_toml = dir.path().join("vault.toml");
    std::fs::write(
        &vault_toml,
        format!("[key_manager]\nbackend = \"vault\"\nurl = \"{}\"\ntoken = \"{}\"\nkv_path = \"{kv}\"\n", bao.url, bao.token),
    )
    .unwrap();
    let w = World { data: data.clone(), barbican_url, bao, kv, barbican_toml, vault_toml };

    {
        let srv = Server::start(&data, &[]);
        make_type(&srv);
        for name in ["a", "b"] {
            let v = json_ok(&srv.openstack(&["volume", "create", "--size", "1", "--type", "LUKS", name, "-f", "json"]));
            assert_eq!(srv.wait_settled(v["id"].as_str().unwrap())["status"], "available");
        }
        let c = json_ok(&srv.openstack(&["volume", "create", "--source", "a", "c", "-f", "json"]));
        assert_eq!(srv.wait_settled(c["id"].as_str().unwrap())["status"], "available");
        for (vol, name) in [("a", "sa"), ("b", "sb")] {
            let s = json_ok(&srv.openstack(&["volume", "snapshot", "create", "--volume", vol, name, "-f", "json"]));
            wait_status(&srv, &format!("/v3/snapshots/{}", s["id"].as_str().unwrap()), "snapshot", "available");
        }
        let b = json_ok(&srv.openstack(&["volume", "backup", "create", "--name", "ba", "a", "-f", "json"]));
        wait_status(&srv, &format!("/v3/backups/{}", b["id"].as_str().unwrap()), "backup", "available");
    }
    let before = records(&data);
    let tables: std::collections::BTreeSet<&str> = before.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(tables, ["backups", "snapshots", "volumes"].into_iter().collect(), "{before:?}");

    let mut mid_way = w.hop(Manager::Embedded, Manager::Barbican, &before);
    let middle = records(&data);
    mid_way += w.hop(Manager::Barbican, Manager::Vault, &middle);
    eprintln!("{mid_way} migration runs were killed mid-way");
    assert!(mid_way >= 20, "at least 20 runs were killed mid-way ({mid_way})");

    // The service runs on the migrated keys.
    let srv = serve_on_vault(&data, &w.bao, &w.kv);
    let (st, v) = srv.http("GET", "/v3/volumes/detail", None);
    assert_eq!(st, 200, "{v}");
    let c = json_ok(&srv.openstack(&["volume", "create", "--source", "b", "d", "-f", "json"]));
    assert_eq!(srv.wait_settled(c["id"].as_str().unwrap())["status"], "available", "a clone made from a migrated volume");
}
