//! `GET /metrics`: this node's view in the Prometheus text format (0.0.4).
//!
//! Counts read from the database at scrape time (jobs by kind and state,
//! volumes by status: what every node shares, so they agree with the API on
//! any node) and figures this process measured (step latencies, lease
//! takeovers, bytes re-encrypted, key-manager and backend calls).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, seconds.
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(BUCKETS) {
            if secs <= *b {
                *c += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// What this process measures.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Step attempt latency by (kind, step, outcome).
    steps: Mutex<BTreeMap<(String, &'static str, &'static str), Histogram>>,
    /// Jobs this node took up from another node whose lease ran out.
    pub(crate) lease_takeovers: AtomicU64,
    /// Data re-encrypted under new volume keys, bytes.
    pub(crate) bytes_reencrypted: AtomicU64,
    /// Key-manager calls of the key-deletion queue that failed.
    pub(crate) key_deletion_errors: AtomicU64,
}

impl Metrics {
    pub(crate) fn step(&self, kind: &str, step: &'static str, outcome: &'static str, took: Duration) {
        let mut m = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((kind.to_owned(), step, outcome)).or_default().observe(took.as_secs_f64());
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition: shared counts read from the database (jobs by kind and
/// state, volumes by status) and this node's measurements `m`.
pub(crate) fn render(node: &str, jobs: &[(String, String, i64)], volumes: &[(String, i64)], m: &Metrics) -> String {
    let node = label(node);
    let mut out = String::new();
    let _ = writeln!(out, "# HELP rekey_jobs Unfinished jobs by kind and current state (shared by every node).");
    let _ = writeln!(out, "# TYPE rekey_jobs gauge");
    for (kind, step, n) in jobs {
        let _ = writeln!(out, "rekey_jobs{{kind=\"{}\",state=\"{}\"}} {n}", label(kind), label(step));
    }
    let _ = writeln!(out, "# HELP rekey_volumes Volumes by status (shared by every node).");
    let _ = writeln!(out, "# TYPE rekey_volumes gauge");
    for (status, n) in volumes {
        let _ = writeln!(out, "rekey_volumes{{status=\"{}\"}} {n}", label(status));
    }
    let _ = writeln!(out, "# HELP rekey_step_seconds Step attempts on this node by kind, state and outcome.");
    let _ = writeln!(out, "# TYPE rekey_step_seconds histogram");
    let steps = m.steps.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for ((kind, step, outcome), h) in &steps {
        let l = format!("node=\"{node}\",kind=\"{}\",state=\"{step}\",outcome=\"{outcome}\"", label(kind));
        for (c, b) in h.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "rekey_step_seconds_bucket{{{l},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "rekey_step_seconds_bucket{{{l},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "rekey_step_seconds_sum{{{l}}} {}", h.sum);
        let _ = writeln!(out, "rekey_step_seconds_count{{{l}}} {}", h.count);
    }
    for (name, help, v) in [
        ("rekey_lease_takeovers_total", "Jobs this node took up after another node's lease ran out.", &m.lease_takeovers),
        ("rekey_reencrypted_bytes_total", "Bytes this node re-encrypted under new volume keys.", &m.bytes_reencrypted),
        ("rekey_key_deletion_errors_total", "Failed key-manager deletions of the key-deletion queue on this node.", &m.key_deletion_errors),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {}", v.load(Ordering::Relaxed));
    }
    out
}
