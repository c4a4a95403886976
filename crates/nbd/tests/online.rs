//! Online re-encryption through the process: `rekey-nbd-serve
//! --online-reencrypt` serves a LUKS2 image (made by cryptsetup) as plaintext
//! over NBD while it re-encrypts it; NBD clients keep writing versioned,
//! self-checking blocks and flushing; the server is killed with SIGKILL at
//! randomized points and started again, the clients reconnect. Afterwards
//! every block holds its last flushed version (or a later one it was sent),
//! cryptsetup shows a new volume key, and the old key opens nothing.
//!
//! Needs cryptsetup on PATH; a missing tool fails the test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rekey_luks::luks2::reenc::{self, Progress};
use rekey_luks::{FileIo, Header};

mod client;
use client::Client;

const BLOCK: usize = 4096;
const DATA: u64 = 16 << 20;
const BLOCKS: usize = DATA as usize / BLOCK;
const WRITERS: usize = 3;
const EXPORT: &str = "vol";

/// Block `i` at version `v`: number, version and a hash of both, repeated.
fn block(i: usize, v: u64) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (i, v, "rekey").hash(&mut h);
    let sum = h.finish();
    let mut out = Vec::with_capacity(BLOCK);
    while out.len() < BLOCK {
        out.extend_from_slice(&(i as u64).to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
        out.extend_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&(!sum).to_be_bytes());
    }
    out
}

fn version_of(i: usize, buf: &[u8]) -> Option<u64> {
    let v = u64::from_be_bytes(buf[8..16].try_into().unwrap());
    (block(i, v) == buf).then_some(v)
}

/// Per block: last version flushed after its write, last version sent, and
/// whether a write to it went unanswered (it may have landed torn).
struct Ledger {
    flushed: Vec<AtomicU64>,
    sent: Vec<AtomicU64>,
    unanswered: Vec<AtomicBool>,
    writes: AtomicU64,
    reconnects: AtomicU64,
}

/// Writer `w` owns blocks `i % WRITERS == w`; it writes them in a scattered
/// order, flushes every 4 writes, and reconnects whenever the server goes.
fn writer(port: u16, ledger: &Ledger, w: usize, stop: &AtomicBool) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1);
    'connect: while !stop.load(Ordering::SeqCst) {
        let Ok(mut c) = Client::connect(port, EXPORT) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        ledger.reconnects.fetch_add(1, Ordering::SeqCst);
        let mut pending = vec![];
        while !stop.load(Ordering::SeqCst) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize % (BLOCKS / WRITERS)) * WRITERS + w;
            let v = ledger.sent[i].load(Ordering::SeqCst) + 1;
            ledger.sent[i].store(v, Ordering::SeqCst);
            if c.write((i * BLOCK) as u64, &block(i, v)).is_err() {
                ledger.unanswered[i].store(true, Ordering::SeqCst);
                continue 'connect;
            }
            ledger.writes.fetch_add(1, Ordering::SeqCst);
            pending.push((i, v));
            if pending.len() == 4 {
                if c.flush().is_err() {
                    continue 'connect;
                }
                for (i, v) in pending.drain(..) {
                    ledger.flushed[i].store(v, Ordering::SeqCst);
                }
            }
        }
    }
}

struct Scratch {
    dir: PathBuf,
    image: PathBuf,
    port: u16,
}

/// A free port of this test's range (18200-18299), kept for every restart.
fn free_port() -> u16 {
    (18200..18300)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18200-18299")
}

/// The server process, killed with SIGKILL when dropped (also when the test
/// fails), never left behind.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Scratch {
    fn pass(&self, generation: usize) -> PathBuf {
        let p = self.dir.join(format!("pass{generation}"));
        if !p.exists() {
            std::fs::write(&p, format!("passphrase-of-generation-{generation}")).unwrap();
        }
        p
    }
}

fn cryptsetup(args: &[&str]) -> std::process::Output {
    Command::new("cryptsetup")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cryptsetup (cryptsetup-bin) must be on PATH: {e}"))
}

fn dump(image: &Path) -> String {
    let out = cryptsetup(&["luksDump", image.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "luksDump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn volume_key(image: &Path, pass: &Path) -> Vec<u8> {
    let out = cryptsetup(&[
        "luksDump",
        "--dump-volume-key",
        "-q",
        "--key-file",
        pass.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "luksDump --dump-volume-key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let start = text.find("MK dump:").expect("MK dump in the output") + "MK dump:".len();
    // The key follows on this line and the next ones, hex bytes only.
    let all: String = text[start..]
        .lines()
        .take_while(|l| {
            !l.trim().is_empty()
                && l.split_whitespace()
                    .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok())
        })
        .collect::<Vec<_>>()
        .join(" ");
    let bytes: Vec<u8> = all
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect();
    assert_eq!(bytes.len(), 64, "a 512-bit XTS key from {all:?}");
    bytes
}

/// Where the re-encryption recorded in the header stands, if one is.
fn progress(image: &Path) -> Option<Progress> {
    try_progress(image).unwrap()
}

/// The same, failing when the header is being rewritten under the read.
fn try_progress(image: &Path) -> rekey_luks::Result<Option<Progress>> {
    let Header::Luks2(h) =
        rekey_luks::volume::read_header(&FileIo::open_read_only(image).unwrap())?
    else {
        panic!("LUKS2 expected")
    };
    let Some(st) = reenc::parse(&h.meta)? else {
        return Ok(None);
    };
    st.progress(&h.meta, DATA).map(Some)
}

fn test_passphrase(image: &Path, pass: &Path) -> bool {
    cryptsetup(&[
        "open",
        "--test-passphrase",
        "--key-file",
        pass.to_str().unwrap(),
        image.to_str().unwrap(),
    ])
    .status
    .success()
}

fn serve(s: &Scratch, generation: usize, reencrypt: bool) -> Served {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.join("serve.log"))
        .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_rekey-nbd-serve"));
    c.args([
        "--listen",
        &format!("127.0.0.1:{}", s.port),
        "--export",
        &format!("{EXPORT}={}", s.image.display()),
        "--luks",
    ]);
    c.arg("--key-file").arg(s.pass(generation));
    if reencrypt {
        c.arg("--online-reencrypt")
            .arg("--new-key-file")
            .arg(s.pass(generation + 1));
        c.args([
            "--hotzone",
            "524288",
            "--hotzone-pause-ms",
            "15",
            "--pbkdf-force-iterations",
            "1000",
        ]);
    }
    let mut child = Served(
        c.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rekey-nbd-serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", s.port)).is_err() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "rekey-nbd-serve exited; see {}",
            s.dir.join("serve.log").display()
        );
        assert!(
            Instant::now() < deadline,
            "rekey-nbd-serve did not listen; see {}",
            s.dir.join("serve.log").display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn kill9(mut child: Served) {
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
}

#[test]
fn online_reencrypt_survives_kill_9_with_writes_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scratch {
        dir: dir.path().to_path_buf(),
        image: dir.path().join("vol.img"),
        port: free_port(),
    };
    std::fs::File::create(&s.image)
        .unwrap()
        .set_len((16 << 20) + DATA)
        .unwrap();
    let out = cryptsetup(&[
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        s.pass(0).to_str().unwrap(),
        s.image.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "luksFormat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first_key = volume_key(&s.image, &s.pass(0));

    // Every block starts at version 1, flushed.
    let ledger = Arc::new(Ledger {
        flushed: (0..BLOCKS).map(|_| AtomicU64::new(1)).collect(),
        sent: (0..BLOCKS).map(|_| AtomicU64::new(1)).collect(),
        unanswered: (0..BLOCKS).map(|_| AtomicBool::new(false)).collect(),
        writes: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
    });
    let server = serve(&s, 0, false);
    let mut c = Client::connect(s.port, EXPORT).unwrap();
    for i in 0..BLOCKS {
        c.write((i * BLOCK) as u64, &block(i, 1)).unwrap();
    }
    c.flush().unwrap();
    drop(c);
    kill9(server);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (ledger, stop, port) = (ledger.clone(), stop.clone(), s.port);
            std::thread::spawn(move || writer(port, &ledger, w, &stop))
        })
        .collect();

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-point seed {seed}");
    let mut generation = 0;
    let (mut mid_way, mut trials) = (0, 0);
    while mid_way < 20 {
        trials += 1;
        assert!(
            trials <= 80,
            "only {mid_way} of {trials} kills landed mid-re-encryption"
        );
        let server = serve(&s, generation, true);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // The machine may be loaded: first let one hotzone be converted,
        // then kill at a random moment after it.
        let deadline = Instant::now() + Duration::from_secs(120);
        while matches!(
            try_progress(&s.image),
            Err(_) | Ok(Some(Progress::Between { done: 0 }))
        ) {
            assert!(
                Instant::now() < deadline,
                "no hotzone converted in 2 minutes; server log:\n{}",
                std::fs::read_to_string(s.dir.join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(seed % 500));
        let before = ledger.writes.load(Ordering::SeqCst);
        kill9(server);
        if let Some(at) = progress(&s.image) {
            // Counted only strictly inside: some data converted, some not.
            let inside = !matches!(at, Progress::Between { done } if done == 0 || done == DATA);
            mid_way += inside as usize;
            eprintln!("kill {trials}: generation {generation} at {at:?}, {before} writes so far");
        } else if test_passphrase(&s.image, &s.pass(generation + 1)) {
            eprintln!("kill {trials}: generation {generation} had finished");
            generation += 1;
        } else {
            eprintln!("kill {trials}: before generation {generation} started");
        }
    }

    // The last run goes to the end with the writers still going.
    // (The header is read from the log, not the image, while the server
    // may be rewriting it.)
    let log = s.dir.join("serve.log");
    let ends = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.matches("re-encryption finished").count()
            + text.matches("already under the new key").count()
    };
    let ended_before = ends();
    let server = serve(&s, generation, true);
    let deadline = Instant::now() + Duration::from_secs(120);
    while ends() == ended_before {
        assert!(
            Instant::now() < deadline,
            "the resumed re-encryption did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let at_end = ledger.writes.load(Ordering::SeqCst);
    while ledger.writes.load(Ordering::SeqCst) < at_end + 100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        ledger.reconnects.load(Ordering::SeqCst) >= (WRITERS * 20) as u64,
        "the clients reconnected after each kill"
    );

    let mut c = Client::connect(s.port, EXPORT).unwrap();
    let mut buf = vec![0u8; BLOCK];
    for i in 0..BLOCKS {
        c.read((i * BLOCK) as u64, &mut buf).unwrap();
        let (flushed, sent) = (
            ledger.flushed[i].load(Ordering::SeqCst),
            ledger.sent[i].load(Ordering::SeqCst),
        );
        match version_of(i, &buf) {
            Some(v) => assert!(
                (flushed..=sent).contains(&v),
                "block {i}: version {v}, flushed {flushed}, sent {sent}"
            ),
            None => assert!(
                ledger.unanswered[i].load(Ordering::SeqCst),
                "block {i} is torn, yet every write to it was answered"
            ),
        }
    }
    drop(c);
    kill9(server);

    // cryptsetup's view: a new volume key, and nothing old opens it.
    let last = s.pass(generation + 1);
    assert!(!dump(&s.image).contains("online-reencrypt"));
    let key = volume_key(&s.image, &last);
    assert_ne!(key, first_key, "the volume key must be new");
    for g in 0..=generation {
        assert!(
            !test_passphrase(&s.image, &s.pass(g)),
            "passphrase of generation {g} still opens the volume"
        );
    }
    let old_key_file = s.dir.join("first.key");
    std::fs::write(&old_key_file, &first_key).unwrap();
    let out = cryptsetup(&[
        "open",
        "--test-passphrase",
        "--volume-key-file",
        old_key_file.to_str().unwrap(),
        s.image.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "the old volume key must open nothing"
    );
    let new_key_file = s.dir.join("last.key");
    std::fs::write(&new_key_file, &key).unwrap();
    let out = cryptsetup(&[
        "open",
        "--test-passphrase",
        "--volume-key-file",
        new_key_file.to_str().unwrap(),
        s.image.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "the new volume key opens it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
