//! Bad input gets one clear line on stderr and exit 1 (2 = wrong passphrase).

use crate::harness::*;

fn one_line_error(r: &Run, code: i32) {
    assert_eq!(r.code, code, "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {:?}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn truncated_zeroed_and_garbage_images_fail_cleanly() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    let img = env.path("a.img");
    rekey(&["luks", "format", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--size", "20971520", "--key-file", s(&key), s(&img)]).ok();
    let full = std::fs::read(&img).unwrap();

    let zero = env.sparse("zero.img", 20 << 20);
    let trunc = env.path("trunc.img");
    std::fs::write(&trunc, &full[..3000]).unwrap();
    let trunc2 = env.path("trunc2.img");
    std::fs::write(&trunc2, &full[..20000]).unwrap();
    let garbage = env.path("garbage.img");
    let mut g: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    g[..6].copy_from_slice(b"LUKS\xba\xbe");
    std::fs::write(&garbage, &g).unwrap();
    let empty = env.path("empty.img");
    std::fs::write(&empty, b"").unwrap();

    for bad in [&zero, &trunc, &trunc2, &garbage, &empty] {
        let r = rekey(&["luks", "test-key", "--key-file", s(&key), s(bad)]);
        one_line_error(&r, 1);
        let r = rekey(&["luks", "dump", s(bad)]);
        one_line_error(&r, 1);
    }
    let r = rekey(&["luks", "dump", s(&env.path("missing.img"))]);
    one_line_error(&r, 1);
}

#[test]
fn wrong_passphrase_exits_2() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    let bad = env.key("b", b"nope");
    let img = env.path("a.img");
    rekey(&["luks", "format", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--size", "4194304", "--key-file", s(&key), s(&img)]).ok();
    for args in [
        vec!["luks", "test-key", "--key-file", s(&bad), s(&img)],
        vec!["luks", "remove-key", "--key-file", s(&bad), s(&img)],
        vec!["luks", "change-key", "--key-file", s(&bad), "--new-key-file", s(&key), s(&img)],
        vec!["luks", "add-key", "--key-file", s(&bad), "--new-key-file", s(&key), s(&img)],
    ] {
        one_line_error(&rekey(&args), 2);
    }
}

#[test]
fn bad_arguments_exit_1() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    let img = env.path("a.img");
    for args in [
        vec!["luks", "format", "--cipher", "serpent-xts-plain64", "--size", "20971520", "--key-file", s(&key), s(&img)],
        vec!["luks", "format", "--key-size", "384", "--size", "20971520", "--key-file", s(&key), s(&img)],
        vec!["luks", "format", "--sector-size", "1000", "--size", "20971520", "--key-file", s(&key), s(&img)],
        vec!["luks", "format", "--size", "1048576", "--key-file", s(&key), s(&img)],
        vec!["luks", "format", "--type", "luks1", "--pbkdf", "argon2id", "--size", "4194304", "--key-file", s(&key), s(&img)],
        vec!["luks", "format", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "10", "--size", "20971520", "--key-file", s(&key), s(&img)],
    ] {
        one_line_error(&rekey(&args), 1);
    }
    let r = rekey(&["luks", "frobnicate"]);
    assert_eq!(r.code, 1);
}

#[test]
fn last_keyslot_is_protected_without_batch_mode() {
    let env = Env::new();
    let key = env.key("k", b"pass");
    let img = env.path("a.img");
    rekey(&["luks", "format", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--size", "20971520", "--key-file", s(&key), s(&img)]).ok();
    one_line_error(&rekey(&["luks", "remove-key", "--key-file", s(&key), s(&img)]), 1);
    assert_eq!(we_open(&img, &key), Some(0));
    rekey(&["luks", "remove-key", "--batch-mode", "--key-file", s(&key), s(&img)]).ok();
    assert_eq!(we_open(&img, &key), None);
}
