//! cryptsetup's re-encryption metadata parser against the cryptsetup-made
//! seed corpus (fuzz/corpus/reenc_metadata) and mutations of it: every seed
//! parses; every malformed variant is one clear error, never a panic; and a
//! resume refused on malformed metadata writes nothing.

use rekey_luks::luks2::json::Metadata;
use rekey_luks::luks2::{decode_copy, reenc, CopyBytes};
use rekey_luks::reencrypt::{self, ReencryptOptions};
use rekey_luks::{MemIo, Secret, Volume};
use serde_json::Value;

fn seeds() -> Vec<(String, Metadata)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/reenc_metadata");
    let mut out = vec![];
    for e in std::fs::read_dir(dir).expect("seed corpus (fuzz/make-corpus.sh makes it)") {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        let (_, meta) = decode_copy(&CopyBytes { offset: 0, bytes }).unwrap();
        out.push((p.file_name().unwrap().to_string_lossy().into_owned(), meta));
    }
    assert!(out.len() >= 5, "seed corpus incomplete");
    out
}

#[test]
fn every_cryptsetup_seed_parses_with_its_progress() {
    for (name, meta) in seeds() {
        let st = reenc::parse(&meta).unwrap().unwrap_or_else(|| panic!("{name}: no state"));
        let p = st.progress(&meta, 4 << 20).or_else(|_| st.progress(&meta, 400 << 20)).unwrap();
        assert_eq!(name.starts_with("hot-"), matches!(p, reenc::Progress::Hot { .. }), "{name}: {p:?}");
        let k = Secret::new(vec![1; 64]);
        reenc::verification_data(&meta, &st, Some(&k), Some(&k)).unwrap();
    }
}

type Edit = (&'static str, fn(&mut Value));

/// Edits of the JSON that each break one thing the parser relies on.
fn malformations() -> Vec<Edit> {
    fn ks(v: &mut Value) -> &mut Value {
        let slots = v["keyslots"].as_object_mut().unwrap();
        slots.values_mut().find(|k| k["type"] == "reencrypt").unwrap()
    }
    fn seg<'a>(v: &'a mut Value, flag: &str) -> &'a mut Value {
        let segs = v["segments"].as_object_mut().unwrap();
        segs.values_mut().find(|s| s["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == flag))).unwrap()
    }
    vec![
        ("no mode", |v| drop(ks(v).as_object_mut().unwrap().remove("mode"))),
        ("bad mode", |v| ks(v)["mode"] = "sideways".into()),
        ("bad direction", |v| ks(v)["direction"] = 7.into()),
        ("key_size 2", |v| ks(v)["key_size"] = 2.into()),
        ("bad resilience", |v| ks(v)["area"]["type"] = "prayer".into()),
        ("no backup-final", |v| seg(v, "backup-final")["flags"] = serde_json::json!([])),
        ("two backup-previous", |v| seg(v, "backup-final")["flags"] = serde_json::json!(["backup-previous"])),
        ("no reencrypt digest", |v| {
            for d in v["digests"].as_object_mut().unwrap().values_mut() {
                d["keyslots"].as_array_mut().unwrap().retain(|k| k != "2");
            }
        }),
        ("no requirement", |v| v["config"].as_object_mut().unwrap().remove("requirements").map(drop).unwrap_or(())),
        ("long cipher name", |v| seg(v, "backup-final")["encryption"] = "a".repeat(80).into()),
        ("segment before data", |v| {
            let segs = v["segments"].as_object_mut().unwrap();
            segs.get_mut("0").unwrap()["offset"] = "4096".into();
        }),
        ("hotzone past the end", |v| {
            let segs = v["segments"].as_object_mut().unwrap();
            let s0 = segs.get_mut("0").unwrap();
            s0["flags"] = serde_json::json!(["in-reencryption"]);
            s0["size"] = "999999999999".into();
        }),
    ]
}

#[test]
fn malformed_metadata_is_a_clear_error_never_a_panic() {
    for (name, meta) in seeds() {
        for (what, edit) in malformations() {
            let mut v = serde_json::to_value(&meta).unwrap();
            edit(&mut v);
            let Ok(bad) = serde_json::from_value::<Metadata>(v) else { continue };
            let r = reenc::parse(&bad).and_then(|st| {
                let st = st.ok_or_else(|| rekey_luks::Error::InvalidHeader("none".into()))?;
                st.progress(&bad, 4 << 20)?;
                let k = Secret::new(vec![1; 64]);
                reenc::verification_data(&bad, &st, Some(&k), Some(&k)).map(drop)
            });
            let e = r.expect_err(&format!("{name}/{what}: accepted"));
            assert!(!e.to_string().is_empty() && !e.to_string().contains('\n'), "{name}/{what}: {e}");
        }
    }
}

/// Byte-level mutations of the JSON text of every seed: the parser returns,
/// whatever it is given.
#[test]
fn mutated_json_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (_, meta) in seeds() {
        let text = serde_json::to_vec(&meta).unwrap();
        for _ in 0..3000 {
            let mut t = text.clone();
            for _ in 0..(1 + x % 4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % t.len() as u64) as usize;
                t[i] = b"0123456789\"{}[],:-ad"[(x >> 32) as usize % 20];
            }
            if let Ok(m) = Metadata::parse(&t) {
                if let Ok(Some(st)) = reenc::parse(&m) {
                    let _ = st.progress(&m, 1 << 30);
                    let k = Secret::new(vec![1; 64]);
                    let _ = reenc::verification_data(&m, &st, Some(&k), Some(&k));
                }
            }
        }
    }
}

/// A header whose re-encryption metadata was changed after cryptsetup wrote
/// it (here: the resilience area moved) fails the reencryption digest, and
/// resume stops before touching a byte.
#[test]
fn tampered_metadata_fails_its_digest_and_nothing_is_written() {
    use rekey_luks::BlockIo;
    let img = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v cryptsetup")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(img, "cryptsetup is not installed: this test needs it (apt-get install cryptsetup-bin)");
    let dir = tempfile::tempdir().unwrap();
    let (p, k) = (dir.path().join("v.img"), dir.path().join("k"));
    std::fs::write(&k, b"pw").unwrap();
    std::fs::File::create(&p).unwrap().set_len(20 << 20).unwrap();
    let cs = |args: &[&str]| {
        let st = std::process::Command::new("cryptsetup").arg("-q").args(args).status().unwrap();
        assert!(st.success(), "cryptsetup {args:?}");
    };
    let fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k.to_str().unwrap(), p.to_str().unwrap()];
    cs(&[&["luksFormat", "--type", "luks2"][..], &fast].concat());
    cs(&[&["reencrypt", "--init-only"][..], &fast].concat());
    let mem = MemIo::from_bytes(std::fs::read(&p).unwrap());
    let mut v = Volume::open(&mem).unwrap();
    let rekey_luks::Header::Luks2(mut h) = v.header().clone() else { panic!("luks2") };
    let slot = *h.meta.keyslots.iter().find(|(_, k)| k.kind == "reencrypt").unwrap().0;
    h.meta.keyslots.get_mut(&slot).unwrap().area.size -= 4096;
    v.commit_luks2(h).unwrap();
    let before = mem.to_vec();
    let opts = ReencryptOptions { pbkdf: rekey_luks::PbkdfOptions::minimal(), ..Default::default() };
    let e = reencrypt::resume(Volume::open(&mem).unwrap(), b"pw", None, &opts, &|_, _| {}).unwrap_err();
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    assert!(mem.to_vec() == before, "a refused resume wrote to the device");
    let _ = mem.size();
}
