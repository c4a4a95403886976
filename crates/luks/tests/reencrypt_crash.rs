//! Fault injection for re-encryption: a crash (with the interrupted write
//! torn) at every write step, then resume; the plaintext must come out
//! identical and the volume must end under a new key.


use rekey_luks::testing::FaultIo;
use rekey_luks::reencrypt::{self, Format, ReencryptOptions, ResilienceMode};
use rekey_luks::{BlockIo, FormatOptions, MemIo, PbkdfOptions, Volume};

const DATA: usize = 1 << 20;

fn plaintext_of(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect()
}

fn formatted(sector: u32) -> (MemIo, rekey_luks::Secret) {
    formatted_of(sector, DATA)
}

fn formatted_of(sector: u32, data: usize) -> (MemIo, rekey_luks::Secret) {
    let io = MemIo::new((16 << 20) + data);
    let opts = FormatOptions { pbkdf: PbkdfOptions::minimal(), key_size_bits: 256, sector_size: sector, ..Default::default() };
    let v = Volume::format(&io, &opts, b"pw", None).unwrap();
    let (_, vk) = v.unlock(b"pw", None).unwrap();
    let d = v.decrypted(b"pw").unwrap();
    d.write_at(&plaintext_of(data), 0).unwrap();
    (io, vk)
}

fn opts() -> ReencryptOptions {
    ReencryptOptions { pbkdf: PbkdfOptions::minimal(), hotzone: 128 << 10, threads: 2, ..Default::default() }
}

fn run(sector: u32) {
    run_format(sector, Format::V2);
}

/// V1: the state an earlier build leaves (SHA-256 unit hashes, one hotzone
/// per record, two flushes per hotzone), resumed by this one.
fn run_format(sector: u32, format: Format) {
    run_with(sector, format, ResilienceMode::Checksum);
}

fn run_with(sector: u32, format: Format, resilience: ResilienceMode) {
    run_sized(sector, format, resilience, DATA, opts().hotzone);
}

fn run_sized(sector: u32, format: Format, resilience: ResilienceMode, data: usize, hotzone: u64) {
    let opts = || ReencryptOptions { format, resilience, hotzone, ..opts() };
    let (base, old_vk) = formatted_of(sector, data);
    let pristine = base.to_vec();
    let mut crashes = 0;
    for fail_at in 0.. {
        let mem = MemIo::from_bytes(pristine.clone());
        let io = FaultIo::new(&mem, fail_at);
        let done = reencrypt::reencrypt(Volume::open(&io).unwrap(), b"pw", None, &opts(), &|_, _| {}).is_ok();
        if !done {
            crashes += 1;
            let v = Volume::open(&mem).expect("header readable after crash");
            if reencrypt::in_progress(&v) {
                reencrypt::resume(v, b"pw", None, &opts(), &|_, _| {}).expect("resume after crash");
            } else if v.unlock(b"pw", None).unwrap().1 == old_vk {
                // Crashed before the start was committed: nothing changed yet.
                reencrypt::reencrypt(v, b"pw", None, &opts(), &|_, _| {}).unwrap();
            }
            // else: crashed after the last commit reached the disk; done.
        }
        let v = Volume::open(&mem).unwrap();
        assert!(!reencrypt::in_progress(&v));
        let (_, vk) = v.unlock(b"pw", None).unwrap();
        assert_ne!(vk, old_vk, "sector {sector}, crash at step {fail_at}: key must be new");
        let d = v.decrypted(b"pw").unwrap();
        let mut got = vec![0u8; data];
        d.read_at(&mut got, 0).unwrap();
        let first_bad = got.iter().zip(plaintext_of(data)).position(|(a, b)| *a != b);
        assert!(first_bad.is_none(), "sector {sector}, crash at step {fail_at}: plaintext differs from byte {first_bad:?}");
        if done {
            break;
        }
    }
    assert!(crashes > 30, "expected many write steps, saw {crashes}");
}

#[test]
fn reencrypt_survives_a_crash_at_every_write_512() {
    run(512);
}

#[test]
fn reencrypt_survives_a_crash_at_every_write_4096() {
    run(4096);
}

/// cryptsetup's format, in both resilience modes that survive a crash (with
/// `none`, as with cryptsetup, a crash mid-way loses data by design).
#[test]
fn cryptsetup_format_checksum_survives_a_crash_at_every_write_512() {
    run_with(512, Format::Cryptsetup, ResilienceMode::Checksum);
}

#[test]
fn cryptsetup_format_checksum_survives_a_crash_at_every_write_4096() {
    run_with(4096, Format::Cryptsetup, ResilienceMode::Checksum);
}

#[test]
fn cryptsetup_format_journal_survives_a_crash_at_every_write_512() {
    run_with(512, Format::Cryptsetup, ResilienceMode::Journal);
}

#[test]
fn cryptsetup_format_journal_survives_a_crash_at_every_write_4096() {
    run_with(4096, Format::Cryptsetup, ResilienceMode::Journal);
}

/// Hotzones of several pipeline chunks (1 MiB each; the last hotzone and
/// its last chunk short): a crash between two chunks of one hotzone leaves
/// it part new, part old, which the checksums must sort out.
#[test]
fn cryptsetup_format_checksum_multi_chunk_hotzones_survive_a_crash_at_every_write() {
    for sector in [512, 4096] {
        run_sized(sector, Format::Cryptsetup, ResilienceMode::Checksum, (3 << 20) + (1 << 19), 2 << 20);
    }
}

#[test]
fn v1_state_survives_a_crash_at_every_write_512() {
    run_format(512, Format::V1);
}

#[test]
fn v1_state_survives_a_crash_at_every_write_4096() {
    run_format(4096, Format::V1);
}

#[test]
fn half_done_volume_is_refused_by_normal_operations() {
    let (base, _) = formatted(512);
    let io = FaultIo::new(&base, 12);
    assert!(reencrypt::reencrypt(Volume::open(&io).unwrap(), b"pw", None, &opts(), &|_, _| {}).is_err());
    let v = Volume::open(&base).unwrap();
    assert!(reencrypt::in_progress(&v));
    let err = v.unlock(b"pw", None).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

