//! `GET /metrics`: this node's view in the Prometheus text format (0.0.4).
//!
//! Counts read from the database at scrape time (jobs by kind and state,
//! volumes by status: what every node shares, so they agree with the API on
//! any node) and figures this process measured (step latencies, lease
//! takeovers, bytes re-encrypted, key-manager and backend calls).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Key-manager and backend calls (see [`crate::metered`]).
    pub(crate) calls: Arc<Calls>,
}

/// Latency of this node's key-manager and backend calls by operation and
/// outcome (`ok` or `error`): the `error` counts are the error counts.
#[derive(Debug, Default)]
pub struct Calls {
    key_manager: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
    backend: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

impl Calls {
    pub(crate) fn key_manager(&self, op: &'static str, ok: bool, took: Duration) {
        let mut m = self.key_manager.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((op, outcome(ok))).or_default().observe(took.as_secs_f64());
    }
    pub(crate) fn backend(&self, op: &'static str, ok: bool, took: Duration) {
        let mut m = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((op, outcome(ok))).or_default().observe(took.as_secs_f64());
    }
}

impl Metrics {
    /// Fresh figures, the calls counted into `calls`.
    pub(crate) fn new(calls: Arc<Calls>) -> Self {
        Metrics { calls, ..Default::default() }
    }

    pub(crate) fn step(&self, kind: &str, step: &'static str, outcome: &'static str, took: Duration) {
        let mut m = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((kind.to_owned(), step, outcome)).or_default().observe(took.as_secs_f64());
    }
}

/// One histogram's series with labels `l`.
fn histogram(out: &mut String, name: &str, l: &str, h: &Histogram) {
    for (c, b) in h.counts.iter().zip(BUCKETS) {
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
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
        histogram(&mut out, "rekey_step_seconds", &l, h);
    }
    for (name, help, calls) in [
        ("rekey_key_manager_call_seconds", "Key-manager calls of this node by operation and outcome.", &m.calls.key_manager),
        ("rekey_backend_call_seconds", "Volume backend calls of this node by operation and outcome.", &m.calls.backend),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let calls = calls.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ((op, outcome), h) in &calls {
            histogram(&mut out, name, &format!("node=\"{node}\",op=\"{op}\",outcome=\"{outcome}\""), h);
        }
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
