//! Fault injection: change-key is interrupted at every write step (with the
//! interrupted write torn in half) and the image must always open with the
//! old or the new passphrase.


use rekey_luks::testing::FaultIo;
use rekey_luks::{FormatOptions, MemIo, PbkdfOptions, Version, Volume};

fn run(version: Version) {
    let opts = FormatOptions { version, pbkdf: PbkdfOptions::minimal(), key_size_bits: 256, ..Default::default() };
    let base = MemIo::new(20 << 20);
    let vk = Volume::format(&base, &opts, b"old passphrase", None).unwrap().unlock(b"old passphrase", None).unwrap().1;
    let pristine = base.to_vec();
    let mut crashes = 0;
    for fail_at in 0.. {
        let mem = MemIo::from_bytes(pristine.clone());
        let io = FaultIo::new(&mem, fail_at);
        let mut v = Volume::open(&io).unwrap();
        let done = v.change_key(b"old passphrase", b"new passphrase", None, &PbkdfOptions::minimal()).is_ok();
        let after = Volume::open(&mem).expect("header must stay readable after a crash");
        let old = after.unlock(b"old passphrase", None).ok();
        let new = after.unlock(b"new passphrase", None).ok();
        assert!(old.is_some() || new.is_some(), "{version:?}: crash at step {fail_at} locked the volume");
        for (_, k) in old.iter().chain(new.iter()) {
            assert_eq!(k, &vk, "volume key must never change");
        }
        if done {
            assert!(old.is_none() && new.is_some(), "{version:?}: finished change-key must leave only the new passphrase");
            break;
        }
        crashes += 1;
    }
    assert!(crashes >= 8, "{version:?}: expected at least 8 write steps, saw {crashes}");
}

#[test]
fn luks2_change_key_survives_a_crash_at_every_write() {
    run(Version::Luks2);
}

#[test]
fn luks1_change_key_survives_a_crash_at_every_write() {
    run(Version::Luks1);
}
