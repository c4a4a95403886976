//! `ca_file` against a real OpenBao serving TLS (`bao server -dev -dev-tls`,
//! its own generated CA), started here on a free loopback port and killed
//! when the test ends. Needs REKEY_BAO (from `scripts/openbao.sh start`).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rekey_keys::{ErrorKind, KeyBytes, KeyManagerConfig, VaultConfig};
use zeroize::Zeroizing;

struct TlsBao {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for TlsBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free now whose successor (the dev server's cluster listener) is
/// free too.
fn free_port_pair() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn start() -> TlsBao {
    let bao = common::vault_env("REKEY_BAO");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let child = Command::new(bao)
        .args(["server", "-dev", "-dev-tls", "-dev-root-token-id=tls-root", "-dev-no-store-token"])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bao -dev-tls");
    let server = TlsBao { child, port, dir };
    let start = Instant::now();
    while !server.dir.path().join("vault-ca.pem").exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "bao -dev-tls did not come up on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

#[tokio::test]
async fn ca_file_trusts_vaults_own_ca_and_nothing_else_does() {
    let server = start();
    let url = format!("https://127.0.0.1:{}", server.port);
    let config = VaultConfig::new(&url)
        .with_token(Zeroizing::new("tls-root".into()))
        .with_retries(20, Duration::from_millis(100));
    let mut trusted = config.clone();
    trusted.ca_file = Some(server.dir.path().join("vault-ca.pem"));
    let km = rekey_keys::open_key_manager(&KeyManagerConfig::Vault(trusted)).await.unwrap();
    let p = common::project("tls");
    let key = KeyBytes::random(32).unwrap();
    let id = km.store_key(&p, &key, "aes", 256).await.unwrap();
    assert_eq!(km.get_key(&p, &id).await.unwrap(), key);
    km.delete_key(&p, &id).await.unwrap();

    // The system's roots do not know the dev CA: refused, and said so.
    let untrusted = config.with_retries(0, Duration::from_millis(1));
    let km = rekey_keys::open_key_manager(&KeyManagerConfig::Vault(untrusted)).await.unwrap();
    let e = km.list(&p).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}
