//! Images formatted by librbd itself (`rbd encryption format … luks2`):
//! librbd cannot change their passphrase; `rekey luks change-key` can, and
//! librbd, cryptsetup and the engine all agree on the result.

use crate::harness::*;

#[test]
fn change_key_then_reencrypt_on_a_librbd_formatted_luks2_image() {
    let conf = ceph_conf();
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    let new = dir.path().join("new");
    std::fs::write(&old, b"librbd-made passphrase").unwrap();
    std::fs::write(&new, b"rekey's new passphrase").unwrap();

    let img = TestImage::create(&conf, "librbd-luks", 64 * MIB);
    // librbd's own format: argon2id calibrated for ~2 s unlock, ~25 s to
    // format here; it offers no cheaper KDF setting in Ceph 16.
    rbd(&conf, &["encryption", "format", &img.path(), "luks2", s(&old)]).ok();

    // librbd writes plaintext through its own encryption ...
    let plain = data(1, 3 * MIB as usize);
    {
        let io = img.librbd_decrypted(b"librbd-made passphrase").expect("librbd loads its format");
        io.write_at(&plain, MIB).unwrap();
        io.flush().unwrap();
    }
    // ... and the engine reads it back.
    let out = dir.path().join("plain.out");
    rekey_luks(&conf, &["export", "-d", s(&old), &img.spec(), s(&out)]).ok();
    let exported = std::fs::read(&out).unwrap();
    assert_same(&exported[MIB as usize..4 * MIB as usize], &plain, "engine export of librbd data");

    // The rekey librbd cannot do.
    let mut args = vec!["change-key", "-d", s(&old), "--new-key-file", s(&new)];
    args.extend(CHEAP_KDF);
    let spec = img.spec();
    args.push(&spec);
    rekey_luks(&conf, &args).ok();

    // librbd: the new passphrase loads and decrypts the same data, the old one is refused.
    let io =
        img.librbd_decrypted(b"rekey's new passphrase").expect("librbd loads the new passphrase");
    assert_same(&read(&*io, MIB, plain.len()), &plain, "librbd read after change-key");
    drop(io);
    match img.librbd_decrypted(b"librbd-made passphrase") {
        Err(e) => assert!(e.to_string().contains("passphrase opens no keyslot"), "{e}"),
        Ok(_) => panic!("librbd still accepts the old passphrase after change-key"),
    }

    // cryptsetup on the exported raw image agrees.
    let raw = dir.path().join("raw.img");
    img.rbd_export(&raw);
    cryptsetup(&["luksDump", s(&raw)]).ok();
    assert!(cryptsetup_opens(&raw, &new), "cryptsetup rejects the new passphrase");
    assert!(!cryptsetup_opens(&raw, &old), "cryptsetup still accepts the old passphrase");

    // A new volume key too: re-encrypt in place, then librbd reads the same plaintext.
    let key_before = volume_key(&conf, &img, &new);
    let mut args = vec!["reencrypt", "-d", s(&new)];
    args.extend(CHEAP_KDF);
    args.push(&spec);
    rekey_luks(&conf, &args).ok();
    assert_ne!(volume_key(&conf, &img, &new), key_before, "reencrypt must change the volume key");
    let io = img.librbd_decrypted(b"rekey's new passphrase").expect("librbd loads after reencrypt");
    assert_same(&read(&*io, MIB, plain.len()), &plain, "librbd read after reencrypt");
    drop(io);
    rekey_luks(&conf, &["export", "-d", s(&new), &img.spec(), s(&out)]).ok();
    assert_same(&std::fs::read(&out).unwrap(), &exported, "engine export after reencrypt");
    img.rbd_export(&raw);
    assert!(cryptsetup_opens(&raw, &new), "cryptsetup rejects the re-encrypted image");
}

fn volume_key(conf: &std::path::Path, img: &TestImage, key: &std::path::Path) -> String {
    let r =
        rekey_luks(conf, &["dump", "--json", "--dump-volume-key", "-d", s(key), &img.spec()]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("dump --json");
    v["volume_key"].as_str().expect("volume_key in dump").to_owned()
}
