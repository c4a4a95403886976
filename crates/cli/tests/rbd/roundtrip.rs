//! Plaintext in, re-encryption, plaintext out, all on an RBD image; and the
//! read-only snapshot form of the spec.

use crate::harness::*;

#[test]
fn import_reencrypt_export_on_rbd_keeps_the_plaintext() {
    let conf = ceph_conf();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"round trip").unwrap();
    let img = TestImage::create(&conf, "roundtrip", 48 * MIB);
    let spec = img.spec();

    let mut args = vec!["format", "-d", s(&key), "--sector-size", "4096"];
    args.extend(CHEAP_KDF);
    args.push(&spec);
    rekey_luks(&conf, &args).ok();
    let plain = data(2, 20 * MIB as usize + 4096);
    let input = dir.path().join("plain.in");
    std::fs::write(&input, &plain).unwrap();
    rekey_luks(&conf, &["import", "-d", s(&key), s(&input), &spec]).ok();

    let mut args = vec!["reencrypt", "-d", s(&key), "--hotzone-mib", "4"];
    args.extend(CHEAP_KDF);
    args.push(&spec);
    rekey_luks(&conf, &args).ok();

    let out = dir.path().join("plain.out");
    rekey_luks(&conf, &["export", "-d", s(&key), &spec, s(&out)]).ok();
    let exported = std::fs::read(&out).unwrap();
    assert_same(&exported[..plain.len()], &plain, "export after reencrypt");
    assert_eq!(exported.len() as u64, 48 * MIB - 16 * MIB, "export covers the whole data segment");

    // librbd's LUKS reads the engine's re-encrypted data too.
    let io = img.librbd_decrypted(b"round trip").expect("librbd loads the engine's header");
    assert_same(&read(&*io, 0, plain.len()), &plain, "librbd read after reencrypt");
}

#[test]
fn snapshot_specs_are_read_only() {
    let conf = ceph_conf();
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (dir.path().join("k1"), dir.path().join("k2"));
    std::fs::write(&k1, b"one").unwrap();
    std::fs::write(&k2, b"two").unwrap();
    let img = TestImage::create(&conf, "snapspec", 32 * MIB);
    let spec = img.spec();
    let mut args = vec!["format", "-d", s(&k1)];
    args.extend(CHEAP_KDF);
    args.push(&spec);
    rekey_luks(&conf, &args).ok();
    let plain = data(3, MIB as usize);
    let input = dir.path().join("in");
    std::fs::write(&input, &plain).unwrap();
    rekey_luks(&conf, &["import", "-d", s(&k1), s(&input), &spec]).ok();
    rbd(&conf, &["snap", "create", &format!("{}@before", img.path())]).ok();

    let at_snap = format!("{spec}@before");
    let mut args = vec!["change-key", "-d", s(&k1), "--new-key-file", s(&k2)];
    args.extend(CHEAP_KDF);
    args.push(&at_snap);
    let r = rekey_luks(&conf, &args);
    assert_eq!(r.code, 1, "change-key on a snapshot must fail: {}", r.stderr);
    assert!(r.stderr.contains("snapshot"), "error should say why: {}", r.stderr);

    // The image itself changes key; the snapshot keeps the old header.
    args.pop();
    args.push(&spec);
    rekey_luks(&conf, &args).ok();
    let out = dir.path().join("out");
    rekey_luks(&conf, &["export", "-d", s(&k1), &at_snap, s(&out)]).ok();
    assert_same(&std::fs::read(&out).unwrap()[..plain.len()], &plain, "export from the snapshot");
    let r = rekey_luks(&conf, &["test-key", "-d", s(&k1), &spec]);
    assert_eq!(r.code, 2, "the old key no longer opens the image: {}", r.stderr);
}
