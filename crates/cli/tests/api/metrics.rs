//! `GET /metrics` parses with the Prometheus reference parser (python
//! `prometheus_client`, path in REKEY_PROM_PYTHON) and its counts agree with
//! the API: volumes by status with the volume list, unfinished jobs with
//! `rekey job list`, while jobs are held in flight.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use rekey_service::fault::{Point, Step};

use crate::harness::*;

/// Parses Prometheus text with `prometheus_client.parser` and returns the
/// samples as JSON `[[name, labels, value], …]`.
fn parse_prometheus(text: &str) -> Vec<(String, Value, f64)> {
    let py = std::env::var("REKEY_PROM_PYTHON").unwrap_or_else(|_| {
        panic!("REKEY_PROM_PYTHON is not set: a python with prometheus_client (python3 -m venv V && V/bin/pip install prometheus_client; export REKEY_PROM_PYTHON=V/bin/python)")
    });
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families\nout = []\nfor fam in text_string_to_metric_families(sys.stdin.read()):\n    for s in fam.samples:\n        out.append([s.name, s.labels, s.value])\nprint(json.dumps(out))\n";
    let mut child = Command::new(py).args(["-c", script]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run python");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client cannot parse /metrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let v: Vec<(String, Value, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    v
}

fn metrics_text(srv: &Server) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    std::io::Read::read_to_string(&mut s, &mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

fn sample(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
        .sum()
}

#[test]
fn metrics_parse_and_agree_with_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Clones dwell 8 s once their first step is recorded (and timed): in
    // flight while counted. Not inside a step's commit: on SQLite that
    // would hold the one write lock, and the other clones could not get
    // to the dwell meanwhile.
    let stall = format!("{}:8000", Point::recorded(Step::CloneData));
    let srv = Server::start(&data, &[("REKEY_STALL_AT", &stall)]);
    srv.create_type("LUKS", Some("luks2"), &[]);
    let src = srv.create_volume(json!({"volume": {"size": 1, "volume_type": "LUKS"}}));
    let src_id = src["id"].as_str().unwrap();
    for i in 0..3 {
        let (st, v) = srv.http("POST", "/v3/volumes", Some(json!({"volume": {"source_volid": src_id, "name": format!("c{i}")}}).to_string().as_bytes()));
        assert_eq!(st, 202, "{v}");
    }
    // All three reach the dwell point (add_keyslot is next).
    let mut args = vec!["job".to_owned(), "list".into(), "--json".into(), "--data-dir".into(), data.to_str().unwrap().into()];
    args.extend(db_args(&data));
    let start = std::time::Instant::now();
    let jobs: Vec<Value> = loop {
        let out = rekey(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let jobs: Vec<Value> = serde_json::from_str(&out).unwrap();
        if jobs.len() == 3 && jobs.iter().all(|j| j["step"] == "add_keyslot") {
            break jobs;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "jobs never all reached add_keyslot: {jobs:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(jobs.iter().all(|j| j["kind"] == "clone"), "{jobs:?}");
    let samples = parse_prometheus(&metrics_text(&srv));
    assert_eq!(sample(&samples, "rekey_jobs", &[("kind", "clone"), ("state", "add_keyslot")]), 3.0);
    assert_eq!(sample(&samples, "rekey_jobs", &[]), 3.0, "every job counted once");
    let (st, list) = srv.http("GET", "/v3/volumes/detail", None);
    assert_eq!(st, 200, "{list}");
    let vols = list["volumes"].as_array().unwrap();
    for status in ["available", "creating"] {
        let n = vols.iter().filter(|v| v["status"] == status).count() as f64;
        assert_eq!(sample(&samples, "rekey_volumes", &[("status", status)]), n, "{status}");
    }
    // Steps ran and were timed; the histogram's +Inf bucket equals its count.
    let done = sample(&samples, "rekey_step_seconds_count", &[("kind", "clone"), ("state", "clone_data"), ("outcome", "done")]);
    assert_eq!(done, 3.0);
    assert_eq!(sample(&samples, "rekey_step_seconds_bucket", &[("kind", "clone"), ("state", "clone_data"), ("le", "+Inf")]), done);
    assert_eq!(sample(&samples, "rekey_lease_takeovers_total", &[]), 0.0);
    assert_eq!(sample(&samples, "rekey_reencrypted_bytes_total", &[]), 0.0, "keyslot mode re-encrypts nothing");

    // Key-manager and backend calls, timed by operation and outcome: the
    // source's key, each clone's interim copy and new key (made before
    // the dwell); the source's volume and three clones of it; no
    // call failed.
    let km = |op, outcome| sample(&samples, "rekey_key_manager_call_seconds_count", &[("op", op), ("outcome", outcome)]);
    assert_eq!(km("create", "ok"), 4.0, "the source's key and the clones' new keys");
    assert_eq!(km("store", "ok"), 3.0, "each clone's interim copy of the source's key");
    assert!(km("get", "ok") >= 4.0, "key bytes read: {}", km("get", "ok"));
    let be = |op, outcome| sample(&samples, "rekey_backend_call_seconds_count", &[("op", op), ("outcome", outcome)]);
    assert_eq!(be("create", "ok"), 1.0);
    assert_eq!(be("clone_volume", "ok"), 3.0);
    assert_eq!(sample(&samples, "rekey_backend_call_seconds_bucket", &[("op", "clone_volume"), ("le", "+Inf")]), 3.0);
    for name in ["rekey_key_manager_call_seconds_count", "rekey_backend_call_seconds_count"] {
        assert_eq!(sample(&samples, name, &[("outcome", "error")]), 0.0, "{name}: no call failed");
    }
}
