//! Write latency through a plaintext export while an online re-encryption
//! runs, against the same export without one (the anchor), in one run.
//!
//! A LUKS2 image (made by cryptsetup) is served by `rekey-nbd-serve --luks`;
//! one client writes 4 KiB blocks at scattered offsets, one request in
//! flight, a FLUSH every 64 writes, and times each write. The anchor run
//! serves the image as it is; the measured run adds `--online-reencrypt`
//! and counts only the writes made before the re-encryption finished.
//! Each case runs `RUNS` times (default 3), alternating; the medians of the
//! per-run p50/p99 are printed, and the ratio (online / anchor; lower is
//! better). `SIZE_MB` (default 256) sets the data size, `HOTZONE` the
//! re-encryption step (default 1 MiB). Needs cryptsetup on PATH.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/client/mod.rs"]
mod client;
use client::Client;

const BLOCK: u64 = 4096;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    (18200..18300)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18200-18299")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn serve(dir: &Path, port: u16, args: &[&str]) -> Served {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_rekey-nbd-serve"));
    c.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--export",
        &format!("e={}", dir.join("img").display()),
    ]);
    c.args(["--luks", "--key-file", dir.join("pass0").to_str().unwrap()])
        .args(args);
    let child = Served(c.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Per-write latencies in microseconds, until `done()` or `max` writes.
fn measure(port: u16, blocks: u64, max: usize, done: &dyn Fn() -> bool) -> Vec<f64> {
    let mut c = Client::connect(port, "e").unwrap();
    let buf = vec![0x5au8; BLOCK as usize];
    let mut lat = Vec::with_capacity(max.min(1 << 20));
    let mut i = 0u64;
    while lat.len() < max && !(lat.len() % 64 == 0 && done()) {
        i = (i + 7919) % blocks;
        let t = Instant::now();
        c.write(i * BLOCK, &buf).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if lat.len() % 64 == 0 {
            c.flush().unwrap();
        }
    }
    lat
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks; nothing to list
    }
    let runs = env_u64("RUNS", 3);
    let size_mb = env_u64("SIZE_MB", 256);
    let hotzone = env_u64("HOTZONE", 1 << 20).to_string();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let port = free_port();
    let blocks = (size_mb << 20) / BLOCK;
    let (mut anchor, mut online) = (vec![], vec![]);
    let mut writes = vec![];
    for r in 0..runs {
        // A fresh image per run, so each measured run re-encrypts all of it.
        std::fs::File::create(&img)
            .unwrap()
            .set_len((16 + size_mb) << 20)
            .unwrap();
        for g in 0..2 {
            std::fs::write(dir.path().join(format!("pass{g}")), format!("bench-{g}")).unwrap();
        }
        run(Command::new("cryptsetup")
            .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2"])
            .args(["--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(dir.path().join("pass0"))
            .arg(&img));

        let s = serve(dir.path(), port, &[]);
        let mut l = measure(port, blocks, 20_000, &|| false);
        anchor.push((pct(&mut l, 0.5), pct(&mut l, 0.99)));
        drop(s);

        let log = dir.path().join("serve.log");
        let s = serve(
            dir.path(),
            port,
            &[
                "--online-reencrypt",
                "--new-key-file",
                dir.path().join("pass1").to_str().unwrap(),
                "--hotzone",
                &hotzone,
                "--pbkdf-force-iterations",
                "1000",
            ],
        );
        let started = Instant::now();
        let finished = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("re-encryption finished")
        };
        let mut l = measure(port, blocks, usize::MAX, &finished);
        let secs = started.elapsed().as_secs_f64();
        assert!(
            l.len() >= 1000,
            "run {r}: only {} writes during the re-encryption",
            l.len()
        );
        writes.push((l.len(), secs));
        online.push((pct(&mut l, 0.5), pct(&mut l, 0.99)));
        drop(s);
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# online re-encryption write latency: {size_mb} MiB LUKS2, hotzone {hotzone} B, 4 KiB writes, 1 in flight, flush/64; {} cpus, {model}; median of {runs} runs; load {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()), load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    for (r, (n, secs)) in writes.iter().enumerate() {
        println!(
            "run {r}: {n} writes during a {secs:.1} s re-encryption ({:.0} MiB/s)",
            size_mb as f64 / secs
        );
    }
    let (a50, a99) = (
        median(anchor.iter().map(|x| x.0).collect()),
        median(anchor.iter().map(|x| x.1).collect()),
    );
    let (o50, o99) = (
        median(online.iter().map(|x| x.0).collect()),
        median(online.iter().map(|x| x.1).collect()),
    );
    println!(
        "{:<22} {:>12} {:>12} {:>7}",
        "write latency (µs)", "anchor", "online", "ratio"
    );
    println!("{:<22} {a50:>12.0} {o50:>12.0} {:>7.2}", "p50", o50 / a50);
    println!("{:<22} {a99:>12.0} {o99:>12.0} {:>7.2}", "p99", o99 / a99);
}
