//! Crash safety of the rekey flow: the service is aborted (as abruptly as
//! `kill -9`) at every named point of the clone flow, restarted, and the
//! clone must end `available` opening with the key the database names, or
//! `error` with the source untouched — never a volume no recorded key opens.

use std::time::Duration;

use serde_json::json;

use rekey_service::fault::{Point, Step};

use crate::harness::*;

/// The points of `rekey_service::fault::CLONE_POINTS`, repeated here as
/// typed states so a reordered or dropped point fails this test instead of
/// silently testing nothing.
const POINTS: &[Point] = &[
    Point::done(Step::CloneData),
    Point::recorded(Step::CloneData),
    Point::done(Step::AddKeyslot),
    Point::recorded(Step::AddKeyslot),
    Point::done(Step::Persist),
    Point::recorded(Step::Persist),
    Point::done(Step::DestroyOldKeyslot),
    Point::recorded(Step::DestroyOldKeyslot),
    Point::done(Step::DeleteInterimKey),
];

#[test]
fn crash_points_match_the_engine() {
    assert_eq!(POINTS, rekey_service::fault::CLONE_POINTS);
}

struct Setup {
    src_id: String,
    src_key: String,
    src_head: Vec<u8>,
}

fn make_source(srv: &Server, provider: &str) -> Setup {
    srv.create_type("LUKS", Some(provider), &[]);
    let src = srv.create_volume(json!({"volume": {"size": 1, "name": "src", "volume_type": "LUKS"}}));
    assert_eq!(src["status"], "available", "{src}");
    let src_id = src["id"].as_str().unwrap().to_owned();
    let src_key = src["encryption_key_id"].as_str().unwrap().to_owned();
    let path = volume_path(&srv.data_dir, &src_id);
    write_plaintext(&path, &passphrase(&srv.data_dir, &src_key), &pattern(9));
    Setup { src_head: head_bytes(&path), src_id, src_key }
}

/// After the restart: the clone settled into a state whose recorded key opens it.
fn check_after_restart(srv: &Server, s: &Setup, point: &str) {
    let clone = srv.volume_by_name("clone").unwrap_or_else(|| panic!("{point}: the clone record is missing"));
    let clone = srv.wait_settled(clone["id"].as_str().unwrap());
    let clone_id = clone["id"].as_str().unwrap();
    let src_path = volume_path(&srv.data_dir, &s.src_id);
    assert_eq!(head_bytes(&src_path), s.src_head, "{point}: source bytes changed");
    let src_pass = passphrase(&srv.data_dir, &s.src_key);
    assert!(cryptsetup_opens(&src_path, &src_pass), "{point}: source no longer opens");
    match clone["status"].as_str().unwrap() {
        "available" => {
            let key = clone["encryption_key_id"].as_str().unwrap_or_else(|| panic!("{point}: no key id"));
            assert_ne!(key, s.src_key, "{point}: clone shares the source's key id");
            let path = volume_path(&srv.data_dir, clone_id);
            let pass = passphrase(&srv.data_dir, key);
            assert!(cryptsetup_opens(&path, &pass), "{point}: clone does not open with the key the database names");
            assert!(!cryptsetup_opens(&path, &src_pass), "{point}: clone still opens with the source's key");
            assert_eq!(cryptsetup_keyslots(&path), 1, "{point}: old keyslot left");
            assert_eq!(read_plaintext(&path, &pass, 1 << 20)[2], pattern(9), "{point}: clone plaintext");
        }
        "error" => {
            // Allowed, with the source untouched (checked above); if the
            // clone has a key recorded, that key must open what exists.
            if let Some(key) = clone["encryption_key_id"].as_str() {
                let path = volume_path(&srv.data_dir, clone_id);
                if path.exists() {
                    assert!(cryptsetup_opens(&path, &passphrase(&srv.data_dir, key)), "{point}: error clone unopenable");
                }
            }
        }
        other => panic!("{point}: clone ended {other}"),
    }
    assert_no_orphan_keys(&srv.data_dir, point);
}

fn crash_at(point: Point, provider: &str) {
    require_cryptsetup();
    let point = &point.to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = Server::start(&data, &[("REKEY_CRASH_AT", point)]);
    let s = make_source(&srv, provider);
    // The service may die before it answers: the response is not needed.
    let body = json!({"volume": {"name": "clone", "source_volid": s.src_id}}).to_string();
    let _ = http(srv.port, "POST", "/v3/volumes", &[("X-Auth-Token", PROJECT)], Some(body.as_bytes()));
    assert!(srv.wait_crash(Duration::from_secs(30)), "{point}: the service did not abort there");
    drop(srv);
    let srv = Server::start(&data, &[]);
    check_after_restart(&srv, &s, point);
}

#[test]
fn crash_at_every_rekey_step_luks1() {
    for p in POINTS {
        crash_at(*p, "luks");
    }
}

#[test]
fn crash_at_every_rekey_step_luks2() {
    for p in POINTS {
        crash_at(*p, "luks2");
    }
}

/// A real SIGKILL at moments the test does not choose precisely.
#[test]
fn kill_9_during_clones_then_restart() {
    require_cryptsetup();
    for delay_ms in [0u64, 2, 5, 10, 20, 40] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut srv = Server::start(&data, &[]);
        let s = make_source(&srv, "luks");
        let body = json!({"volume": {"name": "clone", "source_volid": s.src_id}}).to_string();
        let (st, _) = http(srv.port, "POST", "/v3/volumes", &[("X-Auth-Token", PROJECT)], Some(body.as_bytes())).unwrap();
        assert_eq!(st, 202);
        std::thread::sleep(Duration::from_millis(delay_ms));
        srv.kill9();
        drop(srv);
        let srv = Server::start(&data, &[]);
        check_after_restart(&srv, &s, &format!("kill -9 after {delay_ms} ms"));
    }
}

/// An in-place `os-rekey` in volume-key mode (every sector re-encrypted)
/// crashed at its steps, or SIGKILLed in the middle of the re-encryption:
/// after a restart the job resumes and the volume ends `available`, opening
/// with the new key the database names and not with the old one, its
/// plaintext intact.
#[test]
fn crash_during_in_place_volume_key_rekey() {
    require_cryptsetup();
    // The boundary points are shared with the clone flow (tested above at
    // every point); these are the ones where the in-place job differs.
    let crash_points = [Point::done(Step::AddKeyslot), Point::recorded(Step::Persist), Point::done(Step::DestroyOldKeyslot)]
        .map(|p| p.to_string());
    let kills_ms = [400u64, 1500];
    let cases = crash_points.iter().map(|p| (Some(p.as_str()), 0)).chain(kills_ms.iter().map(|ms| (None, *ms)));
    for (point, delay_ms) in cases {
        let what = point.map_or_else(|| format!("kill -9 after {delay_ms} ms"), |p| format!("crash at {p}"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let env: Vec<(&str, &str)> = point.map(|p| vec![("REKEY_CRASH_AT", p)]).unwrap_or_default();
        let mut srv = Server::start(&data, &[]);
        let s = make_source(&srv, "luks2");
        drop(srv);
        srv = Server::start(&data, &env);
        let path = volume_path(&srv.data_dir, &s.src_id);
        let old_pass = passphrase(&srv.data_dir, &s.src_key);
        let old_vk = volume_key_hex(&path, &old_pass);
        let (st, b) = srv.http("POST", &format!("/v3/volumes/{}/action", s.src_id), Some(br#"{"os-rekey": {}}"#));
        assert_eq!(st, 202, "{what}: {b}");
        match point {
            Some(_) => assert!(srv.wait_crash(Duration::from_secs(60)), "{what}: the service did not abort there"),
            None => {
                std::thread::sleep(Duration::from_millis(delay_ms));
                srv.kill9();
            }
        }
        drop(srv);
        let srv = Server::start(&data, &[]);
        let v = srv.wait_settled(&s.src_id);
        assert_eq!(v["status"], "available", "{what}: {v}");
        let key = v["encryption_key_id"].as_str().unwrap();
        let pass = passphrase(&srv.data_dir, key);
        assert!(cryptsetup_opens(&path, &pass), "{what}: the volume does not open with the key the database names");
        assert!(key == s.src_key || !cryptsetup_opens(&path, &old_pass), "{what}: rekeyed, yet the old key still opens it");
        if key != s.src_key {
            assert_ne!(volume_key_hex(&path, &pass), old_vk, "{what}: the volume key did not change");
            assert_eq!(cryptsetup_keyslots(&path), 1, "{what}: old keyslot left");
        }
        assert_eq!(read_plaintext(&path, &pass, 1 << 20)[2], pattern(9), "{what}: plaintext");
        assert_no_orphan_keys(&srv.data_dir, &what);
    }
}
