//! Starts the real `rekey serve` on a free loopback port with a temp data
//! directory, and drives it with the real `openstack`/`cinder` CLIs from the
//! venv `scripts/clients.sh` makes (path in `REKEY_CLIENTS_VENV`), a tiny raw
//! HTTP client (for bodies the CLIs would never send), and cryptsetup.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rekey_luks::{BlockIo, FileIo, Volume};
use serde_json::Value;

pub const REKEY: &str = env!("CARGO_BIN_EXE_rekey");
/// The identity `openstack --os-auth-type none` sends (token `notused`).
pub const PROJECT: &str = "notused";

/// The venv with `openstack` and `cinder`; panics with what to do if missing.
pub fn venv() -> PathBuf {
    let v = std::env::var("REKEY_CLIENTS_VENV").unwrap_or_else(|_| {
        panic!("REKEY_CLIENTS_VENV is not set: run `scripts/clients.sh` and export REKEY_CLIENTS_VENV=<its output>")
    });
    let v = PathBuf::from(v);
    for tool in ["openstack", "cinder"] {
        assert!(v.join("bin").join(tool).exists(), "{}/bin/{tool} missing: run scripts/clients.sh", v.display());
    }
    v
}

/// cryptsetup must be there: these tests check our headers with it.
pub fn require_cryptsetup() {
    let ok = Command::new("cryptsetup").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "cryptsetup not found: apt-get install cryptsetup-bin");
}

/// The database the service under test uses: SQLite in its data directory
/// (the default), or, with `REKEY_TEST_DATABASE=postgres`, a fresh
/// PostgreSQL database per data directory on the server `REKEY_TEST_PG_URL`
/// names (from `scripts/postgres.sh start`), made on first use.
pub fn postgres_url(data_dir: &Path) -> Option<String> {
    match std::env::var("REKEY_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => return None,
        Ok("postgres") => {}
        Ok(other) => panic!("REKEY_TEST_DATABASE must be sqlite or postgres, not {other:?}"),
    }
    let base = std::env::var("REKEY_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("REKEY_TEST_DATABASE=postgres needs REKEY_TEST_PG_URL: run `scripts/postgres.sh start` and export what it prints")
    });
    // One database per data directory, named after its path, so a restarted
    // server (same directory) finds its records again.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    let name = format!("rekey_{:016x}", h.finish());
    let marker = data_dir.with_extension("pgdb");
    if !marker.exists() {
        let rest = base.strip_prefix("postgres://").expect("REKEY_TEST_PG_URL is postgres://USER@HOST:PORT");
        let (user, hostport) = rest.split_once('@').expect("REKEY_TEST_PG_URL is postgres://USER@HOST:PORT");
        let (host, port) = hostport.trim_end_matches('/').split_once(':').expect("REKEY_TEST_PG_URL has a port");
        let out = Command::new("createdb").args(["-h", host, "-p", port, "-U", user, &name]).output().expect("run createdb");
        assert!(out.status.success(), "createdb {name}: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(&marker, &name).unwrap();
    }
    Some(format!("{}/{name}", base.trim_end_matches('/')))
}

/// Arguments that point a `rekey` admin command at the database of the
/// service on `data_dir` (none for SQLite, which lives in the directory).
/// One value the service database answers to `query` (sqlite3 on the data
/// directory's database, or psql on the test's PostgreSQL one): for what
/// the API does not show, such as a snapshot's key id.
pub fn sql_value(data_dir: &Path, query: &str) -> String {
    let out = match postgres_url(data_dir) {
        Some(url) => Command::new("psql").args([url.as_str(), "-AtX", "-c", query]).output().expect("run psql"),
        None => Command::new("sqlite3").arg(data_dir.join("rekey.sqlite")).arg(query).output().expect("run sqlite3 (apt-get install sqlite3)"),
    };
    assert!(out.status.success(), "{query}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn db_args(data_dir: &Path) -> Vec<String> {
    let Some(url) = postgres_url(data_dir) else { return Vec::new() };
    let conf = data_dir.with_extension("db.toml");
    if !conf.exists() {
        std::fs::write(&conf, format!("database_url = {url:?}\n")).unwrap();
    }
    vec!["--config".into(), conf.to_str().unwrap().to_owned()]
}

/// A port nothing listens on now (for a server about to start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `rekey serve`.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts the service on `data_dir` with extra environment; waits until it listens.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with(data_dir, &[], env)
    }

    /// [`Server::start`] with extra `rekey serve` flags.
    pub fn start_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = postgres_url(data_dir).map(|u| vec!["--database-url".to_owned(), u]).unwrap_or_default();
        all.extend(args.iter().map(|a| a.to_string()));
        Server::start_logged(data_dir, &all, env, &data_dir.with_extension("log"))
    }

    /// Starts the service on `data_dir` with extra arguments and environment,
    /// its log appended to `log`; waits until it listens.
    pub fn start_logged(data_dir: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Server {
        let port = free_port();
        let mut cmd = Command::new(REKEY);
        cmd.args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("REKEY_LOG", "info,sqlx=warn")
            .env_remove("REKEY_CRASH_AT")
            .env_remove("REKEY_STALL_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap()));
        for (k, v) in env {
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
        assert!(line.contains("listening on http://127.0.0.1:"), "rekey serve did not start: {line:?} (log: {})", log.display());
        Server { child, port, data_dir: data_dir.to_owned() }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.port)
    }

    /// Waits for the process to die on its own (fault injection); true if it
    /// was killed by a signal (abort).
    pub fn wait_crash(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                return st.signal().is_some();
            }
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, like `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `openstack --os-auth-type none --os-endpoint URL ARGS`.
    pub fn openstack(&self, args: &[&str]) -> Output {
        let out = Command::new(venv().join("bin/openstack"))
            .args(["--os-auth-type", "none", "--os-endpoint", &self.endpoint(), "--os-volume-api-version", "3.64"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", std::env::temp_dir())
            .output()
            .expect("run openstack");
        out
    }

    /// Runs `cinder --os-auth-type noauth ... ARGS` as the openstack CLI's identity.
    pub fn cinder(&self, args: &[&str]) -> Output {
        Command::new(venv().join("bin/cinder"))
            .args(["--os-auth-type", "noauth", "--os-endpoint", &self.endpoint()])
            .args(["--os-user-id", PROJECT, "--os-project-id", PROJECT, "--os-volume-api-version", "3.64"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", std::env::temp_dir())
            .output()
            .expect("run cinder")
    }

    /// A raw HTTP request as project `project`; (status, JSON body or Null).
    pub fn http_as(&self, project: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        http(self.port, method, path, &[("X-Auth-Token", &format!("u:{project}")), ("OpenStack-API-Version", "volume 3.64")], body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn http(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        self.http_as(PROJECT, method, path, body)
    }

    /// A volume's record (3.64 view, with encryption_key_id).
    pub fn volume(&self, id: &str) -> Value {
        let (st, v) = self.http("GET", &format!("/v3/volumes/{id}"), None);
        assert_eq!(st, 200, "{v}");
        v["volume"].clone()
    }

    pub fn volume_by_name(&self, name: &str) -> Option<Value> {
        let (st, v) = self.http("GET", &format!("/v3/volumes/detail?name={name}"), None);
        assert_eq!(st, 200, "{v}");
        v["volumes"].as_array().and_then(|a| a.first().cloned())
    }

    pub fn volume_count(&self, project: &str) -> usize {
        let (st, v) = self.http_as(project, "GET", "/v3/volumes", None);
        assert_eq!(st, 200, "{v}");
        v["volumes"].as_array().map(Vec::len).unwrap_or(0)
    }

    /// Polls until the volume leaves `creating`/`deleting`/`maintenance`; returns its record.
    pub fn wait_settled(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.volume(id);
            let st = v["status"].as_str().unwrap_or("").to_owned();
            if !matches!(st.as_str(), "creating" | "deleting" | "maintenance") {
                return v;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "volume {id} stuck in {st}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Creates a volume type over HTTP; returns its id.
    pub fn create_type(&self, name: &str, provider: Option<&str>, specs: &[(&str, &str)]) -> String {
        let specs: serde_json::Map<String, Value> = specs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let body = serde_json::json!({"volume_type": {"name": name, "extra_specs": specs}});
        let (st, t) = self.http("POST", "/v3/types", Some(body.to_string().as_bytes()));
        assert_eq!(st, 200, "{t}");
        let id = t["volume_type"]["id"].as_str().unwrap().to_owned();
        if let Some(p) = provider {
            let body = serde_json::json!({"encryption": {"provider": p, "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}});
            let (st, e) = self.http("POST", &format!("/v3/types/{id}/encryption"), Some(body.to_string().as_bytes()));
            assert_eq!(st, 200, "{e}");
        }
        id
    }

    /// Creates a volume over HTTP and waits for it; returns its record.
    pub fn create_volume(&self, body: Value) -> Value {
        let (st, v) = self.http("POST", "/v3/volumes", Some(body.to_string().as_bytes()));
        assert_eq!(st, 202, "{v}");
        self.wait_settled(v["volume"]["id"].as_str().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Minimal HTTP/1.1 client (Connection: close), so tests can send any bytes.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or(b"");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))?;
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(payload) } else { payload.to_owned() };
    let json = if payload.trim().is_empty() { Value::Null } else { serde_json::from_str(&payload).unwrap_or(Value::String(payload)) };
    Ok((status, json))
}

/// The body of a `Transfer-Encoding: chunked` payload.
pub fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// `rekey ARGS` → stdout, asserting success.
pub fn rekey(args: &[&str]) -> String {
    let out = Command::new(REKEY).args(args).output().expect("run rekey");
    assert!(out.status.success(), "rekey {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The os-brick passphrase of a key, read with `rekey key show --passphrase`.
pub fn passphrase(data_dir: &Path, key_id: &str) -> Vec<u8> {
    let out = Command::new(REKEY)
        .args(["key", "show", key_id, "--passphrase", "--data-dir"])
        .arg(data_dir)
        .args(db_args(data_dir))
        .output()
        .expect("run rekey key show");
    assert!(out.status.success(), "rekey key show {key_id}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), 64, "a 256-bit key's passphrase is 64 hex digits");
    out.stdout
}

/// Whether `rekey key show` still finds a key.
pub fn key_exists(data_dir: &Path, key_id: &str) -> bool {
    Command::new(REKEY)
        .args(["key", "show", key_id, "--data-dir"])
        .arg(data_dir)
        .args(db_args(data_dir))
        .output()
        .unwrap()
        .status
        .success()
}

/// The backing file of a volume, from `rekey volume path`.
pub fn volume_path(data_dir: &Path, id: &str) -> PathBuf {
    let mut args = vec!["volume", "path", id, "--data-dir", data_dir.to_str().unwrap()];
    let db = db_args(data_dir);
    args.extend(db.iter().map(String::as_str));
    PathBuf::from(rekey(&args).trim())
}

/// `cryptsetup open --test-passphrase --key-file=-` with `pass` on stdin.
pub fn cryptsetup_opens(path: &Path, pass: &[u8]) -> bool {
    let mut child = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file=-"])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cryptsetup");
    child.stdin.take().unwrap().write_all(pass).unwrap();
    let st = child.wait().unwrap();
    match st.code() {
        Some(0) => true,
        Some(2) => false,
        other => panic!("cryptsetup open --test-passphrase {}: unexpected exit {other:?}", path.display()),
    }
}

/// `rekey volume audit --json` of a data directory.
pub fn audit_json(data_dir: &Path) -> Value {
    let mut args = vec!["volume", "audit", "--json", "--data-dir", data_dir.to_str().unwrap()];
    let db = db_args(data_dir);
    args.extend(db.iter().map(String::as_str));
    let out = rekey(&args);
    serde_json::from_str(&out).expect("audit JSON")
}

/// No key the service made is left without a record naming it.
pub fn assert_no_orphan_keys(data_dir: &Path, what: &str) {
    let r = audit_json(data_dir);
    assert_eq!(r["unreferenced_keys"], serde_json::json!([]), "{what}: orphan keys");
}

/// The volume key, hex, as `cryptsetup luksDump --dump-volume-key` shows it.
pub fn volume_key_hex(path: &std::path::Path, pass: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let kf = dir.path().join("k");
    std::fs::write(&kf, pass).unwrap();
    let out = std::process::Command::new("cryptsetup")
        .args(["luksDump", "--batch-mode", "--dump-volume-key", "--key-file"])
        .arg(&kf)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = text.find("MK dump:").expect("MK dump line");
    text[start + 8..].split_whitespace().take_while(|t| t.len() == 2).collect()
}

/// Active keyslots according to `cryptsetup luksDump`.
pub fn cryptsetup_keyslots(path: &Path) -> usize {
    let out = Command::new("cryptsetup").arg("luksDump").arg(path).output().unwrap();
    assert!(out.status.success(), "luksDump {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Version:       \t1") || text.contains("Key Slot 0:") {
        text.matches(": ENABLED").count()
    } else {
        // LUKS2: keyslot lines look like "  0: luks2".
        text.lines().filter(|l| l.trim_end().ends_with(": luks2")).count()
    }
}

/// Known plaintext: 1 MiB of a pattern derived from `seed`.
pub fn pattern(seed: u8) -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed).collect()
}

/// Offsets (in the plaintext) where the tests write their pattern.
pub const OFFSETS: [u64; 3] = [0, 300 << 20, (1 << 30) - (18 << 20)];

/// Writes `data` as plaintext at each of [`OFFSETS`] through the engine's data path.
pub fn write_plaintext(path: &Path, pass: &[u8], data: &[u8]) {
    let v = Volume::open(FileIo::open(path).unwrap()).unwrap();
    let plain = v.decrypted(pass).unwrap();
    for off in OFFSETS {
        plain.write_at(data, off).unwrap();
    }
    plain.flush().unwrap();
}

/// Reads the plaintext at each of [`OFFSETS`].
pub fn read_plaintext(path: &Path, pass: &[u8], len: usize) -> Vec<Vec<u8>> {
    let v = Volume::open(FileIo::open_read_only(path).unwrap()).unwrap();
    let plain = v.decrypted(pass).unwrap();
    OFFSETS
        .iter()
        .map(|&off| {
            let mut buf = vec![0u8; len];
            plain.read_at(&mut buf, off).unwrap();
            buf
        })
        .collect()
}

/// The first 17 MiB of a file (every LUKS header and keyslot area and the
/// first plaintext pattern), to show a source was not touched.
pub fn head_bytes(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 17 << 20];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The `id` row of a cinder/openstack table output.
pub fn table_field(out: &Output, field: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {}\n{}", text, String::from_utf8_lossy(&out.stderr));
    text.lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            (cols.len() >= 3 && cols[1] == field).then(|| cols[2].to_owned())
        })
        .unwrap_or_else(|| panic!("no {field} in:\n{text}"))
}
