//! The no-wait read and write paths an event-loop server tries first: they
//! must move exactly the bytes the blocking calls move, and decline (None)
//! what they cannot do without waiting.

use rekey_luks::{BlockIo, FileIo, FormatOptions, PbkdfOptions, Volume};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn file_of(len: usize) -> (tempfile::NamedTempFile, FileIo) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), pattern(len, 7)).unwrap();
    let io = FileIo::open(f.path()).unwrap();
    (f, io)
}

#[test]
fn file_reads_cached_data_now_and_declines_past_the_end() {
    let (_f, io) = file_of(1 << 20);
    let mut now = vec![0u8; 8192];
    // Just written, so in the page cache.
    io.read_at_nowait(&mut now, 4096).expect("cached data is read now").unwrap();
    let mut blocking = vec![0u8; 8192];
    io.read_at(&mut blocking, 4096).unwrap();
    assert_eq!(now, blocking);
    // A read running off the end is short: left to the blocking path, which
    // reports it.
    let mut tail = vec![0u8; 8192];
    assert!(io.read_at_nowait(&mut tail, (1 << 20) - 4096).is_none());
    assert!(io.read_at(&mut tail, (1 << 20) - 4096).is_err());
}

#[test]
fn file_writes_now_what_the_blocking_read_sees() {
    let (_f, io) = file_of(1 << 20);
    let data = pattern(4096, 99);
    io.write_at_nowait(&data, 12288).expect("a regular file takes buffered writes now").unwrap();
    let mut back = vec![0u8; 4096];
    io.read_at(&mut back, 12288).unwrap();
    assert_eq!(back, data);
}

#[test]
fn decrypted_view_no_wait_paths_agree_with_the_blocking_ones() {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(20 << 20).unwrap();
    let opts = FormatOptions { pbkdf: PbkdfOptions::minimal(), sector_size: 4096, ..Default::default() };
    Volume::format(FileIo::open(f.path()).unwrap(), &opts, b"pw", None).unwrap();
    let view = Volume::open(FileIo::open(f.path()).unwrap()).unwrap().decrypted(b"pw").unwrap();
    let data = pattern(16384, 3);
    view.write_at_nowait(&data, 8192).expect("whole sectors are written now").unwrap();
    let mut back = vec![0u8; 16384];
    view.read_at(&mut back, 8192).unwrap();
    assert_eq!(back, data, "blocking read of a no-wait write");
    let mut now = vec![0u8; 16384];
    view.read_at_nowait(&mut now, 8192).expect("whole cached sectors are read now").unwrap();
    assert_eq!(now, data, "no-wait read of the same sectors");
    // The ciphertext is not the plaintext.
    let mut raw = vec![0u8; 16384];
    view.io().read_at(&mut raw, view.data_offset() + 8192).unwrap();
    assert_ne!(raw, data);
    // Partial sectors need a read-modify-write, which may wait.
    assert!(view.write_at_nowait(&data[..512], 8192).is_none());
    assert!(view.read_at_nowait(&mut now[..512], 8192 + 512).is_none());
    // Out of range is declined, and the blocking call reports it.
    let end = view.len();
    assert!(view.read_at_nowait(&mut now[..4096], end).is_none());
    assert!(view.read_at(&mut now[..4096], end).is_err());
}
