//! Attachments on the RBD backend: a front-end volume gets Cinder's `rbd`
//! connection info, which qemu's own librbd driver opens on the real
//! cluster with qemu's LUKS driver on top (the passphrase from the key
//! manager, as Nova does); a back-end volume gets an NBD export of its
//! plaintext, because only rekey holds its key.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

const CONNECTOR: &str = r#"{"host": "compute-1", "ip": "127.0.0.1", "initiator": "iqn.1993-08.org.debian:01:c1", "platform": "x86_64", "os_type": "linux", "multipath": false}"#;

fn qemu_io(args: &[&str]) -> String {
    require_tool("qemu-io", "qemu-utils qemu-block-extra (10, from bookworm-backports)");
    let out = Command::new("qemu-io").args(args).output().expect("run qemu-io");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "qemu-io {args:?}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("Pattern verification failed") && !text.contains("failed:"), "qemu-io {args:?}:\n{text}");
    text
}

fn typed(srv: &Serve, name: &str, provider: &str, location: &str) {
    let t = srv.post(&format!("/v3/{PROJECT}/types"), json!({"volume_type": {"name": name}}), 200);
    let id = t["volume_type"]["id"].as_str().unwrap().to_owned();
    let enc = json!({"encryption": {"provider": provider, "cipher": "aes-xts-plain64", "key_size": 256, "control_location": location}});
    srv.post(&format!("/v3/{PROJECT}/types/{id}/encryption"), enc, 200);
}

fn attach(srv: &Serve, vol: &str) -> Value {
    let connector: Value = serde_json::from_str(CONNECTOR).unwrap();
    let body = json!({"attachment": {"volume_uuid": vol, "instance_uuid": "server-1", "connector": connector}});
    srv.post(&format!("/v3/{PROJECT}/attachments"), body, 200)["attachment"].clone()
}

fn detach(srv: &Serve, attachment: &Value) {
    let (st, v) = srv.api("DELETE", &format!("/v3/{PROJECT}/attachments/{}", attachment["id"].as_str().unwrap()), None);
    assert_eq!(st, 200, "{v}");
}

#[test]
fn rbd_connection_info_opens_with_qemus_librbd_and_luks_drivers() {
    let conf = ceph_conf();
    let dir = tempfile::tempdir().unwrap();
    let nbd = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let srv = Serve::start_with(&conf, &dir.path().join("data"), &["--nbd-listen", &nbd], &[], None);
    typed(&srv, "FE1", "luks", "front-end");
    let v = srv.create_volume(json!({"size": 1, "volume_type": "FE1"}));
    let id = v["id"].as_str().unwrap().to_owned();

    let a = attach(&srv, &id);
    let ci = &a["connection_info"];
    assert_eq!(ci["driver_volume_type"], "rbd", "{a}");
    let data = &ci["data"];
    assert_eq!(data["name"], format!("{POOL}/volume-{id}"));
    assert_eq!((data["hosts"].clone(), data["ports"].clone()), (json!(["127.0.0.1"]), json!(["6789"])), "{data}");
    assert_eq!((data["auth_enabled"].clone(), data["auth_username"].clone()), (json!(true), json!("admin")));
    assert_eq!((data["cluster_name"].as_str(), data["secret_type"].as_str()), (Some("ceph"), Some("ceph")));
    assert_eq!((data["encrypted"].clone(), data["volume_id"].as_str()), (json!(true), Some(id.as_str())));

    let key = srv.settled(&id)["encryption_key_id"].as_str().unwrap().to_owned();
    let pass = dir.path().join("pass");
    srv.passphrase_file(&key, &pass);
    let (pool, image) = data["name"].as_str().unwrap().split_once('/').unwrap();
    let opts = format!(
        "driver=luks,key-secret=s0,file.driver=rbd,file.pool={pool},file.image={image},file.conf={},file.user={}",
        conf.display(),
        data["auth_username"].as_str().unwrap()
    );
    let secret = format!("secret,id=s0,file={}", pass.display());
    qemu_io(&["--object", &secret, "--image-opts", &opts, "-c", "write -P 0x6b 0 1M", "-c", "write -P 0xb6 900M 1M"]);
    qemu_io(&["--object", &secret, "--image-opts", &opts, "-c", "read -P 0x6b 0 1M", "-c", "read -P 0xb6 900M 1M"]);
    let out = srv.post(&format!("/v3/{PROJECT}/attachments/{}/action", a["id"].as_str().unwrap()), json!({"os-complete": {}}), 204);
    assert!(out.is_null());
    assert_eq!(srv.settled(&id)["status"], "in-use");
    detach(&srv, &a);
    assert_eq!(srv.settled(&id)["status"], "available");

    // Back-end on RBD: an NBD export of the plaintext.
    typed(&srv, "BE", "luks2", "back-end");
    let b = srv.create_volume(json!({"size": 1, "volume_type": "BE"}))["id"].as_str().unwrap().to_owned();
    let a = attach(&srv, &b);
    assert_eq!(a["connection_info"]["driver_volume_type"], "nbd", "{a}");
    assert_eq!(a["connection_info"]["data"]["encrypted"], false);
    let uri = a["connection_info"]["data"]["uri"].as_str().unwrap().to_owned();
    qemu_io(&["-f", "raw", &uri, "-c", "write -P 0x7e 2M 1M", "-c", "read -P 0x7e 2M 1M"]);
    detach(&srv, &a);
    let gone = Command::new("qemu-img").args(["info", "-f", "raw", &uri]).output().unwrap();
    assert!(!gone.status.success(), "the export is gone after detach");

    // And a front-end volume asked for over NBD: the RBD image's raw bytes.
    let a = {
        let mut c: Value = serde_json::from_str(CONNECTOR).unwrap();
        c["rekey_transport"] = json!("nbd");
        srv.post(&format!("/v3/{PROJECT}/attachments"), json!({"attachment": {"volume_uuid": id, "connector": c}}), 200)["attachment"].clone()
    };
    let d = &a["connection_info"]["data"];
    assert_eq!(a["connection_info"]["driver_volume_type"], "nbd", "{a}");
    let opts = format!(
        "driver=luks,key-secret=s0,file.driver=nbd,file.server.type=inet,file.server.host={},file.server.port={},file.export={}",
        d["host"].as_str().unwrap(),
        d["port"],
        d["export_name"].as_str().unwrap()
    );
    qemu_io(&["--object", &secret, "--image-opts", &opts, "-c", "read -P 0x6b 0 1M"]);
    detach(&srv, &a);
}
