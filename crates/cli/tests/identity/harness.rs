//! A real Keystone (from `scripts/keystone.sh`, URL in `REKEY_KEYSTONE_URL`)
//! and `rekey serve --auth keystone` in front of it.
//!
//! The users `scripts/keystone.sh` makes: admin-a, member-a, reader-a in
//! project rekey-a; member-b in rekey-b; the service user rekey; every
//! password is the user's name followed by `-pw`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::api_harness::{dechunk, free_port};

pub const REKEY: &str = env!("CARGO_BIN_EXE_rekey");

/// The shared Keystone's v3 URL; panics with what to do when unset.
pub fn keystone_url() -> String {
    std::env::var("REKEY_KEYSTONE_URL").unwrap_or_else(|_| {
        panic!("REKEY_KEYSTONE_URL is not set: run `scripts/keystone.sh start` and export REKEY_KEYSTONE_URL=<its output>")
    })
}

/// An HTTP answer: status, headers (lower-case names), JSON body or Null.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// host:port and path of an http URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    match rest.split_once('/') {
        Some((h, p)) => (h.to_owned(), format!("/{p}")),
        None => (rest.to_owned(), "/".into()),
    }
}

/// One HTTP/1.1 request (Connection: close) to `url`.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> std::io::Result<Answer> {
    let (host, path) = split_url(url);
    let mut s = TcpStream::connect(&host)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let payload = if chunked { dechunk(payload) } else { payload.to_owned() };
    let body = if payload.trim().is_empty() { Value::Null } else { serde_json::from_str(&payload).unwrap_or(Value::String(payload)) };
    Ok(Answer { status, headers, body })
}

/// A Keystone user token (password method, scoped to `project`) and the
/// token's project id.
pub fn token_at(keystone: &str, user: &str, project: &str) -> (String, String) {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": format!("{user}-pw")}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
    let a = request("POST", &format!("{keystone}/auth/tokens"), &[], Some(&body)).expect("keystone reachable");
    assert_eq!(a.status, 201, "token for {user}: {}", a.body);
    let tok = a.header("x-subject-token").expect("X-Subject-Token").to_owned();
    (tok, a.body["token"]["project"]["id"].as_str().unwrap().to_owned())
}

pub fn token(user: &str, project: &str) -> (String, String) {
    token_at(&keystone_url(), user, project)
}

/// The bootstrap admin's token (project admin), for Keystone admin calls.
pub fn keystone_admin_token(keystone: &str) -> String {
    token_at(keystone, "admin", "admin").0
}

/// Revokes `token` (`DELETE /v3/auth/tokens`).
pub fn revoke(keystone: &str, token: &str) {
    let admin = keystone_admin_token(keystone);
    let a = request("DELETE", &format!("{keystone}/auth/tokens"), &[("X-Auth-Token", &admin), ("X-Subject-Token", token)], None)
        .unwrap();
    assert_eq!(a.status, 204, "revoke: {}", a.body);
}

/// Settings of one `rekey serve --auth keystone`.
pub struct Setup<'a> {
    pub keystone: &'a str,
    pub token_cache_seconds: u64,
    pub timeout_seconds: u64,
    /// Extra TOML appended to the configuration (e.g. a key_manager section).
    pub extra_toml: String,
    pub env: Vec<(&'static str, String)>,
}

impl<'a> Setup<'a> {
    pub fn new(keystone: &'a str) -> Self {
        Setup { keystone, token_cache_seconds: 300, timeout_seconds: 2, extra_toml: String::new(), env: Vec::new() }
    }
}

/// A running `rekey serve --auth keystone`, its log and data directory.
pub struct Server {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(setup: Setup) -> Server {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let data_dir = dir.path().join("data");
        let log = dir.path().join("rekey.log");
        let port = free_port();
        let config = dir.path().join("rekey.toml");
        let toml = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{}\n[auth]\nstrategy = \"keystone\"\nauth_url = \"{}\"\n\
             username = \"rekey\"\npassword = \"rekey-pw\"\nproject_name = \"service\"\nuser_domain_name = \"Default\"\n\
             project_domain_name = \"Default\"\ntoken_cache_seconds = {}\ntimeout_seconds = {}\n",
            data_dir.display(),
            setup.extra_toml,
            setup.keystone,
            setup.token_cache_seconds,
            setup.timeout_seconds
        );
        std::fs::write(&config, toml).unwrap();
        let mut cmd = Command::new(REKEY);
        cmd.args(["serve", "--auth", "keystone", "--config"])
            .arg(&config)
            // debug: every line that could carry a token is written, so the grep means something.
            .env("REKEY_LOG", "debug,sqlx=warn,hyper=info,reqwest=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start rekey serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        assert!(line.contains("listening on"), "rekey serve did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        Server { child, port, data_dir, log, _dir: dir }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A request with `token` (none if empty) at microversion 3.64.
    pub fn call(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let mut h = vec![("OpenStack-API-Version", "volume 3.64")];
        if !token.is_empty() {
            h.push(("X-Auth-Token", token));
        }
        request(method, &format!("{}{path}", self.base()), &h, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Polls a volume until it leaves the transitional states.
    pub fn wait_settled(&self, token: &str, project: &str, id: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let a = self.call(token, "GET", &format!("/v3/{project}/volumes/{id}"), None);
            assert_eq!(a.status, 200, "{}", a.body);
            let st = a.body["volume"]["status"].as_str().unwrap_or("").to_owned();
            if !matches!(st.as_str(), "creating" | "deleting" | "maintenance") {
                return a.body["volume"].clone();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "volume {id} stuck in {st}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// An encrypted (LUKS1) volume type made by `admin_token`; its name.
    pub fn encrypted_type(&self, admin_token: &str, project: &str, name: &str) -> String {
        let a = self.call(admin_token, "POST", &format!("/v3/{project}/types"), Some(&json!({"volume_type": {"name": name}})));
        assert_eq!(a.status, 200, "{}", a.body);
        let id = a.body["volume_type"]["id"].as_str().unwrap().to_owned();
        let enc = json!({"encryption": {"provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}});
        let a = self.call(admin_token, "POST", &format!("/v3/{project}/types/{id}/encryption"), Some(&enc));
        assert_eq!(a.status, 200, "{}", a.body);
        name.to_owned()
    }

    /// Creates a volume and waits until it is available; its record.
    pub fn volume(&self, token: &str, project: &str, body: Value) -> Value {
        let a = self.call(token, "POST", &format!("/v3/{project}/volumes"), Some(&body));
        assert_eq!(a.status, 202, "{}", a.body);
        let v = self.wait_settled(token, project, a.body["volume"]["id"].as_str().unwrap());
        assert_eq!(v["status"], "available", "{v}");
        v
    }

    /// Stops the server and asserts that none of `tokens` is in its log.
    pub fn stop_and_check_log(mut self, tokens: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        assert_no_tokens(&self.log, tokens);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No line of `log` holds any of `tokens` (nor their first 20 characters).
pub fn assert_no_tokens(log: &Path, tokens: &[&str]) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.lines().count() > 3, "the log {} is too short to mean anything", log.display());
    for t in tokens {
        assert!(t.len() > 20, "not a real token: {t}");
        for (n, line) in text.lines().enumerate() {
            assert!(!line.contains(&t[..20]), "{}:{}: a token in the log: {line}", log.display(), n + 1);
        }
    }
}

/// Where tests put their files: `REKEY_TEST_DIR`, else the temp dir.
pub fn scratch() -> PathBuf {
    let d = std::env::var("REKEY_TEST_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    std::fs::create_dir_all(&d).unwrap();
    d
}
