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
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&p).unwrap();
        // Detached-header seeds (a decrypt's data starts at offset 0) parse too.
        let (_, meta) = decode_copy(&CopyBytes { offset: 0, bytes }).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((name, meta));
    }
    assert!(out.len() >= 7, "seed corpus incomplete");
    out
}

#[test]
fn every_cryptsetup_seed_parses_with_its_progress() {
    for (name, meta) in seeds() {
        let st = reenc::parse(&meta).unwrap().unwrap_or_else(|| panic!("{name}: no state"));
        let k = Secret::new(vec![1; 64]);
        if name.contains("encrypt") {
            // Encryption with a data shift runs backward, with the first
            // segment moved: parsed, refused by name before any data moves.
            assert_eq!((st.mode, st.direction), (reenc::Mode::Encrypt, reenc::Direction::Backward), "{name}");
            assert!(matches!(st.resilience, reenc::Resilience::Datashift { shift: 16777216, .. }), "{name}");
            let e = st.progress(&meta, 400 << 20).unwrap_err();
            assert!(e.to_string().contains("backward"), "{name}: {e}");
            reenc::verification_data(&meta, &st, None, Some(&k)).unwrap();
            continue;
        }
        if name.contains("decrypt") {
            // Decryption (detached header) runs backward; its progress is
            // read by `reencrypt::encdec`, which the CLI tests drive.
            assert_eq!((st.mode, st.direction), (reenc::Mode::Decrypt, reenc::Direction::Backward), "{name}");
            assert!(st.digest_new.is_none(), "{name}");
            reenc::verification_data(&meta, &st, Some(&k), None).unwrap();
            continue;
        }
        let p = st.progress(&meta, 4 << 20).or_else(|_| st.progress(&meta, 400 << 20)).unwrap();
        assert_eq!(name.starts_with("hot-"), matches!(p, reenc::Progress::Hot { .. }), "{name}: {p:?}");
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

/// A device that keeps a base image untouched and records every write in an
/// overlay of 4 KiB pages, so each of thousands of trials starts from the
/// same bytes for free, and a trial can tell whether anything was written.
struct Overlay<'a> {
    base: &'a [u8],
    pages: std::sync::Mutex<std::collections::HashMap<u64, Vec<u8>>>,
    wrote: std::sync::atomic::AtomicBool,
}

const PAGE: u64 = 4096;

impl<'a> Overlay<'a> {
    fn new(base: &'a [u8]) -> Self {
        Overlay { base, pages: Default::default(), wrote: false.into() }
    }
    fn page(&self, n: u64) -> Vec<u8> {
        if let Some(p) = self.pages.lock().unwrap().get(&n) {
            return p.clone();
        }
        self.base[(n * PAGE) as usize..((n + 1) * PAGE) as usize].to_vec()
    }
    fn wrote(&self) -> bool {
        self.wrote.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl rekey_luks::BlockIo for Overlay<'_> {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.base.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset + buf.len() as u64 > self.base.len() as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let (n, inner) = (at / PAGE, (at % PAGE) as usize);
            let take = (PAGE as usize - inner).min(buf.len() - done);
            buf[done..done + take].copy_from_slice(&self.page(n)[inner..inner + take]);
            done += take;
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if offset + buf.len() as u64 > self.base.len() as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.wrote.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let (n, inner) = (at / PAGE, (at % PAGE) as usize);
            let take = (PAGE as usize - inner).min(buf.len() - done);
            let mut p = self.page(n);
            p[inner..inner + take].copy_from_slice(&buf[done..done + take]);
            self.pages.lock().unwrap().insert(n, p);
            done += take;
        }
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A small image (2 MiB of metadata, 256 KiB of data) holding cryptsetup's
/// own re-encryption state after `reencrypt --init-only` with `resilience`.
fn cryptsetup_init_image(resilience: &str) -> Vec<u8> {
    let ok = std::process::Command::new("sh").arg("-c").arg("command -v cryptsetup").status().is_ok_and(|s| s.success());
    assert!(ok, "cryptsetup is not installed: this test needs it (apt-get install cryptsetup-bin)");
    let dir = tempfile::tempdir().unwrap();
    let (p, k) = (dir.path().join("v.img"), dir.path().join("k"));
    std::fs::write(&k, b"pw").unwrap();
    std::fs::File::create(&p).unwrap().set_len((2 << 20) + (256 << 10)).unwrap();
    let cs = |args: &[&str]| {
        let out = std::process::Command::new("cryptsetup").arg("-q").args(args).output().unwrap();
        assert!(out.status.success(), "cryptsetup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k.to_str().unwrap(), p.to_str().unwrap()];
    cs(&[&["luksFormat", "--type", "luks2", "--luks2-keyslots-size", "1M", "--offset", "4096"][..], &fast].concat());
    cs(&[&["reencrypt", "--init-only", "--resilience", resilience][..], &fast].concat());
    std::fs::read(&p).unwrap()
}

/// Values a mutation puts in place of a JSON leaf: numbers and words the
/// parser gives meaning to, at and around their edges.
const VALUES: &[&str] = &[
    "0", "1", "-1", "511", "512", "4096", "65536", "1048576", "2097152", "2359296", "18446744073709551615",
    "18446744073709551616", "dynamic", "", "forward", "backward", "reencrypt", "encrypt", "decrypt", "checksum",
    "journal", "none", "datashift", "linear", "crypt", "backup-previous", "backup-final", "backup-moved-segment",
    "in-reencryption", "sha256", "sha1", "aes-xts-plain64", "cipher_null-ecb",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One structural change to the metadata: a leaf replaced (by a string, a
/// number, null or an empty array), a member removed, or a segment, keyslot
/// or digest duplicated under another number.
fn mutate(v: &mut Value, rng: &mut Rng) {
    fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    path.push(k.clone());
                    out.push(path.clone());
                    leaves(x, path, out);
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(i.to_string());
                    out.push(path.clone());
                    leaves(x, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
        path.iter().fold(v, |v, k| match v {
            Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
            _ => &mut v[k.as_str()],
        })
    }
    let mut paths = vec![];
    leaves(v, &mut vec![], &mut paths);
    // The metadata this engine reads: never salts, digests or AF settings,
    // whose changes only make an unlock fail.
    paths.retain(|p| p[0] != "tokens" && !p.iter().any(|k| k == "salt" || k == "digest" || k == "af" || k == "kdf"));
    let path = paths[rng.below(paths.len())].clone();
    match rng.below(6) {
        0 => {
            let (parent, last) = path.split_at(path.len() - 1);
            match at(v, parent) {
                Value::Object(m) => drop(m.remove(&last[0])),
                Value::Array(a) => drop(a.remove(last[0].parse::<usize>().unwrap())),
                _ => {}
            }
        }
        1 if path.len() == 2 => {
            let copy = at(v, &path).clone();
            let n = rng.below(8).to_string();
            at(v, &path[..1])[n.as_str()] = copy;
        }
        2 => *at(v, &path) = Value::from(rng.next() % 5000),
        3 => *at(v, &path) = if rng.below(2) == 0 { Value::Null } else { Value::Array(vec![]) },
        _ => *at(v, &path) = Value::from(VALUES[rng.below(VALUES.len())]),
    }
}

/// Thousands of deterministic structural mutations of cryptsetup's
/// re-encryption metadata, each written as a valid header and given to the
/// resume entry point: a refusal is one clear line, never a panic, and
/// leaves every byte of the device as it was.
#[test]
fn mutated_metadata_resume_refuses_without_writing() {
    use rekey_luks::luks2;
    let opts = ReencryptOptions { pbkdf: rekey_luks::PbkdfOptions::minimal(), threads: 1, ..Default::default() };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut refused, mut finished) = (0, 0);
    for resilience in ["checksum", "journal", "none"] {
        let base = cryptsetup_init_image(resilience);
        let rekey_luks::Header::Luks2(h) = Volume::open(MemIo::from_bytes(base.clone())).unwrap().header().clone() else {
            panic!("luks2")
        };
        for trial in 0..2500 {
            let mut v = serde_json::to_value(&h.meta).unwrap();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut v, &mut rng);
            }
            let shown = v.to_string();
            let Ok(meta) = serde_json::from_value::<Metadata>(v) else { continue };
            let mut next = luks2::Header { meta, ..h.clone() };
            let Ok((primary, secondary)) = next.encode_next() else { continue };
            let io = Overlay::new(&base);
            use rekey_luks::BlockIo;
            io.write_at(&primary, 0).unwrap();
            io.write_at(&secondary, h.hdr_size).unwrap();
            io.wrote.store(false, std::sync::atomic::Ordering::SeqCst);
            let what = format!("{resilience}/{trial}");
            let r = Volume::open(&io).and_then(|vol| reencrypt::resume(vol, b"pw", None, &opts, &|_, _| {}));
            match r {
                Err(e) => {
                    refused += 1;
                    let msg = e.to_string();
                    assert!(!msg.is_empty() && !msg.contains('\n'), "{what}: {msg:?}");
                    assert!(!io.wrote(), "{what}: refused ({msg}) after writing to the device; metadata: {shown}");
                }
                Ok(_) => finished += 1,
            }
        }
    }
    // Most mutations break something; some are harmless (a priority, an
    // unused number) and the re-encryption then simply finishes.
    assert!(refused > 1000 && finished > 0, "refused {refused}, finished {finished}");
}
