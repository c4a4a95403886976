//! librbd's own LUKS support as an independent reader of headers and data the
//! rekey engine writes, and the bounded timeouts of `open_rbd_spec_with`.
//!
//! Needs `--features rbd` and a running cluster (`scripts/ceph.sh start`,
//! then export the CEPH_CONF it prints); fails saying so otherwise.
#![cfg(feature = "rbd")]

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rekey_luks::{BlockIo, FormatOptions, PbkdfKind, PbkdfOptions, Volume};
use rekey_storage::rbd::{
    open_rbd_spec_decrypted, open_rbd_spec_with, RbdClientOptions, RbdLuksFormat,
};
use rekey_storage::{Backend, ErrorKind, RbdBackend, RbdConfig};

const POOL: &str = "rbd";
const MIB: u64 = 1 << 20;

fn ceph_conf() -> PathBuf {
    std::env::var_os("CEPH_CONF").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "CEPH_CONF is not set: the RBD tests need a running Ceph cluster \
             (scripts/ceph.sh install && scripts/ceph.sh start, then export the CEPH_CONF it prints)"
        )
    })
}

fn backend() -> RbdBackend {
    let mut config = RbdConfig::new(POOL);
    config.ceph_conf = Some(ceph_conf());
    RbdBackend::connect(&config).unwrap_or_else(|e| {
        panic!("cannot reach the Ceph cluster of CEPH_CONF; is scripts/ceph.sh start running? {e}")
    })
}

/// Deletes the volume when the test ends, whatever happened.
struct Vol<'a>(&'a RbdBackend, String);

impl Drop for Vol<'_> {
    fn drop(&mut self) {
        let _ = self.0.delete(&self.1);
    }
}

fn new_vol(b: &RbdBackend, size: u64) -> Vol<'_> {
    let id = uuid::Uuid::new_v4().to_string();
    b.create(&id, size).unwrap();
    Vol(b, id)
}

fn cheap_format(version: rekey_luks::Version, sector_size: u32) -> FormatOptions {
    FormatOptions {
        version,
        sector_size,
        pbkdf: PbkdfOptions {
            kind: Some(PbkdfKind::Pbkdf2),
            force_iterations: Some(1000),
            ..PbkdfOptions::default()
        },
        ..FormatOptions::default()
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[seed as usize % 4] ^ seed)
        .collect()
}

/// Formats `id` with the engine, writes `data` through the engine's data
/// path, and returns the data offset.
fn engine_format_and_write(
    b: &RbdBackend,
    id: &str,
    opts: &FormatOptions,
    pass: &[u8],
    data: &[u8],
) -> u64 {
    let vol = Volume::format(b.open(id).unwrap(), opts, pass, None).unwrap();
    let plain = vol.decrypted(pass).unwrap();
    plain.write_at(data, 0).unwrap();
    plain.flush().unwrap();
    plain.data_offset()
}

#[test]
fn librbd_reads_data_the_engine_encrypted_luks2_4k_sectors() {
    let b = backend();
    let v = new_vol(&b, 32 * MIB);
    let data = pattern(7, 3 * MIB as usize);
    let offset = engine_format_and_write(
        &b,
        &v.1,
        &cheap_format(rekey_luks::Version::Luks2, 4096),
        b"engine pass",
        &data,
    );

    let io = b.open_decrypted(&v.1, RbdLuksFormat::Luks2, b"engine pass").unwrap();
    assert_eq!(io.size().unwrap(), 32 * MIB - offset, "librbd hides the header area");
    let mut got = vec![0u8; data.len()];
    io.read_at(&mut got, 0).unwrap();
    assert!(got == data, "librbd decrypts what the engine encrypted");

    // And the other way: librbd encrypts, the engine decrypts.
    let more = pattern(9, MIB as usize);
    io.write_at(&more, 4 * MIB).unwrap();
    io.flush().unwrap();
    drop(io);
    let plain = Volume::open(b.open(&v.1).unwrap()).unwrap().decrypted(b"engine pass").unwrap();
    let mut got = vec![0u8; more.len()];
    plain.read_at(&mut got, 4 * MIB).unwrap();
    assert!(got == more, "the engine decrypts what librbd encrypted");
}

#[test]
fn librbd_reads_data_the_engine_encrypted_luks1() {
    let b = backend();
    let v = new_vol(&b, 16 * MIB);
    let data = pattern(3, MIB as usize);
    engine_format_and_write(&b, &v.1, &cheap_format(rekey_luks::Version::Luks1, 512), b"p1", &data);
    let io = b.open_decrypted(&v.1, RbdLuksFormat::Luks1, b"p1").unwrap();
    let mut got = vec![0u8; data.len()];
    io.read_at(&mut got, 0).unwrap();
    assert!(got == data);
}

#[test]
fn librbd_refuses_a_wrong_passphrase_and_a_plain_image() {
    let b = backend();
    let v = new_vol(&b, 32 * MIB);
    match b.open_decrypted(&v.1, RbdLuksFormat::Luks2, b"anything") {
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}"),
        Ok(_) => panic!("librbd loaded encryption on an image without a LUKS header"),
    }
    engine_format_and_write(
        &b,
        &v.1,
        &cheap_format(rekey_luks::Version::Luks2, 4096),
        b"right",
        b"",
    );
    match b.open_decrypted(&v.1, RbdLuksFormat::Luks2, b"wrong") {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            assert!(e.to_string().contains("passphrase"), "{e}");
        }
        Ok(_) => panic!("librbd accepted a wrong passphrase"),
    }
    // The spec form reaches the same image.
    let spec = format!("rbd:{POOL}/volume-{}", v.1);
    let mut opts = RbdClientOptions::default();
    opts.ceph_conf = Some(ceph_conf());
    assert!(open_rbd_spec_decrypted(&spec, &opts, RbdLuksFormat::Luks2, b"right").is_ok());
}

/// A ceph.conf naming a closed port, with the test cluster's keyring.
fn unreachable_conf(extra: &str) -> tempfile::NamedTempFile {
    let keyring = std::fs::read_to_string(ceph_conf())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("keyring = ").map(str::to_owned))
        .expect("keyring line in ceph.conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut conf = tempfile::NamedTempFile::new().unwrap();
    writeln!(conf, "[global]\nmon host = v1:127.0.0.1:{port}\nkeyring = {keyring}\nlog file = /dev/null\n{extra}")
        .unwrap();
    conf
}

fn time_failure(opts: &RbdClientOptions) -> (Duration, rekey_storage::Error) {
    let t = Instant::now();
    let err = match open_rbd_spec_with(&format!("rbd:{POOL}/nothing"), opts) {
        Err(e) => e,
        Ok(_) => panic!("opened an image on a closed port"),
    };
    (t.elapsed(), err)
}

#[test]
fn spec_on_unreachable_cluster_fails_within_explicit_timeout() {
    let conf = unreachable_conf("");
    let mut opts = RbdClientOptions::default();
    opts.ceph_conf = Some(conf.path().to_path_buf());
    opts.connect_timeout_secs = Some(2);
    let (took, err) = time_failure(&opts);
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(took < Duration::from_secs(30), "bounded by the 2 s timeout, took {took:?}");
}

#[test]
fn spec_keeps_a_shorter_timeout_from_ceph_conf() {
    // No explicit timeout: ceph.conf's 2 s is shorter than the 10 s default
    // and wins; the error says how long it waited.
    let conf = unreachable_conf("client mount timeout = 2");
    let mut opts = RbdClientOptions::default();
    opts.ceph_conf = Some(conf.path().to_path_buf());
    let (_, err) = time_failure(&opts);
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("waited up to 2 s"), "{err}");

    // A longer one is capped at the 10 s default: never unbounded.
    let conf = unreachable_conf("client mount timeout = 600");
    opts.ceph_conf = Some(conf.path().to_path_buf());
    let (took, err) = time_failure(&opts);
    assert!(err.to_string().contains("waited up to 10 s"), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
