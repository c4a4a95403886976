//! Temp dirs, key files and command runners shared by the CLI tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

/// Where a tool must exist; a missing one fails the test loudly.
#[track_caller]
pub fn require_tool(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "{name} is not installed: this test needs it (apt-get install {package})");
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a key file holding exactly `bytes`.
    pub fn key(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A sparse file of `size` bytes.
    pub fn sparse(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        p
    }
}

pub fn rekey(args: &[&str]) -> Run {
    Run::from(Command::new(env!("CARGO_BIN_EXE_rekey")).args(args).stdin(Stdio::null()).output().expect("run rekey"))
}

pub fn cryptsetup(args: &[&str]) -> Run {
    require_tool("cryptsetup", "cryptsetup-bin");
    Run::from(
        Command::new("cryptsetup")
            .args(["--batch-mode"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cryptsetup"),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Volume key hex from `cryptsetup luksDump --dump-volume-key`.
pub fn cryptsetup_volume_key(image: &Path, key: &Path) -> String {
    let r = cryptsetup(&["luksDump", "--dump-volume-key", "--key-file", s(key), s(image)]).ok();
    let mut hex = String::new();
    let mut inside = false;
    for line in r.stdout.lines() {
        if let Some(rest) = line.strip_prefix("MK dump:") {
            inside = true;
            hex.push_str(&rest.split_whitespace().collect::<String>());
        } else if inside && line.starts_with(char::is_whitespace) {
            hex.push_str(&line.split_whitespace().collect::<String>());
        } else if inside {
            break;
        }
    }
    assert!(!hex.is_empty(), "no MK dump in cryptsetup output: {}", r.stdout);
    hex
}

/// Volume key hex as ours reports it.
pub fn our_volume_key(image: &Path, key: &Path) -> String {
    let r = rekey(&["luks", "dump", "--json", "--dump-volume-key", "--key-file", s(key), s(image)]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["volume_key"].as_str().unwrap().to_string()
}

/// Our dump as JSON.
pub fn our_dump(image: &Path) -> serde_json::Value {
    let r = rekey(&["luks", "dump", "--json", s(image)]).ok();
    serde_json::from_str(&r.stdout).unwrap()
}

/// Does cryptsetup accept `key` (optionally only in `slot`)?
pub fn cs_opens(image: &Path, key: &Path, slot: Option<u32>) -> bool {
    let slot_s = slot.map(|s| s.to_string());
    let mut args = vec!["open", "--test-passphrase", "--key-file", s(key)];
    if let Some(sl) = &slot_s {
        args.extend(["--key-slot", sl]);
    }
    args.push(s(image));
    let r = cryptsetup(&args);
    assert!(r.code == 0 || r.code == 2, "cryptsetup open failed oddly: {} {}", r.code, r.stderr);
    r.code == 0
}

/// Does ours accept `key`? Returns the slot.
pub fn we_open(image: &Path, key: &Path) -> Option<u32> {
    let r = rekey(&["luks", "test-key", "--json", "--key-file", s(key), s(image)]);
    match r.code {
        0 => {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            Some(v["keyslot"].as_u64().unwrap() as u32)
        }
        2 => None,
        c => panic!("rekey test-key exited {c}: {}", r.stderr),
    }
}

/// `rnd(n)`: a number below `n` (xorshift), seeded from the clock and the
/// seed printed, so random kill points differ per run and a failing run
/// can be told apart.
pub fn kill_points() -> impl FnMut(u64) -> u64 {
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("seed {seed}");
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    }
}
