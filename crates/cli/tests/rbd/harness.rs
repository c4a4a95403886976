//! Command runners, throw-away RBD images, data, `rekey serve --backend rbd`
//! and a private Ceph cluster for the RBD tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use rekey_storage::rbd::{open_rbd_spec_decrypted, RbdClientOptions, RbdLuksFormat};
use rekey_storage::BlockIo;

pub const POOL: &str = "rbd";
pub const MIB: u64 = 1 << 20;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed: stdout={} stderr={}", self.stdout, self.stderr);
        self
    }
}

/// The shared test cluster's ceph.conf; unset fails the test.
pub fn ceph_conf() -> PathBuf {
    std::env::var_os("CEPH_CONF").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "CEPH_CONF is not set: these tests need a running Ceph cluster \
             (scripts/ceph.sh install && scripts/ceph.sh start, then export the CEPH_CONF it prints)"
        )
    })
}

#[track_caller]
pub fn require_tool(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{name} is not installed: this test needs it (apt-get install {package})");
}

pub fn rekey_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rekey"));
    c.stdin(Stdio::null());
    c
}

/// `rekey luks ARGS` against the cluster of `conf`.
pub fn rekey_luks(conf: &Path, args: &[&str]) -> Run {
    let out =
        rekey_cmd().args(["luks", "--ceph-conf", s(conf)]).args(args).output().expect("run rekey");
    Run::from(out)
}

/// The `rbd` tool against the cluster of `conf`.
pub fn rbd(conf: &Path, args: &[&str]) -> Run {
    require_tool("rbd", "ceph-common");
    let out = Command::new("rbd")
        .args(["-c", s(conf)])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rbd");
    Run::from(out)
}

pub fn cryptsetup(args: &[&str]) -> Run {
    require_tool("cryptsetup", "cryptsetup-bin");
    let out = Command::new("cryptsetup")
        .arg("--batch-mode")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cryptsetup");
    Run::from(out)
}

/// Does cryptsetup accept `key` for the LUKS image file `image`?
pub fn cryptsetup_opens(image: &Path, key: &Path) -> bool {
    let r = cryptsetup(&["open", "--test-passphrase", "--key-file", s(key), s(image)]);
    assert!(r.code == 0 || r.code == 2, "cryptsetup open failed oddly: {} {}", r.code, r.stderr);
    r.code == 0
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// An RBD image that is removed (with its snapshots) when the test ends.
pub struct TestImage {
    pub conf: PathBuf,
    pub name: String,
}

impl TestImage {
    pub fn create(conf: &Path, tag: &str, size: u64) -> TestImage {
        let name = format!("{tag}-{}", &uuid_like());
        rbd(conf, &["create", "--size", &format!("{}M", size / MIB), &format!("{POOL}/{name}")])
            .ok();
        TestImage { conf: conf.to_path_buf(), name }
    }

    /// `POOL/IMAGE`.
    pub fn path(&self) -> String {
        format!("{POOL}/{}", self.name)
    }

    /// `rbd:POOL/IMAGE`.
    pub fn spec(&self) -> String {
        format!("rbd:{}", self.path())
    }

    /// librbd's own view of the plaintext after `rbd_encryption_load`.
    pub fn librbd_decrypted(&self, passphrase: &[u8]) -> rekey_storage::Result<Box<dyn BlockIo>> {
        let mut opts = RbdClientOptions::default();
        opts.ceph_conf = Some(self.conf.clone());
        open_rbd_spec_decrypted(&self.spec(), &opts, RbdLuksFormat::Luks2, passphrase)
    }

    /// Exports the raw (encrypted) image to a file with `rbd export`.
    pub fn rbd_export(&self, to: &Path) {
        let _ = std::fs::remove_file(to);
        rbd(&self.conf, &["export", "--no-progress", &self.path(), s(to)]).ok();
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = rbd(&self.conf, &["snap", "purge", &self.path()]);
        let _ = rbd(&self.conf, &["rm", &self.path()]);
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}

/// Deterministic pseudo-random bytes (xorshift64*), distinct per seed.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads `len` bytes at `offset` of a BlockIo.
pub fn read(io: &dyn BlockIo, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    io.read_at(&mut buf, offset).expect("read");
    buf
}

/// `assert_eq!` for large buffers without printing them.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// Cheap keyslot KDF for test passphrases.
pub const CHEAP_KDF: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// Exports the raw (encrypted) image `POOL/IMAGE[@SNAP]` to a file with `rbd export`.
pub fn rbd_export(conf: &Path, image: &str, to: &Path) {
    let _ = std::fs::remove_file(to);
    rbd(conf, &["export", "--no-progress", &format!("{POOL}/{image}"), s(to)]).ok();
}

/// The number of active keyslots of a LUKS1 or LUKS2 image file (cryptsetup luksDump).
pub fn cryptsetup_keyslots(image: &Path) -> usize {
    let r = cryptsetup(&["luksDump", s(image)]).ok();
    if r.stdout.contains("Key Slot 0:") {
        r.stdout.matches(": ENABLED").count()
    } else {
        r.stdout.lines().filter(|l| l.trim_end().ends_with(": luks2")).count()
    }
}

/// The volume key of a LUKS image file, hex, as `cryptsetup luksDump
/// --dump-volume-key` prints it with the passphrase in `key`.
pub fn cryptsetup_volume_key(image: &Path, key: &Path) -> String {
    let r = cryptsetup(&["luksDump", "--dump-volume-key", "--key-file", s(key), s(image)]).ok();
    let start = r.stdout.find("MK dump:").expect("cryptsetup printed no MK dump");
    let hex: String =
        r.stdout[start + 8..].split_whitespace().take_while(|t| t.len() == 2).collect();
    assert!(hex.len() >= 32, "short volume key dump");
    hex
}

/// `len` plaintext bytes at offset 0 of a LUKS image file, decrypted with the
/// passphrase in `key` (rekey's LUKS library; no device-mapper needed).
pub fn plaintext_of(image: &Path, key: &Path, len: usize) -> Vec<u8> {
    let pass = std::fs::read(key).unwrap();
    let v = rekey_luks::Volume::open(rekey_luks::FileIo::open_read_only(image).unwrap()).unwrap();
    let d = v.decrypted(&pass).expect("decrypt the exported image");
    let mut buf = vec![0u8; len];
    rekey_luks::BlockIo::read_at(&d, &mut buf, 0).unwrap();
    buf
}

// ---- rekey serve --backend rbd --------------------------------------------

/// The project every API test acts in (noauth token `user:proj`).
pub const PROJECT: &str = "proj";

/// `rekey serve --backend rbd` on a free port, killed on drop.
pub struct Serve {
    child: Child,
    port: u16,
    pub data: PathBuf,
    pub conf: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Serves pool `rbd` of the cluster of `conf`, data in `data`.
    pub fn start(conf: &Path, data: &Path) -> Serve {
        Serve::start_with(conf, data, &[], &[], None)
    }

    /// As [`Serve::start`], with more arguments and environment, and the
    /// log (stderr) to `log`.
    pub fn start_with(conf: &Path, data: &Path, extra: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::null(),
        };
        let child = rekey_cmd()
            .args(["serve", "--backend", "rbd", "--rbd-pool", POOL, "--ceph-conf", s(conf)])
            .args(["--data-dir", s(data), "--listen", &listen])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start rekey serve");
        let mut srv = Serve { child, port, data: data.to_path_buf(), conf: conf.to_path_buf() };
        let t0 = Instant::now();
        while srv.api("GET", "/", None).0 == 0 {
            if let Some(st) = srv.child.try_wait().unwrap() {
                panic!("rekey serve --backend rbd exited with {st} before answering");
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "rekey serve --backend rbd did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
        srv
    }

    /// (status, JSON body); status 0 = no answer within 30 s.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_at("3.64", method, path, body)
    }

    /// [`Serve::api`] at microversion `mv`.
    pub fn api_at(&self, mv: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(PROJECT, mv, method, path, body)
    }

    /// [`Serve::api_at`] as a user of `project`.
    pub fn api_as(&self, project: &str, mv: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        require_tool("curl", "curl");
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut c = Command::new("curl");
        c.args(["-s", "-m", "30", "-o", "-", "-w", "\n%{http_code}", "-X", method, &url])
            .args(["-H", &format!("X-Auth-Token: user:{project}")])
            .args(["-H", &format!("OpenStack-API-Version: volume {mv}")])
            .args(["-H", "Content-Type: application/json"]);
        if let Some(b) = body {
            c.args(["-d", &b.to_string()]);
        }
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// `POST path` expecting `want`; the answer's body.
    #[track_caller]
    pub fn post(&self, path: &str, body: Value, want: u16) -> Value {
        let (st, v) = self.api("POST", path, Some(body));
        assert_eq!(st, want, "POST {path}: {v}");
        v
    }

    /// Polls `GET /v3/PROJECT/{kind}s/{id}` until its status leaves `busy`;
    /// every answer must be a 200.
    pub fn settled_as(&self, kind: &str, id: &str, busy: &[&str]) -> Value {
        let path = format!("/v3/{PROJECT}/{kind}s/{id}");
        let t0 = Instant::now();
        loop {
            let (st, v) = self.api("GET", &path, None);
            assert_eq!(st, 200, "GET {path}: {v}");
            if !busy.contains(&v[kind]["status"].as_str().unwrap_or("")) {
                return v[kind].clone();
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "{kind} {id} stuck: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A volume once it is no longer being made.
    pub fn settled(&self, id: &str) -> Value {
        self.settled_as("volume", id, &["creating", "restoring-backup", "maintenance", "deleting"])
    }

    /// An encrypted volume type `name` (`provider` luks or luks2, optional
    /// `rekey:mode`).
    pub fn create_encrypted_type(&self, name: &str, provider: &str, mode: Option<&str>) {
        let mut t = json!({"volume_type": {"name": name}});
        if let Some(m) = mode {
            t["volume_type"]["extra_specs"] = json!({"rekey:mode": m});
        }
        let t = self.post(&format!("/v3/{PROJECT}/types"), t, 200);
        let type_id = t["volume_type"]["id"].as_str().unwrap().to_owned();
        let enc = json!({"encryption": {"provider": provider, "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}});
        self.post(&format!("/v3/{PROJECT}/types/{type_id}/encryption"), enc, 200);
    }

    /// `POST /volumes` with `fields`, waited for; must end `available`.
    pub fn create_volume(&self, fields: Value) -> Value {
        let v = self.post(&format!("/v3/{PROJECT}/volumes"), json!({ "volume": fields }), 202);
        let v = self.settled(v["volume"]["id"].as_str().unwrap());
        assert_eq!(v["status"], "available", "{v}");
        v
    }

    /// Deletes a volume through the API and waits until it is gone, image included.
    pub fn delete_volume(&self, id: &str) {
        let (st, v) = self.api("DELETE", &format!("/v3/{PROJECT}/volumes/{id}"), None);
        assert_eq!(st, 202, "DELETE volume {id}: {v}");
        let t0 = Instant::now();
        while self.api("GET", &format!("/v3/{PROJECT}/volumes/{id}"), None).0 != 404 {
            assert!(t0.elapsed() < Duration::from_secs(120), "volume {id} not deleted");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(rbd(&self.conf, &["info", &format!("{POOL}/volume-{id}")]).code != 0, "image of {id} left behind");
    }

    /// Writes the passphrase of key `key_id` (`rekey key show --passphrase`) to `to`.
    pub fn passphrase_file(&self, key_id: &str, to: &Path) {
        passphrase_file(&self.data, key_id, to)
    }

    /// `rekey luks import` of `plain` at plaintext offset 0 of volume `id`,
    /// unlocked with the passphrase in `key`.
    pub fn write_plaintext(&self, id: &str, key: &Path, plain: &[u8]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), plain).unwrap();
        let spec = format!("rbd:{POOL}/volume-{id}");
        rekey_luks(&self.conf, &["import", "-d", s(key), s(file.path()), &spec]).ok();
    }
}

/// Writes the passphrase of key `key_id` (`rekey key show --passphrase`) to `to`.
pub fn passphrase_file(data: &Path, key_id: &str, to: &Path) {
    let out = rekey_cmd().args(["key", "show", key_id, "--passphrase", "--data-dir", s(data)]).output().unwrap();
    assert!(out.status.success(), "rekey key show: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    std::fs::write(to, text.trim_end()).unwrap();
}

// ---- a private cluster ----------------------------------------------------

fn ceph_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph.sh")
}

/// A throw-away cluster of our own (scripts/ceph.sh in a temporary
/// directory, own ports), stopped and wiped on drop, whose OSD a test may
/// pause without disturbing any other test.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    pub conf: PathBuf,
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A mon port whose msgr1 companion (port + 3489, see ceph.sh) is free too.
fn free_mon_port() -> u16 {
    for _ in 0..50 {
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if p < 60000 && port_free(p + 3489) {
            return p;
        }
    }
    panic!("no free pair of ports for a private Ceph monitor");
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        let dir = tempfile::Builder::new().prefix("rekey-outage-").tempdir().unwrap();
        let port = free_mon_port();
        let out = Command::new("bash")
            .arg(ceph_sh())
            .arg("start")
            .env("REKEY_TEST_DIR", dir.path())
            .env("CEPH_MON_PORT", port.to_string())
            .env_remove("CEPH_CONF")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/ceph.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let cluster = PrivateCluster { conf: dir.path().join("ceph/ceph.conf"), dir, port };
        assert!(
            out.status.success() && stdout.contains("export CEPH_CONF="),
            "scripts/ceph.sh start of a private cluster (port {port}) failed \
             (scripts/ceph.sh install first?): {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn osd_pid(&self) -> String {
        let f = self.dir.path().join("ceph/run/osd.0.pid");
        std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .trim()
            .to_owned()
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the cluster's only OSD.
    pub fn signal_osd(&self, sig: &str) {
        let ok =
            Command::new("kill").args([sig, &self.osd_pid()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} of the private OSD failed");
    }

    /// Ceph returns: the OSD continues, and `image` answers again (waited
    /// for up to 120 s, each attempt bounded).
    ///
    /// On a real cluster the peers of a stalled OSD report it and the
    /// monitors mark it down; when it returns, its placement groups re-peer.
    /// This cluster has one OSD and no peers: the placement groups' read
    /// leases run out while it is stopped and, without a new interval, their
    /// reads wait "for readable" for good. So the OSD is marked down here, as
    /// the monitors would have done; it rejoins at once and re-peers.
    pub fn resume_osd(&self, image: &str) {
        require_tool("ceph", "ceph-common");
        self.signal_osd("-CONT");
        let conf = self.client_conf(10);
        let out = Command::new("ceph")
            .args(["-c", s(&conf), "--connect-timeout", "10", "osd", "down", "0"])
            .stdin(Stdio::null())
            .output()
            .expect("run ceph");
        assert!(out.status.success(), "ceph osd down 0: {}", String::from_utf8_lossy(&out.stderr));
        let back = Instant::now();
        while rbd(&conf, &["status", &format!("{POOL}/{image}")]).code != 0 {
            assert!(back.elapsed() < Duration::from_secs(120), "Ceph did not come back after SIGCONT");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A client ceph.conf with short timeouts (what an operator would set).
    pub fn client_conf(&self, secs: u32) -> PathBuf {
        let mut text = std::fs::read_to_string(&self.conf).unwrap();
        text.push_str(&format!(
            "\n[client]\nrados osd op timeout = {secs}\nrados mon op timeout = {secs}\n\
             client mount timeout = {secs}\nlog file = /dev/null\n"
        ));
        let p = self.dir.path().join(format!("client-{secs}.conf"));
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // A stopped OSD would only die by SIGKILL after ceph.sh's grace period.
        let _ = Command::new("kill").args(["-CONT", &self.osd_pid()]).status();
        let _ = Command::new("bash")
            .arg(ceph_sh())
            .arg("stop")
            .env("REKEY_TEST_DIR", self.dir.path())
            .env("CEPH_MON_PORT", self.port.to_string())
            .env("WIPE", "1")
            .stdin(Stdio::null())
            .output();
    }
}

/// Kills the child if the test fails before it ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
