//! Command runners, throw-away RBD images and data for the RBD CLI tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
