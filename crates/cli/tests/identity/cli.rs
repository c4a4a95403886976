//! The real `openstack` CLI, password auth against Keystone, finds rekey in
//! the catalog (block-storage / volumev3) and drives the clone-rekey flow.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::{keystone_admin_token, keystone_url, request, token, Server, Setup, REKEY};

fn venv() -> PathBuf {
    let v = std::env::var("REKEY_CLIENTS_VENV").unwrap_or_else(|_| {
        panic!("REKEY_CLIENTS_VENV is not set: run `scripts/clients.sh` and export REKEY_CLIENTS_VENV=<its output>")
    });
    let v = PathBuf::from(v);
    assert!(v.join("bin/openstack").exists(), "{}/bin/openstack missing: run scripts/clients.sh", v.display());
    v
}

/// Points the catalog's volume services at `url` (replacing earlier entries).
fn set_volume_catalog(keystone: &str, url: &str) {
    let admin = keystone_admin_token(keystone);
    let h = [("X-Auth-Token", admin.as_str())];
    let services = request("GET", &format!("{keystone}/services"), &h, None).unwrap().body;
    for s in services["services"].as_array().unwrap() {
        if matches!(s["type"].as_str(), Some("block-storage" | "volumev3")) {
            let a = request("DELETE", &format!("{keystone}/services/{}", s["id"].as_str().unwrap()), &h, None).unwrap();
            assert_eq!(a.status, 204, "{}", a.body);
        }
    }
    for kind in ["block-storage", "volumev3"] {
        let a = request("POST", &format!("{keystone}/services"), &h, Some(&json!({"service": {"type": kind, "name": "rekey"}}))).unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
        let sid = a.body["service"]["id"].as_str().unwrap().to_owned();
        for interface in ["public", "internal", "admin"] {
            let e = json!({"endpoint": {"service_id": sid, "interface": interface, "region_id": "RegionOne",
                                        "url": format!("{url}/v3/%(project_id)s")}});
            let a = request("POST", &format!("{keystone}/endpoints"), &h, Some(&e)).unwrap();
            assert_eq!(a.status, 201, "{}", a.body);
        }
    }
}

fn openstack(keystone: &str, user: &str, project: &str, args: &[&str]) -> Output {
    let pw = format!("{user}-pw");
    Command::new(venv().join("bin/openstack"))
        .args(["--os-auth-url", keystone, "--os-identity-api-version", "3", "--os-username", user, "--os-password", &pw])
        .args(["--os-project-name", project, "--os-user-domain-id", "default", "--os-project-domain-id", "default"])
        .args(["--os-region-name", "RegionOne", "--os-volume-api-version", "3.64"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run openstack")
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "openstack failed: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("openstack -f json")
}

fn rekey_out(args: &[&str]) -> Vec<u8> {
    let o = Command::new(REKEY).args(args).output().unwrap();
    assert!(o.status.success(), "rekey {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn opens(path: &str, pass: &[u8]) -> bool {
    use std::io::Write;
    let mut c = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file=-", path])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cryptsetup");
    c.stdin.take().unwrap().write_all(pass).unwrap();
    match c.wait().unwrap().code() {
        Some(0) => true,
        Some(2) => false,
        other => panic!("cryptsetup exit {other:?}"),
    }
}

#[test]
fn openstack_cli_with_password_auth_finds_rekey_in_the_catalog_and_clones_with_a_new_key() {
    let ks = keystone_url();
    let srv = Server::start(Setup::new(&ks));
    set_volume_catalog(&ks, &srv.base());
    let (admin, pa) = token("admin-a", "rekey-a");
    let ty = srv.encrypted_type(&admin, &pa, "luks-cli");

    let src = json_out(&openstack(&ks, "member-a", "rekey-a", &["volume", "create", "--size", "1", "--type", &ty, "src", "-f", "json"]));
    let src_id = src["id"].as_str().unwrap().to_owned();
    let (member, _) = token("member-a", "rekey-a");
    let src = srv.wait_settled(&member, &pa, &src_id);
    assert_eq!(src["status"], "available", "{src}");
    let clone = json_out(&openstack(&ks, "member-a", "rekey-a", &["volume", "create", "--source", "src", "clone", "-f", "json"]));
    let clone = srv.wait_settled(&member, &pa, clone["id"].as_str().unwrap());
    assert_eq!(clone["status"], "available", "{clone}");
    let shown = json_out(&openstack(&ks, "member-a", "rekey-a", &["volume", "show", "clone", "-f", "json"]));
    assert_eq!(shown["status"], "available");
    assert_eq!(shown["source_volid"], src_id.as_str());

    // The clone's own key opens it; the source's does not.
    let (k_src, k_clone) = (src["encryption_key_id"].as_str().unwrap(), clone["encryption_key_id"].as_str().unwrap());
    assert_ne!(k_src, k_clone);
    let dd = srv.data_dir.to_str().unwrap();
    let pass = |k: &str| rekey_out(&["key", "show", k, "--passphrase", "--data-dir", dd]);
    let path = String::from_utf8(rekey_out(&["volume", "path", clone["id"].as_str().unwrap(), "--data-dir", dd])).unwrap();
    assert!(opens(path.trim(), &pass(k_clone)), "the clone does not open with its own key");
    assert!(!opens(path.trim(), &pass(k_src)), "the clone still opens with the source's key");

    // The listing through the CLI shows the project's two volumes.
    let list = json_out(&openstack(&ks, "member-a", "rekey-a", &["volume", "list", "-f", "json"]));
    let names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|v| v["Name"].as_str()).collect();
    assert!(names.contains(&"src") && names.contains(&"clone"), "{names:?}");
    srv.stop_and_check_log(&[&admin, &member]);
}
