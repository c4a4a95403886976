//! Recovery tools against cryptsetup 2.6: header backup files interchangeable
//! both ways, and a raw volume key (from `cryptsetup luksDump
//! --dump-volume-key`) that opens, exports and regains a passphrase.

use crate::harness::*;

const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

fn formatted(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = env.key("k", b"the passphrase");
    let img = env.sparse("v.img", 24 << 20);
    let mut args = vec!["luksFormat", "--type", "luks2", "--key-file", s(&key)];
    args.extend(FAST);
    args.push(s(&img));
    cryptsetup(&args).ok();
    (img, key)
}

fn wipe_header(img: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&vec![0u8; 16 << 20], 0).unwrap();
}

#[test]
fn header_backup_files_are_interchangeable_with_cryptsetup() {
    let env = Env::new();
    let (img, key) = formatted(&env);
    let ours = env.path("ours.hdr");
    let theirs = env.path("theirs.hdr");
    rekey(&["luks", "header-backup", "--header-backup-file", s(&ours), s(&img)]).ok();
    cryptsetup(&["luksHeaderBackup", "--header-backup-file", s(&theirs), s(&img)]).ok();
    assert!(std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(), "backup files differ");
    // An existing file is never overwritten.
    assert_eq!(rekey(&["luks", "header-backup", "--header-backup-file", s(&ours), s(&img)]).code, 1);

    // Ours restored by cryptsetup.
    wipe_header(&img);
    assert!(!cs_opens_quiet(&img, &key));
    cryptsetup(&["luksHeaderRestore", "--header-backup-file", s(&ours), s(&img)]).ok();
    assert!(cs_opens(&img, &key, None));

    // cryptsetup's restored by ours.
    wipe_header(&img);
    rekey(&["luks", "header-restore", "--header-backup-file", s(&theirs), s(&img)]).ok();
    assert!(cs_opens(&img, &key, None));
    assert!(we_open(&img, &key).is_some());

    // Over a different volume only with --batch-mode.
    let other = env.sparse("o.img", 24 << 20);
    let mut args = vec!["luksFormat", "--type", "luks2", "--key-file", s(&key)];
    args.extend(FAST);
    args.push(s(&other));
    cryptsetup(&args).ok();
    let r = rekey(&["luks", "header-restore", "--header-backup-file", s(&theirs), s(&other)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--batch-mode"), "{}", r.stderr);
    rekey(&["luks", "header-restore", "--batch-mode", "--header-backup-file", s(&theirs), s(&other)]).ok();
    assert_eq!(cryptsetup(&["luksUUID", s(&other)]).ok().stdout, cryptsetup(&["luksUUID", s(&img)]).ok().stdout);

    // Not a header: a clear error, nothing written.
    let junk = env.key("junk", &[7u8; 8192]);
    let before = std::fs::read(&img).unwrap();
    let r = rekey(&["luks", "header-restore", "--batch-mode", "--header-backup-file", s(&junk), s(&img)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a LUKS header backup"), "{}", r.stderr);
    assert!(std::fs::read(&img).unwrap() == before);
}

fn cs_opens_quiet(img: &std::path::Path, key: &std::path::Path) -> bool {
    cryptsetup(&["open", "--test-passphrase", "--key-file", s(key), s(img)]).code == 0
}

fn hex_to_bytes(h: &str) -> Vec<u8> {
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn volume_key_file_opens_exports_and_regains_a_passphrase() {
    let env = Env::new();
    let (img, key) = formatted(&env);
    let plain: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + i / 4096) as u8).collect();
    let p = env.path("plain");
    std::fs::write(&p, &plain).unwrap();
    rekey(&["luks", "import", "--key-file", s(&key), s(&p), s(&img)]).ok();
    let vk = env.key("vk", &hex_to_bytes(&cryptsetup_volume_key(&img, &key)));

    rekey(&["luks", "test-key", "--volume-key-file", s(&vk), s(&img)]).ok();
    let out = env.path("out");
    rekey(&["luks", "export", "--volume-key-file", s(&vk), s(&img), s(&out)]).ok();
    assert!(std::fs::read(&out).unwrap()[..plain.len()] == plain[..]);

    let p2 = env.path("plain2");
    std::fs::write(&p2, &plain[..4096]).unwrap();
    rekey(&["luks", "import", "--volume-key-file", s(&vk), s(&p2), s(&img)]).ok();

    // The key manager is gone: the volume key gives a passphrase back.
    let new = env.key("new", b"regained");
    let mut args = vec!["luks", "add-key", "--volume-key-file", s(&vk), "--new-key-file", s(&new)];
    args.extend(FAST);
    args.push(s(&img));
    rekey(&args).ok();
    assert!(cs_opens(&img, &new, None));

    // A key that does not match the digest: exit 2, like a wrong passphrase.
    let mut wrong = hex_to_bytes(&cryptsetup_volume_key(&img, &key));
    wrong[0] ^= 1;
    let wrong = env.key("wrong", &wrong);
    for cmd in [
        vec!["luks", "test-key", "--volume-key-file", s(&wrong), s(&img)],
        vec!["luks", "export", "--volume-key-file", s(&wrong), s(&img), s(&out)],
        vec!["luks", "reencrypt", "--volume-key-file", s(&wrong), "--new-key-file", s(&new), s(&img)],
        vec!["luks", "add-key", "--volume-key-file", s(&wrong), "--new-key-file", s(&new), s(&img)],
    ] {
        let r = rekey(&cmd);
        assert_eq!(r.code, 2, "{cmd:?}: {}", r.stderr);
        assert!(r.stderr.contains("does not match"), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }

    // Re-encryption unlocked by the volume key alone: the new key's only
    // passphrase is the new one.
    let before = cryptsetup_volume_key(&img, &key);
    let third = env.key("third", b"after the rekey");
    let mut args = vec!["luks", "reencrypt", "--volume-key-file", s(&vk), "--new-key-file", s(&third)];
    args.extend(FAST);
    args.push(s(&img));
    rekey(&args).ok();
    assert!(cs_opens(&img, &third, None));
    assert!(!cs_opens(&img, &key, None) && !cs_opens(&img, &new, None), "old keyslots must be gone");
    assert_ne!(cryptsetup_volume_key(&img, &third), before);
    rekey(&["luks", "export", "--key-file", s(&third), s(&img), s(&out)]).ok();
    assert!(std::fs::read(&out).unwrap()[..plain.len()] == plain[..]);
}

/// `uuid` and `config` change what cryptsetup reads back, and a token
/// cryptsetup imported survives every operation that rewrites the header.
#[test]
fn uuid_config_and_tokens_survive_every_header_rewrite() {
    let env = Env::new();
    let (img, key) = formatted(&env);
    let token = env.key("t.json", br#"{"type":"rekey-test","keyslots":[],"key_description":"kept across rewrites","n":[1,2,3]}"#);
    cryptsetup(&["token", "import", "--json-file", s(&token), "--token-id", "0", s(&img)]).ok();
    let exported = |what: &str| -> serde_json::Value {
        let r = cryptsetup(&["token", "export", "--token-id", "0", s(&img)]);
        assert_eq!(r.code, 0, "{what}: token gone: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let original = exported("import");

    let uuid = "0b9e4b39-57e8-4e2b-9b0a-3f6c1d2e9a11";
    rekey(&["luks", "uuid", "--uuid", uuid, s(&img)]).ok();
    assert_eq!(cryptsetup(&["luksUUID", s(&img)]).ok().stdout.trim(), uuid);
    assert_eq!(rekey(&["luks", "uuid", s(&img)]).ok().stdout.trim(), uuid);
    assert_eq!(exported("uuid"), original);

    rekey(&["luks", "config", "--label", "data-7", "--subsystem", "rekey", s(&img)]).ok();
    let dump = cryptsetup(&["luksDump", s(&img)]).ok().stdout;
    assert!(dump.contains("data-7") && dump.contains("rekey"), "{dump}");
    assert_eq!(exported("config"), original);
    assert_eq!(rekey(&["luks", "config", "--label", &"x".repeat(48), s(&img)]).code, 1);

    let new = env.key("n", b"second");
    let mut args = vec!["luks", "add-key", "--key-file", s(&key), "--new-key-file", s(&new)];
    args.extend(FAST);
    args.push(s(&img));
    rekey(&args).ok();
    assert_eq!(exported("add-key"), original);

    let mut args = vec!["luks", "reencrypt", "--key-file", s(&key)];
    args.extend(FAST);
    args.push(s(&img));
    rekey(&args).ok();
    assert_eq!(exported("reencrypt"), original);

    let b = env.path("b.hdr");
    rekey(&["luks", "header-backup", "--header-backup-file", s(&b), s(&img)]).ok();
    wipe_header(&img);
    rekey(&["luks", "header-restore", "--header-backup-file", s(&b), s(&img)]).ok();
    assert_eq!(exported("header-restore"), original);
    assert!(cs_opens(&img, &key, None));
}
