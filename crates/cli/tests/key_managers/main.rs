//! Key managers end to end. `rekey serve --key-manager vault` against a real
//! OpenBao, driven by the
//! real `openstack` CLI and checked with cryptsetup and Vault's own HTTP
//! API. Needs REKEY_CLIENTS_VENV, REKEY_VAULT_URL and REKEY_VAULT_TOKEN
//! (`eval "$(scripts/openbao.sh start)"`), REKEY_BAO for the outage test
//! and REKEY_CASTELLAN_VENV for the castellan one.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;

mod castellan;
mod kek;
mod migrate;
mod e2e;
mod outage;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use harness::*;

/// An environment variable these tests need; fails loudly when unset.
pub fn need(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("{name} is not set: start OpenBao with `eval \"$(scripts/openbao.sh start)\"` (and see scripts/test.sh)"),
    }
}

/// A Vault reached with plain HTTP on loopback.
#[derive(Clone)]
pub struct Bao {
    pub url: String,
    pub port: u16,
    pub token: String,
}

impl Bao {
    pub fn from_env() -> Bao {
        Bao::at(&need("REKEY_VAULT_URL"), &need("REKEY_VAULT_TOKEN"))
    }

    pub fn at(url: &str, token: &str) -> Bao {
        let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("REKEY_VAULT_URL like http://127.0.0.1:PORT");
        Bao { url: url.to_owned(), port, token: token.to_owned() }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        http(self.port, method, path, &[("X-Vault-Token", &self.token)], body.as_deref().map(str::as_bytes)).unwrap_or_else(|e| panic!("vault {method} {path}: {e}"))
    }

    /// The `value` of a key record in castellan's layout: the hex os-brick
    /// passphrase of the volume.
    pub fn value(&self, kv_path: &str, key_id: &str) -> String {
        let (st, v) = self.call("GET", &format!("/v1/secret/data/{kv_path}/{}", key_id.replace('-', "")), None);
        assert_eq!(st, 200, "key {key_id} in Vault: {v}");
        v["data"]["data"]["value"].as_str().expect("value").to_owned()
    }

    /// HTTP status of the key's metadata (404: no version left at all).
    pub fn metadata_status(&self, kv_path: &str, key_id: &str) -> u16 {
        self.call("GET", &format!("/v1/secret/metadata/{kv_path}/{}", key_id.replace('-', "")), None).0
    }
}

pub fn kv_path(tag: &str) -> String {
    format!("rekey-e2e-{tag}-{}", std::process::id())
}

/// `rekey serve` on `data` with its keys in Vault under `kv_path`.
pub fn serve_on_vault(data: &Path, bao: &Bao, kv_path: &str) -> Server {
    Server::start_with(
        data,
        &["--key-manager", "vault", "--vault-url", &bao.url, "--vault-kv-path", kv_path],
        &[("REKEY_VAULT_TOKEN", &bao.token)],
    )
}

pub fn json_ok(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "client failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

/// The LUKS type every test here uses.
pub fn make_type(srv: &Server) {
    let out = srv.openstack(&[
        "volume", "type", "create", "--encryption-provider", "luks2", "--encryption-cipher", "aes-xts-plain64",
        "--encryption-key-size", "256", "--encryption-control-location", "front-end", "LUKS",
    ]);
    assert!(out.status.success(), "type create: {}", String::from_utf8_lossy(&out.stderr));
}

/// Polls until GET of the volume is 404.
pub fn wait_gone(srv: &Server, id: &str) {
    let start = Instant::now();
    while srv.http("GET", &format!("/v3/volumes/{id}"), None).0 != 404 {
        assert!(start.elapsed() < Duration::from_secs(60), "volume {id} was not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
}
