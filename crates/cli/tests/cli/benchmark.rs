//! `rekey luks benchmark`: the JSON shape of issue 16, every kernel this CPU
//! runs, and one clear error for what it cannot measure.

use crate::harness::*;
use rekey_luks::crypto::XtsImplementation;

#[test]
fn benchmark_json_lists_every_kernel_this_cpu_runs_and_the_selected_one() {
    let r = rekey(&["luks", "benchmark", "--cipher", "aes-xts-plain64", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("one JSON document");
    let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, ["ciphers", "selected"]);
    assert_eq!(v["selected"], XtsImplementation::selected().name());
    let rows = v["ciphers"].as_array().unwrap();
    let want = XtsImplementation::supported();
    assert_eq!(rows.len(), 2 * want.len(), "{rows:?}");
    for key_size in [256, 512] {
        let got: Vec<&str> = rows
            .iter()
            .filter(|c| c["key_size"] == key_size)
            .map(|c| c["implementation"].as_str().unwrap())
            .collect();
        assert_eq!(got, want.iter().map(|i| i.name()).collect::<Vec<_>>(), "key size {key_size}");
    }
    for c in rows {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["cipher", "key_size", "implementation", "encrypt_bytes_per_s", "decrypt_bytes_per_s"]);
        assert_eq!(c["cipher"], "aes-xts-plain64");
        assert!(c["encrypt_bytes_per_s"].as_u64().unwrap() > 0 && c["decrypt_bytes_per_s"].as_u64().unwrap() > 0, "{c}");
    }
}

#[test]
fn benchmark_covers_every_cipher_and_key_size_and_filters() {
    let r = rekey(&["luks", "benchmark", "--key-size", "256", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let names: Vec<String> = v["ciphers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} {}", c["cipher"].as_str().unwrap(), c["key_size"], c["implementation"].as_str().unwrap()))
        .collect();
    for want in ["aes-cbc-essiv:sha256 256 openssl", "aes-cbc-plain64 256 openssl", "aes-xts-plain64 256 portable"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert!(names.iter().all(|n| n.contains(" 256 ")), "{names:?}");
    let text = rekey(&["luks", "benchmark", "-c", "aes-cbc-plain64", "-s", "128"]).ok();
    assert!(text.stdout.contains("aes-cbc-plain64") && text.stdout.contains("MiB/s"), "{}", text.stdout);
}

#[test]
fn benchmark_refuses_unknown_ciphers_and_key_sizes_in_one_line() {
    for args in [&["-c", "aes-foo"][..], &["-c", "aes-xts-plain64", "-s", "128"], &["-s", "100"]] {
        let mut a = vec!["luks", "benchmark"];
        a.extend_from_slice(args);
        let r = rekey(&a);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"));
    }
}
