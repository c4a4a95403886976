//! A service re-encryption finished by stock cryptsetup: `rekey serve`
//! SIGKILLed in the middle of an in-place volume-key rekey leaves
//! cryptsetup's own `online-reencrypt-v2` state in the header; with the
//! service stopped, `rekey volume audit` reports it, `cryptsetup reencrypt
//! --resume-only` finishes it with the job's new key, and the service, once
//! started again, sees the volume rekeyed and records the new key (the job
//! resumes, finds the data already converted and goes on; docs/reencrypt.md).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// Whether the header at the start of `path` carries cryptsetup's
/// re-encryption requirement (read directly, so the poll is fast).
fn header_in_reencryption(path: &std::path::Path) -> bool {
    let mut buf = vec![0u8; 16 << 10];
    let ok = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut buf)).is_ok();
    ok && buf.windows(19).any(|w| w == b"online-reencrypt-v2")
}

fn luks_dump(path: &std::path::Path) -> String {
    let out = Command::new("cryptsetup").arg("luksDump").arg(path).output().unwrap();
    assert!(out.status.success(), "luksDump: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn unfinished_jobs(data_dir: &std::path::Path) -> Vec<Value> {
    let mut args = vec!["job", "list", "--json", "--data-dir", data_dir.to_str().unwrap()];
    let db = db_args(data_dir);
    args.extend(db.iter().map(String::as_str));
    serde_json::from_str(&rekey(&args)).expect("job list JSON")
}

fn cryptsetup_with_key(args: &[&str], path: &std::path::Path, pass: &[u8]) {
    let mut cs = Command::new("cryptsetup").args(args).arg(path).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    cs.stdin.take().unwrap().write_all(pass).unwrap();
    let out = cs.wait_with_output().unwrap();
    assert!(out.status.success(), "cryptsetup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn service_reencryption_killed_then_finished_by_cryptsetup() {
    require_cryptsetup();
    let mut counted = 0;
    for (trial, extra_ms) in [0u64, 300, 900].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut srv = Server::start(&data, &[]);
        srv.create_type("LUKS2", Some("luks2"), &[]);
        let v = srv.create_volume(json!({"volume": {"size": 1, "name": "v", "volume_type": "LUKS2"}}));
        assert_eq!(v["status"], "available", "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let old_key = v["encryption_key_id"].as_str().unwrap().to_owned();
        let path = volume_path(&data, &id);
        let old_pass = passphrase(&data, &old_key);
        write_plaintext(&path, &old_pass, &pattern(5));
        let old_vk = volume_key_hex(&path, &old_pass);

        let (st, b) = srv.http("POST", &format!("/v3/volumes/{id}/action"), Some(br#"{"os-rekey": {"mode": "volume-key"}}"#));
        assert_eq!(st, 202, "{b}");
        let start = Instant::now();
        while !header_in_reencryption(&path) {
            assert!(start.elapsed() < Duration::from_secs(120), "trial {trial}: the re-encryption never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        srv.kill9();
        drop(srv);
        // Only a kill that left the re-encryption unfinished counts.
        if !header_in_reencryption(&path) {
            eprintln!("trial {trial}: finished before the kill; not counted");
            continue;
        }
        counted += 1;
        assert!(luks_dump(&path).contains("online-reencrypt-v2"), "trial {trial}: luksDump shows no re-encryption");

        // With the service stopped: the audit reports it and names the job.
        let r = audit_json(&data);
        let u = &r["unfinished_reencryptions"];
        assert_eq!(u.as_array().map(Vec::len), Some(1), "trial {trial}: {r}");
        assert_eq!((u[0]["volume"].as_str(), u[0]["requirement"].as_str()), (Some(id.as_str()), Some("online-reencrypt-v2")));
        let jobs = unfinished_jobs(&data);
        let job = jobs.iter().find(|j| j["target_id"] == id.as_str()).unwrap_or_else(|| panic!("no job for {id}: {jobs:?}"));
        assert_eq!(u[0]["job"], job["id"], "{r}");
        let new_key = job["new_key_id"].as_str().expect("the job holds its new key").to_owned();
        assert!(u[0]["fix"].as_str().unwrap().contains(&new_key), "{r}");

        // Stock cryptsetup finishes it with the new key's passphrase: killed
        // inside a hotzone, `repair` first (its own hotzone recovery, which
        // finishes it outright after the last hotzone), as after its own crash.
        let new_pass = passphrase(&data, &new_key);
        if luks_dump(&path).contains("in-reencryption") {
            cryptsetup_with_key(&["repair", "--batch-mode", "--key-file=-"], &path, &new_pass);
        }
        if header_in_reencryption(&path) {
            cryptsetup_with_key(&["reencrypt", "--resume-only", "--force-offline-reencrypt", "--batch-mode", "--key-file=-"], &path, &new_pass);
        }
        let dump = luks_dump(&path);
        assert!(!dump.contains("reencrypt"), "trial {trial}: re-encryption left after cryptsetup: {dump}");
        assert!(audit_json(&data)["unfinished_reencryptions"] == json!([]), "trial {trial}");

        // The service, started again, finishes the job on what cryptsetup did.
        let srv = Server::start(&data, &[]);
        let v = srv.wait_settled(&id);
        assert_eq!(v["status"], "available", "trial {trial}: {v}");
        assert_eq!(v["encryption_key_id"], new_key.as_str(), "trial {trial}: the service does not record the new key");
        assert!(cryptsetup_opens(&path, &new_pass), "trial {trial}: the new key does not open it");
        assert!(!cryptsetup_opens(&path, &old_pass), "trial {trial}: the old key still opens it");
        assert_ne!(volume_key_hex(&path, &new_pass), old_vk, "trial {trial}: the volume key did not change");
        assert_eq!(cryptsetup_keyslots(&path), 1, "trial {trial}: old keyslot left");
        assert_eq!(read_plaintext(&path, &new_pass, 1 << 20), vec![pattern(5); 3], "trial {trial}: plaintext");
        assert!(unfinished_jobs(&data).is_empty(), "trial {trial}: a job is left");
        assert_no_orphan_keys(&data, &format!("trial {trial}"));
    }
    assert!(counted >= 2, "only {counted} kills landed mid-re-encryption");
}
