//! Size flags take what people type: `--size 40M`, `--sector-size 4K`,
//! `--hotzone-size 1M` (beside `--hotzone-mib`), plain bytes everywhere.

use crate::harness::*;

const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

#[test]
fn format_takes_suffixed_sizes() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    let img = env.path("a.img");
    let mut a = vec!["luks", "format", "--type", "luks2", "--size", "40M", "--sector-size", "4K", "--key-file", s(&key)];
    a.extend(FAST);
    a.push(s(&img));
    rekey(&a).ok();
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 40 << 20);
    let dump = cryptsetup(&["luksDump", s(&img)]).ok();
    assert!(dump.stdout.contains("sector: 4096 [bytes]"), "{}", dump.stdout);

    let plain_bytes = env.path("b.img");
    let mut b = vec!["luks", "format", "--size", "20971520", "--key-file", s(&key)];
    b.extend(FAST);
    b.push(s(&plain_bytes));
    rekey(&b).ok();
    assert_eq!(std::fs::metadata(&plain_bytes).unwrap().len(), 20 << 20);
}

#[test]
fn bad_sizes_are_refused_naming_the_input() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    for bad in ["40X", "1.5G", "-4K", "99999999T"] {
        let img = env.path("bad.img");
        let flag = format!("--size={bad}");
        let r = rekey(&["luks", "format", &flag, "--key-file", s(&key), s(&img)]);
        assert_ne!(r.code, 0, "{bad}");
        assert!(r.stderr.contains(bad) && !r.stderr.contains("panicked"), "{bad}: {}", r.stderr);
        assert!(!img.exists(), "{bad}: nothing may be created");
    }
}

#[test]
fn reencrypt_takes_hotzone_size_beside_hotzone_mib() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    let img = env.path("a.img");
    let mut a = vec!["luks", "format", "--type", "luks2", "--size", "24M", "--key-file", s(&key)];
    a.extend(FAST);
    a.push(s(&img));
    rekey(&a).ok();
    let plain = env.path("plain");
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(&plain, &data).unwrap();
    rekey(&["luks", "import", "--key-file", s(&key), s(&plain), s(&img)]).ok();

    let mut r = vec!["luks", "reencrypt", "--hotzone-size", "1M", "--key-file", s(&key)];
    r.extend(FAST);
    r.push(s(&img));
    rekey(&r).ok();
    let out = env.path("out");
    rekey(&["luks", "export", "--threads", "2", "--key-file", s(&key), s(&img), s(&out)]).ok();
    assert!(std::fs::read(&out).unwrap()[..data.len()] == data[..]);

    let both = rekey(&["luks", "reencrypt", "--hotzone-size", "1M", "--hotzone-mib", "2", "--key-file", s(&key), s(&img)]);
    assert_ne!(both.code, 0, "the two spellings together are ambiguous");
}

#[test]
fn export_writes_every_byte_to_a_non_regular_output() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    let img = env.path("a.img");
    let mut a = vec!["luks", "format", "--type", "luks2", "--size", "24M", "--key-file", s(&key)];
    a.extend(FAST);
    a.push(s(&img));
    rekey(&a).ok();
    // /dev/null can be neither truncated nor fsynced; a pipe gets every
    // byte, zeros included, in order.
    rekey(&["luks", "export", "--key-file", s(&key), s(&img), "/dev/null"]).ok();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} luks export --threads 2 --key-file {} {} /dev/stdout | wc -c", env!("CARGO_BIN_EXE_rekey"), s(&key), s(&img)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (8u64 << 20).to_string());
}
