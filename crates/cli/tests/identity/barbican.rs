//! Barbican behind Keystone (`BARBICAN_KEYSTONE_URL=... scripts/barbican.sh
//! start`, URL in `REKEY_BARBICAN_KEYSTONE_URL`): rekey signs in as its own
//! service user scoped to the volume's project, so the secret is that
//! project's, and a clone's background rekey still gets its keys after the
//! caller's token is gone.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::{keystone_url, request, revoke, token, Server, Setup, REKEY};

fn barbican_url() -> String {
    std::env::var("REKEY_BARBICAN_KEYSTONE_URL").unwrap_or_else(|_| {
        panic!(
            "REKEY_BARBICAN_KEYSTONE_URL is not set: run `BARBICAN_KEYSTONE_URL=$REKEY_KEYSTONE_URL BARBICAN_PORT=9312 \
             REKEY_TEST_DIR=... scripts/barbican.sh start` and export its URL"
        )
    })
}

/// The secret's payload as `token` reads it: (status, bytes).
fn payload(barbican: &str, token: &str, key_id: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-m", "30", "-w", "\n%{http_code}", "-H", "Accept: application/octet-stream", "-H"])
        .arg(format!("X-Auth-Token: {token}"))
        .arg(format!("{barbican}/v1/secrets/{key_id}/payload"))
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|b| *b == b'\n').expect("curl status line");
    let status = String::from_utf8_lossy(&body[nl + 1..]).trim().parse().unwrap();
    body.truncate(nl);
    (status, body)
}

fn hex(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect()
}

fn opens(path: &str, pass: &[u8]) -> bool {
    use std::io::Write;
    let mut c = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file=-", path])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
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
fn volume_secrets_live_in_the_volume_project_and_a_clone_outlives_the_callers_token() {
    let ks = keystone_url();
    let bb = barbican_url();
    // The clone job pauses after copying data, before it makes its keys, so
    // the caller's token can be revoked first.
    let srv = Server::start(Setup {
        extra_toml: format!("[key_manager]\nbackend = \"barbican\"\nurl = \"{bb}\"\n"),
        env: vec![("REKEY_STALL_AT", "clone_data:3000".into())],
        ..Setup::new(&ks)
    });
    let (admin, pa) = token("admin-a", "rekey-a");
    let (member, _) = token("member-a", "rekey-a");
    let (other, _) = token("member-b", "rekey-b");
    let ty = srv.encrypted_type(&admin, &pa, "luks-barbican");
    let src = srv.volume(&member, &pa, json!({"volume": {"size": 1, "name": "src", "volume_type": ty}}));
    let k_src = src["encryption_key_id"].as_str().unwrap().to_owned();

    // The project's own member reads the secret; another project's is refused.
    let (st, key) = payload(&bb, &member, &k_src);
    assert_eq!(st, 200, "member of the volume's project cannot read its secret");
    assert_eq!(key.len(), 32);
    let (st, _) = payload(&bb, &other, &k_src);
    assert!(st == 403 || st == 404, "another project's token read the secret: HTTP {st}");
    // Nor through rekey.
    let a = srv.call(&other, "GET", &format!("/v3/{}/volumes/{}/encryption", token("member-b", "rekey-b").1, src["id"].as_str().unwrap()), None);
    assert_eq!(a.status, 404, "{}", a.body);

    // Clone with a token that dies at once.
    let (short, _) = token("member-a", "rekey-a");
    let a = srv.call(&short, "POST", &format!("/v3/{pa}/volumes"), Some(&json!({"volume": {"name": "clone", "source_volid": src["id"]}})));
    assert_eq!(a.status, 202, "{}", a.body);
    let clone_id = a.body["volume"]["id"].as_str().unwrap().to_owned();
    revoke(&ks, &short);
    let (later, _) = token("member-a", "rekey-a");
    let clone = srv.wait_settled(&later, &pa, &clone_id);
    assert_eq!(clone["status"], "available", "{clone}");
    let k_clone = clone["encryption_key_id"].as_str().unwrap().to_owned();
    assert_ne!(k_clone, k_src);

    // The clone's key is in project A, opens the clone, and the source's does not.
    let (st, clone_key) = payload(&bb, &later, &k_clone);
    assert_eq!(st, 200);
    assert_eq!(payload(&bb, &other, &k_clone).0 / 100, 4);
    let out = Command::new(REKEY).args(["volume", "path", &clone_id, "--data-dir", srv.data_dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = String::from_utf8(out.stdout).unwrap();
    assert!(opens(path.trim(), &hex(&clone_key)), "the clone does not open with its Barbican key");
    assert!(!opens(path.trim(), &hex(&key)), "the clone opens with the source's key");
    // Barbican lists both among project A's secrets, and neither among B's.
    let refs = |t: &str| -> String {
        let listed = request("GET", &format!("{bb}/v1/secrets?limit=100"), &[("X-Auth-Token", t)], None).unwrap();
        assert_eq!(listed.status, 200, "{}", listed.body);
        listed.body["secrets"].to_string()
    };
    let (in_a, in_b) = (refs(&later), refs(&other));
    for k in [&k_src, &k_clone] {
        assert!(in_a.contains(k.as_str()) && !in_b.contains(k.as_str()), "{k}: A {in_a} B {in_b}");
    }
    srv.stop_and_check_log(&[&admin, &member, &other, &short, &later]);
}
