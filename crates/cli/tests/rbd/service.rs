//! `rekey serve --backend rbd`: an encrypted volume cloned through the API is
//! a copy-on-write RBD child that opens with its own key and not its
//! source's, while the parent's header stays untouched.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

fn header(conf: &Path, image: &str) -> Vec<u8> {
    let io = rekey_storage::open_rbd_spec(&format!("rbd:rbd/{image}"), Some(conf), None).unwrap();
    read(io.as_ref(), 0, 16 << 20)
}

#[test]
fn api_clone_on_rbd_is_cow_and_opens_only_with_its_own_key() {
    let conf = ceph_conf();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Serve::start(&conf, &data);

    let (st, t) = srv.api("POST", "/v3/types", Some(json!({"volume_type": {"name": "L2"}})));
    assert_eq!(st, 200, "{t}");
    let type_id = t["volume_type"]["id"].as_str().unwrap().to_owned();
    let enc = json!({"encryption": {"provider": "luks2", "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}});
    assert_eq!(srv.api("POST", &format!("/v3/types/{type_id}/encryption"), Some(enc)).0, 200);

    let (st, v) = srv.api("POST", "/v3/volumes", Some(json!({"volume": {"size": 1, "volume_type": "L2", "name": "src"}})));
    assert_eq!(st, 202, "{v}");
    let src_id = v["volume"]["id"].as_str().unwrap().to_owned();
    let src = srv.settled(&src_id);
    assert_eq!(src["status"], "available", "{src}");
    let src_img = format!("volume-{src_id}");
    let before = header(&conf, &src_img);

    let (st, v) = srv.api("POST", "/v3/volumes", Some(json!({"volume": {"size": 1, "source_volid": src_id, "name": "clone"}})));
    assert_eq!(st, 202, "{v}");
    let clone_id = v["volume"]["id"].as_str().unwrap().to_owned();
    let clone = srv.settled(&clone_id);
    assert_eq!(clone["status"], "available", "{clone}");
    let clone_img = format!("volume-{clone_id}");

    let info = rbd(&conf, &["info", &format!("rbd/{clone_img}")]).ok();
    assert!(info.stdout.contains("parent:"), "the clone must be a copy-on-write child: {}", info.stdout);
    assert!(header(&conf, &src_img) == before, "rekeying the clone must not touch the parent's header");

    let (src_key, clone_key) = (src["encryption_key_id"].as_str().unwrap(), clone["encryption_key_id"].as_str().unwrap());
    assert_ne!(src_key, clone_key);
    let (sk, ck) = (dir.path().join("src.key"), dir.path().join("clone.key"));
    passphrase_file(&data, src_key, &sk);
    passphrase_file(&data, clone_key, &ck);
    let (se, ce) = (dir.path().join("src.img"), dir.path().join("clone.img"));
    rbd(&conf, &["export", &format!("rbd/{src_img}"), s(&se)]).ok();
    rbd(&conf, &["export", &format!("rbd/{clone_img}"), s(&ce)]).ok();
    assert!(cryptsetup_opens(&ce, &ck), "the clone must open with its own key");
    assert!(!cryptsetup_opens(&ce, &sk), "the clone must NOT open with the source's key");
    assert!(cryptsetup_opens(&se, &sk), "the parent must still open with its own key");

    for id in [&clone_id, &src_id] {
        assert_eq!(srv.api("DELETE", &format!("/v3/volumes/{id}"), None).0, 202);
        let t0 = Instant::now();
        while srv.api("GET", &format!("/v3/volumes/{id}"), None).0 != 404 {
            assert!(t0.elapsed() < Duration::from_secs(60), "volume {id} not deleted");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(rbd(&conf, &["info", &format!("rbd/{src_img}")]).code != 0, "the image must be gone");
}

#[test]
fn serve_rejects_rbd_flags_without_a_pool_or_with_the_file_backend() {
    for args in [vec!["serve", "--backend", "rbd"], vec!["serve", "--backend", "file", "--rbd-pool", "rbd"]] {
        let out = rekey_cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("rbd"), "{err}");
    }
}
