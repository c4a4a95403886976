//! `rekey:mode=volume-key`: the clone is re-encrypted under a fresh volume
//! key, so it shares nothing with its source — not even the volume key.

use crate::flows::{check_rekeyed, encrypted_flow};
use crate::harness::*;

#[test]
fn volume_key_mode_clone_shares_no_volume_key_with_its_source() {
    let (f, src_id, clone_id) = encrypted_flow("luks2", Some("volume-key"), false);
    check_rekeyed(&f, &src_id, &clone_id, "2");
    let (src, clone) = (f.srv.volume(&src_id), f.srv.volume(&clone_id));
    let src_vk = volume_key_hex(&volume_path(f.data(), &src_id), &passphrase(f.data(), src["encryption_key_id"].as_str().unwrap()));
    let clone_vk =
        volume_key_hex(&volume_path(f.data(), &clone_id), &passphrase(f.data(), clone["encryption_key_id"].as_str().unwrap()));
    assert_eq!(src_vk.len(), 64);
    assert_ne!(src_vk, clone_vk, "volume-key mode must give the clone its own volume key");
}

#[test]
fn volume_key_mode_on_luks1_is_refused_with_a_400() {
    venv();
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[]);
    srv.create_type("V1", Some("luks"), &[("rekey:mode", "volume-key")]);
    let src = srv.create_volume(serde_json::json!({"volume": {"size": 1, "volume_type": "V1"}}));
    let src_id = src["id"].as_str().unwrap();
    assert_eq!(srv.wait_settled(src_id)["status"], "available");
    let before = srv.volume_count(PROJECT);
    let (st, body) = srv.http(
        "POST",
        "/v3/volumes",
        Some(serde_json::json!({"volume": {"size": 1, "source_volid": src_id}}).to_string().as_bytes()),
    );
    assert_eq!(st, 400, "{body}");
    assert!(body["badRequest"]["message"].as_str().unwrap().contains("luks2"), "{body}");
    assert_eq!(srv.volume_count(PROJECT), before, "nothing half-created");
}
