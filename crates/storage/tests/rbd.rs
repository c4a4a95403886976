//! The conformance suite and RBD-only properties, on a real Ceph cluster.
//!
//! Needs `--features rbd` and a running cluster: `scripts/ceph.sh install &&
//! scripts/ceph.sh start`, then `CEPH_CONF=... cargo nextest run -p
//! rekey-storage --features rbd`. Without CEPH_CONF, or with an unreachable
//! cluster, these tests fail saying so.
#![cfg(feature = "rbd")]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use rekey_storage::{
    open_rbd_spec, Backend, BackendConfig, CloneKind, ErrorKind, RbdBackend, RbdConfig,
};

const POOL: &str = "rbd";

fn rbd_config() -> RbdConfig {
    let conf = std::env::var("CEPH_CONF").unwrap_or_else(|_| {
        panic!(
            "CEPH_CONF is not set: the RBD tests need a running Ceph cluster \
             (scripts/ceph.sh install && scripts/ceph.sh start, then export the CEPH_CONF it prints)"
        )
    });
    let mut config = RbdConfig::new(POOL);
    config.ceph_conf = Some(conf.into());
    config.connect_timeout_secs = 10;
    config
}

fn connect(config: &RbdConfig) -> RbdBackend {
    RbdBackend::connect(config).unwrap_or_else(|e| {
        panic!("cannot reach the Ceph cluster of CEPH_CONF (pool {POOL}); is scripts/ceph.sh start running? {e}")
    })
}

fn rbd_backend() -> Box<dyn Backend> {
    Box::new(connect(&rbd_config()))
}

conformance_tests!(rbd_backend);

fn full_copy_backend() -> RbdBackend {
    let mut config = rbd_config();
    config.full_copy_clones = true;
    connect(&config)
}

#[test]
fn clone_is_copy_on_write_and_shares_the_parent() {
    let b = connect(&rbd_config());
    let mut c = Cleanup::new(&b);
    let (src, dst) = (c.vol(), c.vol());
    b.create(&src, 8 * MIB).unwrap();
    write_pattern(&*b.open(&src).unwrap(), 1, 0, 8 * MIB as usize);
    assert_eq!(b.clone_volume(&src, &dst).unwrap(), CloneKind::CowClone);
    assert_eq!(b.parent_of(&dst).unwrap(), Some(format!("{POOL}/volume-{src}@clone-{dst}")));
    assert_eq!(b.parent_of(&src).unwrap(), None);
    // The clone reads the parent's data through the snapshot.
    assert!(read_all(&*b.open(&dst).unwrap()) == pattern(1, 0, 8 * MIB as usize));
    // Deleting the clone removes the snapshot it was made from.
    b.delete(&dst).unwrap();
    let src_io =
        open_rbd_spec(&format!("rbd:{POOL}/volume-{src}@clone-{dst}"), b_conf().as_deref(), None);
    assert!(src_io.is_err(), "the clone snapshot must go with the clone");
}

fn b_conf() -> Option<std::path::PathBuf> {
    rbd_config().ceph_conf
}

#[test]
fn deleting_a_cow_parent_flattens_its_clones() {
    let b = connect(&rbd_config());
    let mut c = Cleanup::new(&b);
    let (src, dst) = (c.vol(), c.vol());
    b.create(&src, 4 * MIB).unwrap();
    write_pattern(&*b.open(&src).unwrap(), 2, 0, 4 * MIB as usize);
    assert_eq!(b.clone_volume(&src, &dst).unwrap(), CloneKind::CowClone);
    b.delete(&src).unwrap();
    assert_eq!(b.parent_of(&dst).unwrap(), None, "the clone must be flattened");
    assert!(read_all(&*b.open(&dst).unwrap()) == pattern(2, 0, 4 * MIB as usize));
}

#[test]
fn clone_from_snapshot_is_copy_on_write() {
    let b = connect(&rbd_config());
    let mut c = Cleanup::new(&b);
    let (vol, dst) = (c.vol(), c.vol());
    let snap = c.snap();
    b.create(&vol, 4 * MIB).unwrap();
    b.create_snapshot(&vol, &snap).unwrap();
    assert_eq!(b.clone_from_snapshot(&snap, &dst).unwrap(), CloneKind::CowClone);
    assert_eq!(b.parent_of(&dst).unwrap(), Some(format!("{POOL}/volume-{vol}@snapshot-{snap}")));
    b.delete_snapshot(&snap).unwrap();
    assert_eq!(b.parent_of(&dst).unwrap(), None, "deleting the snapshot must flatten its clone");
}

#[test]
fn full_copy_mode_copies() {
    let b = full_copy_backend();
    let kind = common::clone_is_equal_and_independent(&b);
    assert_eq!(kind, CloneKind::FullCopy);
    let mut c = Cleanup::new(&b);
    let (src, dst) = (c.vol(), c.vol());
    b.create(&src, MIB).unwrap();
    b.clone_volume(&src, &dst).unwrap();
    assert_eq!(b.parent_of(&dst).unwrap(), None);
    assert!(b.describe().contains("full-copy"));
}

#[test]
fn interrupted_clone_leftovers_are_cleaned() {
    // A crash after rbd_clone3/rbd_copy3 but before the rename leaves
    // volume-<id>.tmp: it must not show as a volume, and a retry or a delete
    // of that id removes it.
    let b = connect(&rbd_config());
    let mut c = Cleanup::new(&b);
    let (src, dst) = (c.vol(), c.vol());
    b.create(&src, MIB).unwrap();
    // Make a leftover by hand with the rbd CLI.
    let status = std::process::Command::new("rbd")
        .args(["create", "--size", "1M", &format!("{POOL}/volume-{dst}.tmp")])
        .status()
        .expect("the rbd CLI (ceph-common) is needed for this test");
    assert!(status.success());
    assert!(!b.exists(&dst).unwrap());
    assert!(!b.list().unwrap().contains(&dst));
    write_pattern(&*b.open(&src).unwrap(), 3, 0, 4096);
    b.clone_volume(&src, &dst).unwrap();
    assert_eq!(read(&*b.open(&dst).unwrap(), 0, 4096), pattern(3, 0, 4096));
}

#[test]
fn open_rbd_spec_reads_and_writes_images_and_snapshots() {
    let b = connect(&rbd_config());
    let mut c = Cleanup::new(&b);
    let vol = c.vol();
    let snap = c.snap();
    b.create(&vol, MIB).unwrap();
    let io = open_rbd_spec(&format!("rbd:{POOL}/volume-{vol}"), b_conf().as_deref(), Some("admin"))
        .unwrap();
    write_pattern(&*io, 4, 512, 4096);
    io.flush().unwrap();
    b.create_snapshot(&vol, &snap).unwrap();
    let sio = open_rbd_spec(
        &format!("rbd:{POOL}/volume-{vol}@snapshot-{snap}"),
        b_conf().as_deref(),
        None,
    )
    .unwrap();
    assert_eq!(read(&*sio, 512, 4096), pattern(4, 512, 4096));
    assert_eq!(
        sio.write_at(&[0u8; 512], 0).unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    let err = open_rbd_spec(&format!("rbd:{POOL}/no-such-image"), b_conf().as_deref(), None)
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = open_rbd_spec("rbd:nopool", b_conf().as_deref(), None).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn missing_pool_is_a_clear_error() {
    let mut config = rbd_config();
    config.pool = "no-such-pool".into();
    let err = RbdBackend::connect(&config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("no-such-pool"), "{err}");
}

#[test]
fn open_backend_selects_rbd() {
    let config: BackendConfig = serde_json::from_value(serde_json::json!({
        "type": "rbd", "pool": POOL, "ceph_conf": rbd_config().ceph_conf,
    }))
    .unwrap();
    let b = rekey_storage::open_backend(&config).unwrap();
    assert!(b.describe().starts_with("rbd backend: pool rbd"), "{}", b.describe());
    assert!(b.location("abc").unwrap() == "rbd:rbd/volume-abc");
}

/// A ceph.conf naming a monitor port nobody listens on: connecting must fail
/// as `Unavailable` after about the configured timeout, not hang.
#[test]
fn unreachable_cluster_fails_within_the_timeout() {
    let real = rbd_config().ceph_conf.unwrap();
    let keyring = std::fs::read_to_string(&real)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("keyring = ").map(str::to_owned))
        .expect("keyring line in ceph.conf");
    // Bind and drop a listener to find a port that is closed now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut conf = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        conf,
        "[global]\nmon host = v1:127.0.0.1:{port}\nkeyring = {keyring}\nlog file = /dev/null"
    )
    .unwrap();
    let mut config = RbdConfig::new(POOL);
    config.ceph_conf = Some(conf.path().to_path_buf());
    config.connect_timeout_secs = 3;
    let start = Instant::now();
    let err = RbdBackend::connect(&config).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // Generous bound: this guards against hanging, it is not a benchmark.
    assert!(took < Duration::from_secs(30), "connect took {took:?} with a 3 s timeout");
    eprintln!("unreachable cluster reported after {took:?}: {err}");
}

/// A client that holds an image's exclusive lock (it wrote) and is then
/// fenced by another: the other client takes the lock and writes, and from
/// then on every write of the fenced client fails and changes nothing.
/// Without the fence the lock and the watch of a client that died stay until
/// the OSDs time the watch out.
///
/// The order is Ceph's guarantee: the blocklist reaches an OSD with the next
/// op that carries the new map, which the fencing client's first op (taking
/// the lock) does. A write the fenced client sends before that may still land
/// — CI's loaded runs showed it — and is overwritten by the new owner.
#[test]
fn a_fenced_client_loses_its_lock_and_can_no_longer_write() {
    let config = rbd_config();
    let (holder, other) = (connect(&config), connect(&config));
    let mut c = Cleanup::new(&other);
    let id = c.vol();
    other.create(&id, 4 * MIB).unwrap();
    let held = holder.open(&id).unwrap();
    write_pattern(&*held, 1, 0, MIB as usize);
    held.flush().unwrap();
    let session = holder.session().expect("an RBD client has a session");
    assert_ne!(Some(&session), other.session().as_ref(), "two connections, one session");
    other.fence(&session).unwrap();
    let io = other.open(&id).unwrap();
    write_pattern(&*io, 3, 0, MIB as usize);
    io.flush().unwrap();
    assert!(
        held.write_at(&pattern(2, 0, 4096), 0).and_then(|()| held.flush()).is_err(),
        "the fenced client still writes after the new owner took the lock"
    );
    assert_eq!(read(&*io, 0, MIB as usize), pattern(3, 0, MIB as usize));
    drop(io);
    drop(held);
}

/// The asynchronous data path: one call larger than the in-flight window
/// (16 requests of 4 MiB), starting and ending off object boundaries, lands
/// every byte where it belongs; a reader and a writer on one handle run at
/// once without mixing their buffers; a read or write past the end fails
/// cleanly and changes nothing.
#[test]
fn async_io_spans_many_objects_and_overlaps_threads() {
    let b = connect(&rbd_config());
    let mut c = Cleanup::new(&b);
    let vol = c.vol();
    let size = 80 * MIB;
    b.create(&vol, size).unwrap();
    let io: std::sync::Arc<dyn rekey_storage::BlockIo> = b.open(&vol).unwrap().into();
    let (off, len) = (3 * MIB + 4096 + 512, 71 * MIB as usize + 1536);
    write_pattern(&*io, 7, off, len);
    io.flush().unwrap();
    assert_eq!(read(&*io, off, len), pattern(7, off, len));
    assert_eq!(read(&*io, 0, 4096), vec![0u8; 4096], "bytes before the write untouched");

    // The second half is rewritten while the first is read, repeatedly.
    let half = 40 * MIB;
    std::thread::scope(|s| {
        let r = s.spawn(|| {
            for _ in 0..3 {
                let got = read(&*io, 0, half as usize);
                assert_eq!(&got[off as usize..], &pattern(7, off, (half - off) as usize)[..]);
            }
        });
        for seed in 8..11u8 {
            write_pattern(&*io, seed, half, half as usize);
            io.flush().unwrap();
        }
        r.join().unwrap();
    });
    assert_eq!(read(&*io, half, half as usize), pattern(10, half, half as usize));

    let mut buf = vec![0u8; 8 * MIB as usize];
    let e = io.read_at(&mut buf, size - 4 * MIB).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    let e = io.write_at(&buf, size - 4 * MIB).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WriteZero, "{e}");
    assert_eq!(read(&*io, size - 4 * MIB, 4 * MIB as usize), pattern(10, size - 4 * MIB, 4 * MIB as usize));
}
