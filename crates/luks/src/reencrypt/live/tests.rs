//! Writers in threads keep writing versioned blocks while the volume is
//! re-encrypted under them; every block must end holding its last
//! acknowledged version, also when the storage "crashes" mid-way and the
//! re-encryption is resumed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::*;
use crate::testing::FaultIo;
use crate::{FormatOptions, MemIo, PbkdfOptions};

const BLOCK: usize = 4096;
const DATA: usize = 1 << 20;
const BLOCKS: usize = DATA / BLOCK;
const WRITERS: usize = 3;

/// Block `i` at version `v`: its number, its version and a checksum over
/// both, repeated, so a torn or misplaced block never verifies.
fn block(i: usize, v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    let sum = HashAlg::Sha256.digest(&[&(i as u64).to_be_bytes(), &v.to_be_bytes()]).unwrap();
    while out.len() < BLOCK {
        out.extend_from_slice(&(i as u64).to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
        out.extend_from_slice(&sum[..16]);
    }
    out.truncate(BLOCK);
    out
}

/// The version block `i` holds, if it is intact.
fn version_of(i: usize, buf: &[u8]) -> Option<u64> {
    let v = u64::from_be_bytes(buf[8..16].try_into().unwrap());
    (block(i, v) == buf).then_some(v)
}

fn formatted(sector: u32) -> (MemIo, Secret) {
    let io = MemIo::new((16 << 20) + DATA);
    let opts = FormatOptions { pbkdf: PbkdfOptions::minimal(), key_size_bits: 256, sector_size: sector, ..Default::default() };
    let v = Volume::format(&io, &opts, b"old", None).unwrap();
    let (_, vk) = v.unlock(b"old", None).unwrap();
    let d = v.decrypted(b"old").unwrap();
    for i in 0..BLOCKS {
        d.write_at(&block(i, 0), (i * BLOCK) as u64).unwrap();
    }
    (io, vk)
}

fn opts(resilience: ResilienceMode) -> ReencryptOptions {
    ReencryptOptions { pbkdf: PbkdfOptions::minimal(), hotzone: 64 << 10, threads: 2, resilience, ..Default::default() }
}

/// Per block: the last version whose write returned, the last one whose
/// write was followed by a returned flush, the last one sent.
struct Ledger {
    written: Vec<AtomicU64>,
    flushed: Vec<AtomicU64>,
    sent: Vec<AtomicU64>,
    failed: Vec<AtomicBool>,
    writes: AtomicUsize,
}

impl Ledger {
    fn new() -> Self {
        let z = || (0..BLOCKS).map(|_| AtomicU64::new(0)).collect();
        Ledger { written: z(), flushed: z(), sent: z(), failed: (0..BLOCKS).map(|_| AtomicBool::new(false)).collect(), writes: AtomicUsize::new(0) }
    }
}

/// Writer `w` owns blocks `i % WRITERS == w`, writes them in a scattered
/// order and flushes every few writes, until `stop` or an I/O error.
fn writer(io: &dyn BlockIo, ledger: &Ledger, w: usize, stop: &AtomicBool) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ w as u64;
    let mut pending = vec![];
    while !stop.load(Ordering::Relaxed) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed as usize % (BLOCKS / WRITERS)) * WRITERS + w;
        let v = ledger.sent[i].load(Ordering::SeqCst) + 1;
        ledger.sent[i].store(v, Ordering::SeqCst);
        if io.write_at(&block(i, v), (i * BLOCK) as u64).is_err() {
            ledger.failed[i].store(true, Ordering::SeqCst);
            return;
        }
        ledger.written[i].store(v, Ordering::SeqCst);
        ledger.writes.fetch_add(1, Ordering::SeqCst);
        pending.push((i, v));
        if pending.len() == 4 {
            if io.flush().is_err() {
                return;
            }
            for (i, v) in pending.drain(..) {
                ledger.flushed[i].store(v, Ordering::SeqCst);
            }
        }
    }
}

/// Reads random blocks while the others write: each must be intact and at
/// least at the version acknowledged before the read began.
fn reader(io: &dyn BlockIo, ledger: &Ledger, stop: &AtomicBool) {
    let mut seed = 0x1234_5678u64;
    let mut buf = vec![0u8; BLOCK];
    while !stop.load(Ordering::Relaxed) {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let i = (seed >> 33) as usize % BLOCKS;
        let floor = ledger.written[i].load(Ordering::SeqCst);
        if io.read_at(&mut buf, (i * BLOCK) as u64).is_err() {
            return;
        }
        let v = version_of(i, &buf).unwrap_or_else(|| panic!("block {i} read back torn or misplaced"));
        assert!(v >= floor, "block {i}: read version {v}, but {floor} was acknowledged before");
    }
}

fn online_rekey_under_writers(sector: u32, resilience: ResilienceMode) {
    let (mem, old_vk) = formatted(sector);
    let online = Online::start(Volume::open(&mem).unwrap(), OldKey::Passphrase(b"old"), b"new", &opts(resilience)).unwrap();
    let ledger = Ledger::new();
    let stop = AtomicBool::new(false);
    let during = std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (online, ledger, stop) = (&online, &ledger, &stop);
            s.spawn(move || writer(online, ledger, w, stop));
        }
        let (o, l, st) = (&online, &ledger, &stop);
        s.spawn(move || reader(o, l, st));
        // Give the writers time between hotzones, as a real consumer has.
        let report = online
            .run(64 << 10, 2, &|_, _| std::thread::sleep(std::time::Duration::from_millis(2)))
            .unwrap();
        assert_eq!(report.bytes, DATA as u64);
        let during = ledger.writes.load(Ordering::SeqCst);
        // A few more writes after the end, on the final layout.
        while ledger.writes.load(Ordering::SeqCst) < during + 50 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        during
    });
    assert!(during > 100, "only {during} writes happened during the re-encryption");
    assert!(online.finished());
    drop(online);

    let v = Volume::open(&mem).unwrap();
    assert!(!super::super::in_progress(&v));
    assert!(matches!(v.unlock(b"old", None), Err(Error::WrongPassphrase)));
    let (_, new_vk) = v.unlock(b"new", None).unwrap();
    assert_ne!(new_vk, old_vk);
    assert!(!v.verify_volume_key(&old_vk).unwrap(), "the old volume key must open nothing");
    let d = v.decrypted(b"new").unwrap();
    let mut buf = vec![0u8; BLOCK];
    for i in 0..BLOCKS {
        d.read_at(&mut buf, (i * BLOCK) as u64).unwrap();
        assert_eq!(version_of(i, &buf), Some(ledger.written[i].load(Ordering::SeqCst)), "block {i}");
    }
}

#[test]
fn writers_keep_going_during_online_rekey_checksum_512() {
    online_rekey_under_writers(512, ResilienceMode::Checksum);
}

#[test]
fn writers_keep_going_during_online_rekey_checksum_4096() {
    online_rekey_under_writers(4096, ResilienceMode::Checksum);
}

#[test]
fn writers_keep_going_during_online_rekey_journal() {
    online_rekey_under_writers(4096, ResilienceMode::Journal);
}

fn crash_and_resume(sector: u32, resilience: ResilienceMode) {
    let (base, old_vk) = formatted(sector);
    drop(Online::start(Volume::open(&base).unwrap(), OldKey::Passphrase(b"old"), b"new", &opts(resilience)).unwrap());
    let pristine = base.to_vec();
    // How many steps a whole run takes with the writers going, to spread
    // the crash points over it (the writers make it vary from run to run).
    let steps = {
        let mem = MemIo::from_bytes(pristine.clone());
        let io = FaultIo::counting(&mem);
        let (ledger, stop) = (Ledger::new(), AtomicBool::new(false));
        let online = Online::resume(Volume::open(&io).unwrap(), b"new", None).unwrap();
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (online, ledger, stop) = (&online, &ledger, &stop);
                s.spawn(move || writer(online, ledger, w, stop));
            }
            online.run(64 << 10, 1, &|_, _| std::thread::yield_now()).unwrap();
            stop.store(true, Ordering::SeqCst);
        });
        io.steps.load(Ordering::SeqCst)
    };
    // The writers make the step count vary, so a crash point may land
    // before the first hotzone or after the end: try more points than the
    // 20 mid-way crashes required, and stop once they have landed.
    let mut mid_way = 0;
    for k in 1..160 {
        if mid_way >= 24 {
            break;
        }
        let fail_at = steps * k / 160;
        let mem = MemIo::from_bytes(pristine.clone());
        let io = FaultIo::new(&mem, fail_at);
        let ledger = Ledger::new();
        let online = Online::resume(Volume::open(&io).unwrap(), b"new", None).unwrap();
        let stop = AtomicBool::new(false);
        let finished = std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (online, ledger, stop) = (&online, &ledger, &stop);
                s.spawn(move || writer(online, ledger, w, stop));
            }
            let r = online.run(64 << 10, 1, &|_, _| std::thread::yield_now());
            stop.store(true, Ordering::SeqCst);
            r.is_ok()
        });
        let done = online.progress().0;
        drop(online);
        if finished {
            continue;
        }
        // A writer's write may be the one that crashes after the final
        // header commit: then the run fails but nothing is left to resume.
        let left = super::super::in_progress(&Volume::open(&mem).unwrap());
        if done > 0 && left {
            mid_way += 1;
        }
        if left {
            // Restart: resume from what the header says, without writers.
            let online = Online::resume(Volume::open(&mem).unwrap(), b"new", None)
                .unwrap_or_else(|e| panic!("crash at step {fail_at}: resume failed: {e}"));
            online.run(64 << 10, 1, &|_, _| {}).unwrap();
            drop(online);
        }
        let v = Volume::open(&mem).unwrap();
        assert!(!super::super::in_progress(&v));
        assert!(!v.verify_volume_key(&old_vk).unwrap());
        let d = v.decrypted(b"new").unwrap();
        let mut buf = vec![0u8; BLOCK];
        for i in 0..BLOCKS {
            d.read_at(&mut buf, (i * BLOCK) as u64).unwrap();
            let (flushed, sent) = (ledger.flushed[i].load(Ordering::SeqCst), ledger.sent[i].load(Ordering::SeqCst));
            match version_of(i, &buf) {
                Some(v) => assert!(
                    (flushed..=sent).contains(&v),
                    "crash at step {fail_at}: block {i} holds version {v}, flushed {flushed}, sent {sent}"
                ),
                None => assert!(ledger.failed[i].load(Ordering::SeqCst), "crash at step {fail_at}: block {i} torn, but no write to it failed"),
            }
        }
    }
    assert!(mid_way >= 20, "only {mid_way} crashes landed mid-way");
}

#[test]
fn flushed_writes_survive_a_crash_during_online_rekey_checksum() {
    crash_and_resume(512, ResilienceMode::Checksum);
}

#[test]
fn flushed_writes_survive_a_crash_during_online_rekey_journal() {
    crash_and_resume(4096, ResilienceMode::Journal);
}

#[test]
fn online_rekey_refuses_resilience_none() {
    let (mem, _) = formatted(512);
    let e = Online::start(Volume::open(&mem).unwrap(), OldKey::Passphrase(b"old"), b"new", &opts(ResilienceMode::None)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[test]
fn requests_past_the_end_are_refused() {
    let (mem, _) = formatted(512);
    let online = Online::start(Volume::open(&mem).unwrap(), OldKey::Passphrase(b"old"), b"new", &opts(ResilienceMode::Checksum)).unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(online.read_at(&mut buf, DATA as u64 - 2048).is_err());
    assert!(online.write_at(&buf, u64::MAX - 10).is_err());
    online.read_at(&mut buf, DATA as u64 - 4096).unwrap();
}
