//! The conformance suite and file-only properties, on the file backend.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rekey_storage::{open_backend, Backend, BackendConfig, CloneKind, ErrorKind, FileBackend};

struct Fixture {
    _dir: tempfile::TempDir,
    backend: Arc<dyn Backend>,
}

impl std::ops::Deref for Fixture {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.backend
    }
}

fn file_backend() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config: BackendConfig =
        serde_json::from_value(serde_json::json!({"type": "file", "data_dir": dir.path()}))
            .expect("config");
    let backend = open_backend(&config).expect("open file backend");
    Fixture { _dir: dir, backend }
}

conformance_tests!(file_backend);

#[test]
fn clone_kind_is_reflink_or_sparse_copy() {
    let kind = common::clone_is_equal_and_independent(&*file_backend());
    assert!(matches!(kind, CloneKind::Reflink | CloneKind::SparseCopy), "{kind}");
}

#[test]
fn files_live_where_operators_look() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::open(dir.path()).unwrap();
    let (vol, snap) = (new_id(), new_id());
    b.create(&vol, MIB).unwrap();
    b.create_snapshot(&vol, &snap).unwrap();
    let vol_path = dir.path().join("volumes").join(format!("volume-{vol}"));
    let snap_path = dir.path().join("snapshots").join(format!("snapshot-{snap}"));
    assert_eq!(fs::metadata(&vol_path).unwrap().len(), MIB);
    assert_eq!(fs::metadata(&snap_path).unwrap().len(), MIB);
    assert_eq!(b.volume_path(&vol).unwrap(), vol_path);
    assert_eq!(b.location(&vol).unwrap(), vol_path.display().to_string());
    // A new volume is one hole.
    assert_eq!(fs::metadata(&vol_path).unwrap().blocks(), 0);
    // Files that are not volumes are not listed.
    fs::write(dir.path().join("volumes").join("README"), b"x").unwrap();
    fs::write(dir.path().join("volumes").join("volume-..bad"), b"x").unwrap();
    assert_eq!(b.list().unwrap(), vec![vol.clone()]);
}

#[test]
fn invalid_ids_never_touch_the_filesystem_outside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = FileBackend::open(&data).unwrap();
    let good = new_id();
    b.create(&good, MIB).unwrap();
    for bad in ["../escape", "../../escape", "x/../../escape"] {
        assert_eq!(b.create(bad, MIB).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(b.clone_volume(&good, bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(b.create_snapshot(&good, bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    let outside: Vec<_> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(
        outside,
        vec![std::ffi::OsString::from("data")],
        "something was created outside the data dir"
    );
}

/// 1 GiB volume with 10 MiB of data in scattered extents: the clone must
/// allocate about 10 MiB, not 1 GiB (st_blocks counts 512-byte units).
#[test]
fn clone_of_sparse_volume_allocates_only_data() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::open(dir.path()).unwrap();
    let (src, dst, snap, from_snap) = (new_id(), new_id(), new_id(), new_id());
    b.create(&src, 1 << 30).unwrap();
    let io = b.open(&src).unwrap();
    for i in 0..10u64 {
        // 1 MiB every 100 MiB, plus the first MiB (where a LUKS header sits).
        write_pattern(&*io, i as u8, i * 100 * MIB, MIB as usize);
    }
    io.flush().unwrap();
    let data = 10 * MIB;

    let kind = b.clone_volume(&src, &dst).unwrap();
    b.create_snapshot(&src, &snap).unwrap();
    b.clone_from_snapshot(&snap, &from_snap).unwrap();
    for (what, path) in [
        ("clone", b.volume_path(&dst).unwrap()),
        ("snapshot", b.snapshot_path(&snap).unwrap()),
        ("clone from snapshot", b.volume_path(&from_snap).unwrap()),
    ] {
        let meta = fs::metadata(&path).unwrap();
        let allocated = meta.blocks() * 512;
        assert_eq!(meta.len(), 1 << 30, "{what}: size");
        assert!(
            allocated >= data && allocated <= data + 2 * MIB,
            "{what} ({kind}) allocates {allocated} bytes for {data} bytes of data"
        );
    }
    let cio = b.open(&dst).unwrap();
    for i in 0..10u64 {
        assert_eq!(
            read(&*cio, i * 100 * MIB, MIB as usize),
            pattern(i as u8, i * 100 * MIB, MIB as usize)
        );
        assert_eq!(read(&*cio, i * 100 * MIB + MIB, 4096), vec![0u8; 4096]);
    }
}

#[test]
fn discard_punches_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::open(dir.path()).unwrap();
    let id = new_id();
    b.create(&id, 8 * MIB).unwrap();
    let io = b.open(&id).unwrap();
    write_pattern(&*io, 1, 0, 8 * MIB as usize);
    io.flush().unwrap();
    let path = b.volume_path(&id).unwrap();
    let before = fs::metadata(&path).unwrap().blocks() * 512;
    assert!(io.discard(2 * MIB, 4 * MIB).unwrap());
    let after = fs::metadata(&path).unwrap().blocks() * 512;
    assert_eq!(before - after, 4 * MIB, "discard must free the range's blocks");
}

#[test]
fn delete_during_clone_is_busy_or_after() {
    // A deleted source must never yield a half clone: either the delete is
    // refused (Busy, clone running) or the clone sees a whole source.
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(FileBackend::open(dir.path()).unwrap());
    let src = new_id();
    b.create(&src, 16 * MIB).unwrap();
    write_pattern(&*b.open(&src).unwrap(), 3, 0, 16 * MIB as usize);
    let expected = pattern(3, 0, 16 * MIB as usize);
    let clones: Vec<String> = (0..4).map(|_| new_id()).collect();
    let worker = {
        let (b, src, clones) = (b.clone(), src.clone(), clones.clone());
        std::thread::spawn(move || {
            clones.iter().map(|c| b.clone_volume(&src, c).map(|_| ())).collect::<Vec<_>>()
        })
    };
    // Start deleting once the first clone is done and the next ones run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !b.exists(&clones[0]).unwrap() {
        assert!(Instant::now() < deadline, "first clone not done within 60 s");
        std::thread::yield_now();
    }
    let mut busy_seen = 0;
    let deleted = loop {
        match b.delete(&src) {
            Ok(()) => break true,
            Err(e) if e.kind() == ErrorKind::Busy => busy_seen += 1,
            Err(e) => panic!("unexpected delete error: {e}"),
        }
        if worker.is_finished() {
            b.delete(&src).unwrap();
            break true;
        }
        std::thread::yield_now();
    };
    assert!(deleted);
    let results = worker.join().unwrap();
    for (c, r) in clones.iter().zip(results) {
        match r {
            Ok(()) => assert!(read_all(&*b.open(c).unwrap()) == expected, "clone {c} incomplete"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
                assert!(!b.exists(c).unwrap());
            }
        }
    }
    eprintln!("delete refused as busy {busy_seen} times");
}

const CRASH_CHILD_ENV: &str = "REKEY_STORAGE_CRASH_CHILD_DIR";

/// Kills a process with SIGKILL while it clones in a loop, then checks that
/// every volume under a final name is complete and that reopening the data
/// directory removes the dead process's temporaries.
#[test]
fn clone_is_crash_safe() {
    if let Ok(dir) = std::env::var(CRASH_CHILD_ENV) {
        return crash_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let src = "source";
    let size = 16 * MIB;
    {
        let b = FileBackend::open(dir.path()).unwrap();
        b.create(src, size).unwrap();
        write_pattern(&*b.open(src).unwrap(), 5, 0, size as usize);
    }
    let expected = pattern(5, 0, size as usize);
    let mut killed_mid_copy = 0;
    for round in 0..5u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["clone_is_crash_safe", "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        // Wait for the child to be in its clone loop, then kill it at a point
        // that varies per round.
        let deadline = Instant::now() + Duration::from_secs(60);
        while count_volumes(dir.path()) < 2 + round as usize * 2 {
            assert!(Instant::now() < deadline, "child made no clones within 60 s");
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(300 + round * 1700));
        child.kill().unwrap();
        child.wait().unwrap();
        if has_temporaries(dir.path()) {
            killed_mid_copy += 1;
        }
        let b = FileBackend::open(dir.path()).unwrap();
        assert!(!has_temporaries(dir.path()), "reopening must remove a dead process's temporaries");
        for id in b.list().unwrap() {
            let got = read_all(&*b.open(&id).unwrap());
            assert!(got == expected, "volume {id} exists but is not a complete copy");
        }
    }
    eprintln!("killed mid-copy in {killed_mid_copy} of 5 rounds");
}

fn crash_child(dir: &Path) {
    let b = FileBackend::open(dir).unwrap();
    loop {
        b.clone_volume("source", &new_id()).unwrap();
    }
}

fn count_volumes(dir: &Path) -> usize {
    fs::read_dir(dir.join("volumes"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("volume-"))
        .count()
}

fn has_temporaries(dir: &Path) -> bool {
    fs::read_dir(dir.join("volumes"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".tmp-"))
}

#[test]
fn config_from_toml_shaped_values() {
    let file: BackendConfig =
        serde_json::from_str(r#"{"type": "file", "data_dir": "/var/lib/rekey"}"#).unwrap();
    assert_eq!(file, BackendConfig::File { data_dir: "/var/lib/rekey".into() });
    let rbd: BackendConfig =
        serde_json::from_str(r#"{"type": "rbd", "pool": "volumes", "ceph_user": "cinder"}"#)
            .unwrap();
    match rbd {
        BackendConfig::Rbd(r) => {
            assert_eq!(r.pool, "volumes");
            assert_eq!(r.ceph_user, "cinder");
            assert_eq!(r.ceph_conf, None);
            assert!(!r.full_copy_clones);
        }
        other => panic!("{other:?}"),
    }
    assert!(serde_json::from_str::<BackendConfig>(r#"{"type": "rbd", "pool": "p", "bogus": 1}"#)
        .is_err());
    assert!(serde_json::from_str::<BackendConfig>(r#"{"type": "nfs"}"#).is_err());
}

#[cfg(not(feature = "rbd"))]
#[test]
fn rbd_config_without_feature_is_unsupported() {
    let rbd: BackendConfig = serde_json::from_str(r#"{"type": "rbd", "pool": "volumes"}"#).unwrap();
    let err = open_backend(&rbd).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("feature"), "{err}");
}
