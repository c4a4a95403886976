//! The backend conformance suite: every case takes `&dyn Backend` and fresh
//! ids, so the same cases run against every backend (file always, RBD with
//! `--features rbd`). `conformance_tests!(make)` expands to one `#[test]` per
//! case, `make()` returning the backend under test.
#![allow(dead_code)]

use std::io;

use rekey_storage::{Backend, BlockIo, CloneKind, ErrorKind};

pub const MIB: u64 = 1 << 20;

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Deterministic, position-dependent bytes so misplaced data shows.
pub fn pattern(seed: u8, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (offset + i).wrapping_mul(2654435761).rotate_left(seed as u32 % 61);
            (x as u8) ^ seed ^ ((x >> 13) as u8)
        })
        .collect()
}

pub fn write_pattern(io: &dyn BlockIo, seed: u8, offset: u64, len: usize) {
    io.write_at(&pattern(seed, offset, len), offset).expect("write_at");
}

pub fn read(io: &dyn BlockIo, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    io.read_at(&mut buf, offset).expect("read_at");
    buf
}

pub fn read_all(io: &dyn BlockIo) -> Vec<u8> {
    let size = io.size().expect("size");
    read(io, 0, size as usize)
}

pub fn assert_kind<T: std::fmt::Debug>(r: rekey_storage::Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected {kind:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong kind for error: {e}"),
    }
}

/// Deletes whatever a case left behind; failures are ignored because the case
/// itself may have deleted things already.
pub struct Cleanup<'a> {
    pub backend: &'a dyn Backend,
    pub snapshots: Vec<String>,
    pub volumes: Vec<String>,
}

impl<'a> Cleanup<'a> {
    pub fn new(backend: &'a dyn Backend) -> Self {
        Cleanup { backend, snapshots: Vec::new(), volumes: Vec::new() }
    }
    pub fn vol(&mut self) -> String {
        let id = new_id();
        self.volumes.push(id.clone());
        id
    }
    pub fn snap(&mut self) -> String {
        let id = new_id();
        self.snapshots.push(id.clone());
        id
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for s in &self.snapshots {
            let _ = self.backend.delete_snapshot(s);
        }
        // Clones were made after their sources: delete newest first.
        for v in self.volumes.iter().rev() {
            let _ = self.backend.delete(v);
        }
    }
}

pub fn create_size_read_write(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let id = c.vol();
    assert!(!b.exists(&id).unwrap());
    b.create(&id, 4 * MIB).unwrap();
    assert!(b.exists(&id).unwrap());
    assert_eq!(b.size(&id).unwrap(), 4 * MIB);
    assert!(b.list().unwrap().contains(&id), "list must contain the new volume");
    assert!(b.location(&id).unwrap().contains(&format!("volume-{id}")));

    let io = b.open(&id).unwrap();
    assert_eq!(io.size().unwrap(), 4 * MIB);
    assert_eq!(read(&*io, 0, 8192), vec![0u8; 8192], "a new volume reads as zeros");
    write_pattern(&*io, 1, 0, 4096);
    write_pattern(&*io, 2, 3 * MIB + 512, 70_000);
    io.flush().unwrap();
    drop(io);

    let io = b.open(&id).unwrap();
    assert_eq!(read(&*io, 0, 4096), pattern(1, 0, 4096));
    assert_eq!(read(&*io, 3 * MIB + 512, 70_000), pattern(2, 3 * MIB + 512, 70_000));
    assert_eq!(read(&*io, MIB, 4096), vec![0u8; 4096]);
    let mut past_end = [0u8; 1024];
    assert!(io.read_at(&mut past_end, 4 * MIB - 512).is_err(), "a read past the end must fail");
}

pub fn create_rejects_bad_sizes_and_duplicates(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let id = c.vol();
    assert_kind(b.create(&id, 0), ErrorKind::InvalidArgument, "size 0");
    assert_kind(b.create(&id, 1000), ErrorKind::InvalidArgument, "size not a multiple of 512");
    assert!(!b.exists(&id).unwrap(), "a refused create must leave nothing");
    b.create(&id, MIB).unwrap();
    assert_kind(b.create(&id, 2 * MIB), ErrorKind::AlreadyExists, "create twice");
    assert_eq!(b.size(&id).unwrap(), MIB, "a refused create must not touch the existing volume");
}

pub fn extend_keeps_data(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let id = c.vol();
    b.create(&id, MIB).unwrap();
    write_pattern(&*b.open(&id).unwrap(), 3, 0, MIB as usize);
    b.extend(&id, 3 * MIB).unwrap();
    assert_eq!(b.size(&id).unwrap(), 3 * MIB);
    let io = b.open(&id).unwrap();
    assert_eq!(io.size().unwrap(), 3 * MIB);
    assert_eq!(read(&*io, 0, MIB as usize), pattern(3, 0, MIB as usize));
    assert_eq!(read(&*io, MIB, 2 * MIB as usize), vec![0u8; 2 * MIB as usize]);
    b.extend(&id, 3 * MIB).unwrap();
    assert_kind(b.extend(&id, 2 * MIB), ErrorKind::InvalidArgument, "shrink");
    assert_kind(b.extend(&id, 3 * MIB + 7), ErrorKind::InvalidArgument, "unaligned size");
    assert_eq!(b.size(&id).unwrap(), 3 * MIB);
}

pub fn delete_removes(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let id = c.vol();
    b.create(&id, MIB).unwrap();
    b.delete(&id).unwrap();
    assert!(!b.exists(&id).unwrap());
    assert!(!b.list().unwrap().contains(&id));
    assert_kind(b.open(&id).map(|_| ()), ErrorKind::NotFound, "open deleted");
    assert_kind(b.delete(&id), ErrorKind::NotFound, "delete twice");
    // The id is free again.
    b.create(&id, MIB).unwrap();
    assert_eq!(read(&*b.open(&id).unwrap(), 0, 4096), vec![0u8; 4096]);
}

pub fn clone_is_equal_and_independent(b: &dyn Backend) -> CloneKind {
    let mut c = Cleanup::new(b);
    let (src, dst) = (c.vol(), c.vol());
    b.create(&src, 4 * MIB).unwrap();
    {
        let io = b.open(&src).unwrap();
        write_pattern(&*io, 4, 0, 64 * 1024);
        write_pattern(&*io, 5, 2 * MIB, MIB as usize);
        io.flush().unwrap();
    }
    let kind = b.clone_volume(&src, &dst).unwrap();
    assert_eq!(b.size(&dst).unwrap(), 4 * MIB);
    let src_io = b.open(&src).unwrap();
    let dst_io = b.open(&dst).unwrap();
    let original = read_all(&*src_io);
    assert!(read_all(&*dst_io) == original, "clone content differs from source ({kind})");

    write_pattern(&*dst_io, 6, 0, 4096);
    dst_io.flush().unwrap();
    assert_eq!(
        read(&*src_io, 0, 4096),
        pattern(4, 0, 4096),
        "writing the clone changed the source"
    );
    write_pattern(&*src_io, 7, 2 * MIB, 4096);
    src_io.flush().unwrap();
    assert_eq!(
        read(&*dst_io, 2 * MIB, 4096),
        pattern(5, 2 * MIB, 4096),
        "writing the source changed the clone"
    );
    drop(src_io);

    assert_kind(
        b.clone_volume(&src, &dst),
        ErrorKind::AlreadyExists,
        "clone onto an existing volume",
    );
    // The clone outlives its source.
    b.delete(&src).unwrap();
    let dst_io = b.open(&dst).unwrap();
    let mut expected = original;
    expected[..4096].copy_from_slice(&pattern(6, 0, 4096));
    assert!(read_all(&*dst_io) == expected, "clone changed when its source was deleted");
    kind
}

pub fn snapshot_is_point_in_time(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let (vol, from_snap) = (c.vol(), c.vol());
    let snap = c.snap();
    b.create(&vol, 2 * MIB).unwrap();
    let io = b.open(&vol).unwrap();
    write_pattern(&*io, 8, 0, 2 * MIB as usize);
    io.flush().unwrap();
    b.create_snapshot(&vol, &snap).unwrap();
    assert_eq!(b.snapshots(&vol).unwrap(), vec![snap.clone()]);
    write_pattern(&*io, 9, 4096, 8192);
    io.flush().unwrap();

    let before = pattern(8, 0, 2 * MIB as usize);
    let sio = b.open_snapshot(&snap).unwrap();
    assert_eq!(sio.size().unwrap(), 2 * MIB);
    assert!(read_all(&*sio) == before, "snapshot sees a write made after it");
    let err = sio.write_at(&[1u8; 512], 0).expect_err("a snapshot must refuse writes");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(read_all(&*sio) == before);

    b.clone_from_snapshot(&snap, &from_snap).unwrap();
    let cio = b.open(&from_snap).unwrap();
    assert!(read_all(&*cio) == before, "clone from snapshot sees a write made after the snapshot");
    assert_eq!(read(&*io, 4096, 8192), pattern(9, 4096, 8192), "the volume lost its own write");
    write_pattern(&*cio, 10, 0, 4096);
    cio.flush().unwrap();
    assert!(read_all(&*sio) == before, "writing a clone changed its snapshot");

    // Deleting the snapshot does not change the clone made from it.
    b.delete_snapshot(&snap).unwrap();
    let mut expected = before;
    expected[..4096].copy_from_slice(&pattern(10, 0, 4096));
    assert!(read_all(&*cio) == expected, "clone changed when its snapshot was deleted");
    assert!(b.snapshots(&vol).unwrap().is_empty());
}

pub fn delete_volume_with_snapshot_is_busy(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let vol = c.vol();
    let (s1, s2) = (c.snap(), c.snap());
    b.create(&vol, MIB).unwrap();
    b.create_snapshot(&vol, &s1).unwrap();
    b.create_snapshot(&vol, &s2).unwrap();
    assert_kind(b.create_snapshot(&vol, &s1), ErrorKind::AlreadyExists, "snapshot id reused");
    let mut snaps = vec![s1.clone(), s2.clone()];
    snaps.sort();
    assert_eq!(b.snapshots(&vol).unwrap(), snaps);
    assert_kind(b.delete(&vol), ErrorKind::Busy, "delete a volume with snapshots");
    assert!(b.exists(&vol).unwrap(), "a refused delete must leave the volume");
    b.delete_snapshot(&s1).unwrap();
    assert_kind(b.delete(&vol), ErrorKind::Busy, "delete a volume with one snapshot left");
    b.delete_snapshot(&s2).unwrap();
    assert_kind(b.delete_snapshot(&s2), ErrorKind::NotFound, "delete snapshot twice");
    b.delete(&vol).unwrap();
    assert!(!b.exists(&vol).unwrap());
}

pub fn missing_things_are_not_found(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let (missing, other, existing) = (new_id(), c.vol(), c.vol());
    let snap = new_id();
    b.create(&existing, MIB).unwrap();
    assert_kind(b.size(&missing), ErrorKind::NotFound, "size");
    assert_kind(b.open(&missing).map(|_| ()), ErrorKind::NotFound, "open");
    assert_kind(b.extend(&missing, 2 * MIB), ErrorKind::NotFound, "extend");
    assert_kind(b.delete(&missing), ErrorKind::NotFound, "delete");
    assert_kind(b.snapshots(&missing), ErrorKind::NotFound, "snapshots");
    assert_kind(b.clone_volume(&missing, &other), ErrorKind::NotFound, "clone source");
    assert!(!b.exists(&other).unwrap(), "a failed clone must leave nothing");
    assert_kind(
        b.create_snapshot(&missing, &snap),
        ErrorKind::NotFound,
        "snapshot of missing volume",
    );
    assert_kind(b.open_snapshot(&snap).map(|_| ()), ErrorKind::NotFound, "open snapshot");
    assert_kind(b.delete_snapshot(&snap), ErrorKind::NotFound, "delete snapshot");
    assert_kind(b.clone_from_snapshot(&snap, &other), ErrorKind::NotFound, "clone from snapshot");
    assert!(!b.exists(&other).unwrap());
    // A volume id is not a snapshot id.
    assert_kind(
        b.open_snapshot(&existing).map(|_| ()),
        ErrorKind::NotFound,
        "volume id as snapshot",
    );
}

pub const BAD_IDS: &[&str] =
    &["", "..", "../x", "../../etc/passwd", "a/b", "a@b", "-x", "x y", "x\0"];

pub fn invalid_ids_are_rejected(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let good = c.vol();
    let snap = c.snap();
    b.create(&good, MIB).unwrap();
    b.create_snapshot(&good, &snap).unwrap();
    for bad in BAD_IDS {
        let ia = ErrorKind::InvalidArgument;
        assert_kind(b.create(bad, MIB), ia, "create");
        assert_kind(b.delete(bad), ia, "delete");
        assert_kind(b.extend(bad, MIB), ia, "extend");
        assert_kind(b.size(bad), ia, "size");
        assert_kind(b.exists(bad), ia, "exists");
        assert_kind(b.location(bad), ia, "location");
        assert_kind(b.open(bad).map(|_| ()), ia, "open");
        assert_kind(b.clone_volume(&good, bad), ia, "clone to bad id");
        assert_kind(b.clone_volume(bad, &good), ia, "clone from bad id");
        assert_kind(b.create_snapshot(&good, bad), ia, "snapshot with bad id");
        assert_kind(b.create_snapshot(bad, &snap), ia, "snapshot of bad id");
        assert_kind(b.delete_snapshot(bad), ia, "delete snapshot");
        assert_kind(b.snapshots(bad), ia, "snapshots");
        assert_kind(b.clone_from_snapshot(&snap, bad), ia, "clone from snapshot to bad id");
        assert_kind(b.clone_from_snapshot(bad, &good), ia, "clone from bad snapshot id");
        assert_kind(b.open_snapshot(bad).map(|_| ()), ia, "open snapshot");
    }
    assert_eq!(b.snapshots(&good).unwrap(), vec![snap.clone()]);
}

pub fn discard_zeroes_range(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let id = c.vol();
    b.create(&id, 8 * MIB).unwrap();
    let io = b.open(&id).unwrap();
    write_pattern(&*io, 11, 0, 8 * MIB as usize);
    io.flush().unwrap();
    // Whole objects/blocks in the middle, so every backend can drop them.
    assert!(io.discard(4 * MIB, 4 * MIB).unwrap(), "backend claims it cannot discard");
    io.flush().unwrap();
    assert_eq!(
        read(&*io, 4 * MIB, 4 * MIB as usize),
        vec![0u8; 4 * MIB as usize],
        "discarded range must read zeros"
    );
    assert_eq!(
        read(&*io, 0, 4 * MIB as usize),
        pattern(11, 0, 4 * MIB as usize),
        "discard touched data outside its range"
    );
}

pub fn clone_of_clone_and_snapshot_chain(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let (a, bb, cc) = (c.vol(), c.vol(), c.vol());
    let s = c.snap();
    b.create(&a, 2 * MIB).unwrap();
    write_pattern(&*b.open(&a).unwrap(), 12, 0, 2 * MIB as usize);
    b.clone_volume(&a, &bb).unwrap();
    write_pattern(&*b.open(&bb).unwrap(), 13, 0, 4096);
    b.create_snapshot(&bb, &s).unwrap();
    b.clone_from_snapshot(&s, &cc).unwrap();
    let mut expected = pattern(12, 0, 2 * MIB as usize);
    expected[..4096].copy_from_slice(&pattern(13, 0, 4096));
    assert!(read_all(&*b.open(&cc).unwrap()) == expected);
    // Tear down from the root: every level must stay readable.
    b.delete(&a).unwrap();
    assert!(read_all(&*b.open(&bb).unwrap()) == expected);
    b.delete_snapshot(&s).unwrap();
    b.delete(&bb).unwrap();
    assert!(read_all(&*b.open(&cc).unwrap()) == expected);
}

/// One handle shared by several threads (the engine's data path does this):
/// every thread's writes land where it put them.
pub fn one_handle_many_threads(b: &dyn Backend) {
    let mut c = Cleanup::new(b);
    let id = c.vol();
    b.create(&id, 8 * MIB).unwrap();
    let io: std::sync::Arc<dyn BlockIo> = b.open(&id).unwrap().into();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let io = io.clone();
            s.spawn(move || {
                for chunk in 0..8u64 {
                    let off = (t as u64 * 8 + chunk) * 256 * 1024;
                    write_pattern(&*io, 20 + t, off, 256 * 1024);
                    assert_eq!(read(&*io, off, 256 * 1024), pattern(20 + t, off, 256 * 1024));
                }
            });
        }
    });
    io.flush().unwrap();
    for t in 0..4u8 {
        let off = t as u64 * 8 * 256 * 1024;
        assert_eq!(read(&*io, off, 2 * MIB as usize), pattern(20 + t, off, 2 * MIB as usize));
    }
}

#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        #[test]
        fn create_size_read_write() {
            common::create_size_read_write(&*$make());
        }
        #[test]
        fn create_rejects_bad_sizes_and_duplicates() {
            common::create_rejects_bad_sizes_and_duplicates(&*$make());
        }
        #[test]
        fn extend_keeps_data() {
            common::extend_keeps_data(&*$make());
        }
        #[test]
        fn delete_removes() {
            common::delete_removes(&*$make());
        }
        #[test]
        fn clone_is_equal_and_independent() {
            common::clone_is_equal_and_independent(&*$make());
        }
        #[test]
        fn snapshot_is_point_in_time() {
            common::snapshot_is_point_in_time(&*$make());
        }
        #[test]
        fn delete_volume_with_snapshot_is_busy() {
            common::delete_volume_with_snapshot_is_busy(&*$make());
        }
        #[test]
        fn missing_things_are_not_found() {
            common::missing_things_are_not_found(&*$make());
        }
        #[test]
        fn invalid_ids_are_rejected() {
            common::invalid_ids_are_rejected(&*$make());
        }
        #[test]
        fn discard_zeroes_range() {
            common::discard_zeroes_range(&*$make());
        }
        #[test]
        fn one_handle_many_threads() {
            common::one_handle_many_threads(&*$make());
        }
        #[test]
        fn clone_of_clone_and_snapshot_chain() {
            common::clone_of_clone_and_snapshot_chain(&*$make());
        }
    };
}
