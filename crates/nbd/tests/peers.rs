//! The server against real NBD peers (qemu-io, qemu-img, nbdinfo, nbdcopy,
//! cryptsetup) and against a raw TCP client sending bad input.
//!
//! Needs qemu-utils, libnbd-bin and cryptsetup on PATH; a missing tool
//! fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rekey_luks::{BlockIo, FileIo, Volume};
use rekey_nbd::proto::{self, cmd, errno, opt, rep, OptionHeader, Request};
use rekey_nbd::{random_export_name, Export, Exports, ListenAddr, Server, TlsConfig};

struct Harness {
    rt: tokio::runtime::Runtime,
    exports: Exports,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let exports = Exports::new();
        let server = rt
            .block_on(Server::bind(
                &ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
                exports.clone(),
            ))
            .unwrap();
        let addr = server.local_addr().unwrap();
        rt.spawn(server.run());
        Harness {
            rt,
            exports,
            addr,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn uri(&self, name: &str) -> String {
        format!("nbd://{}/{}", self.addr, name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A zero-filled image file.
    fn image(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    fn export_raw(&self, image: &Path, read_only: bool) -> String {
        let io = if read_only {
            FileIo::open_read_only(image)
        } else {
            FileIo::open(image)
        }
        .unwrap();
        let name = random_export_name();
        self.exports
            .add(name.clone(), Export::raw(Arc::new(io), read_only).unwrap())
            .unwrap();
        name
    }

    fn export_plain(&self, image: &Path, pass: &[u8]) -> String {
        let plain = Volume::open(FileIo::open(image).unwrap())
            .unwrap()
            .decrypted(pass)
            .unwrap();
        let sector = plain.sector_size() as u32;
        let name = random_export_name();
        self.exports
            .add(
                name.clone(),
                Export::plaintext(Arc::new(plain), sector, false).unwrap(),
            )
            .unwrap();
        name
    }

    fn luks_format(&self, name: &str, kind: &str, size: u64) -> (PathBuf, PathBuf) {
        let img = self.image(name, size);
        let pass = self.path(&format!("{name}.pass"));
        std::fs::write(&pass, b"correct horse battery").unwrap();
        run(Command::new(tool("cryptsetup"))
            .args(["luksFormat", "-q", "--type", kind, "--pbkdf", "pbkdf2"])
            .args(["--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(&pass)
            .arg(&img));
        (img, pass)
    }
}

/// The tool's name, after checking it is installed: tests fail, loudly,
/// rather than skip when a peer is missing.
fn tool(name: &str) -> &str {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed (qemu-utils, libnbd-bin and cryptsetup-bin are needed)"
    );
    name
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{cmd:?} should have failed: {text}");
    text
}

fn qemu_io(target: &str, cmds: &[&str]) -> Command {
    let mut c = Command::new(tool("qemu-io"));
    c.args(["-f", "raw", target]);
    for x in cmds {
        c.args(["-c", x]);
    }
    c
}

fn read_file_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    FileIo::open_read_only(path)
        .unwrap()
        .read_at(&mut buf, offset)
        .unwrap();
    buf
}

#[test]
fn qemu_io_writes_and_reads_back_over_tcp() {
    let h = Harness::start();
    let img = h.image("a.img", 64 << 20);
    let name = h.export_raw(&img, false);
    let out = run(&mut qemu_io(
        &h.uri(&name),
        &[
            "write -P 0x5a 0 4M",
            "read -P 0x5a 0 4M",
            "write -f -P 0x11 5M 64k",
            "write -z 8M 1M",
            "read -P 0 8M 1M",
            "flush",
        ],
    ));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(read_file_at(&img, 0, 4 << 20).iter().all(|&b| b == 0x5a));
    assert!(read_file_at(&img, 5 << 20, 64 << 10)
        .iter()
        .all(|&b| b == 0x11));
}

#[test]
fn qemu_io_over_a_unix_socket() {
    let h = Harness::start();
    let sock = h.path("nbd.sock");
    let server =
        h.rt.block_on(Server::bind(
            &ListenAddr::Unix(sock.clone()),
            h.exports.clone(),
        ))
        .unwrap();
    h.rt.spawn(server.run());
    let img = h.image("u.img", 16 << 20);
    let name = h.export_raw(&img, false);
    let uri = format!("nbd+unix:///{name}?socket={}", sock.display());
    let out = run(&mut qemu_io(
        &uri,
        &["write -P 0x77 1M 2M", "read -P 0x77 1M 2M"],
    ));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(read_file_at(&img, 1 << 20, 2 << 20)
        .iter()
        .all(|&b| b == 0x77));
}

#[test]
fn nbdinfo_sees_size_and_block_constraints() {
    let h = Harness::start();
    let img = h.image("i.img", 32 << 20);
    let name = h.export_raw(&img, false);
    let out = run(Command::new(tool("nbdinfo")).arg(h.uri(&name)));
    assert!(out.contains("export-size: 33554432"), "{out}");
    assert!(out.contains("block_size_maximum: 33554432"), "{out}");
    assert!(
        out.contains("can_fua: true") && out.contains("can_zero: true"),
        "{out}"
    );
    let info = run(Command::new(tool("qemu-img")).args(["info", "-f", "raw", &h.uri(&name)]));
    assert!(info.contains("32 MiB"), "{info}");
}

#[test]
fn nbdcopy_round_trips_an_image() {
    let h = Harness::start();
    let src = h.path("src.img");
    let data: Vec<u8> = (0..(24u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let img = h.image("dst.img", 24 << 20);
    let name = h.export_raw(&img, false);
    run(Command::new(tool("nbdcopy")).arg(&src).arg(h.uri(&name)));
    assert!(
        std::fs::read(&img).unwrap() == data,
        "image differs after nbdcopy in"
    );
    let back = h.path("back.img");
    run(Command::new(tool("nbdcopy")).arg(h.uri(&name)).arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "copy differs after nbdcopy out"
    );
}

/// qemu's LUKS driver reads LUKS1 only ("LUKS version 2 is not supported"
/// in qemu 10), so a front-end consumer through qemu needs a LUKS1 volume.
#[test]
fn front_end_luks1_ciphertext_export_decrypted_by_qemu() {
    let h = Harness::start();
    let (img, pass) = h.luks_format("fe.img", "luks1", 32 << 20);
    let name = h.export_raw(&img, false);
    // `file.filename=nbd://…` is taken as a local path by qemu 10's
    // --image-opts; the NBD child is spelled out instead.
    let opts = format!(
        "driver=luks,key-secret=s0,file.driver=nbd,file.server.type=inet,file.server.host={},file.server.port={},file.export={name}",
        h.addr.ip(),
        h.addr.port()
    );
    let out = run(Command::new(tool("qemu-io"))
        .arg("--object")
        .arg(format!("secret,id=s0,file={}", pass.display()))
        .args([
            "--image-opts",
            &opts,
            "-c",
            "write -P 0x3c 0 2M",
            "-c",
            "read -P 0x3c 0 2M",
            "-c",
            "flush",
        ]));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    run(Command::new(tool("cryptsetup"))
        .args(["isLuks", "--type", "luks1"])
        .arg(&img));
    let plain = Volume::open(FileIo::open_read_only(&img).unwrap())
        .unwrap()
        .decrypted(b"correct horse battery")
        .unwrap();
    let mut buf = vec![0u8; 2 << 20];
    plain.read_at(&mut buf, 0).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0x3c),
        "engine does not read qemu's pattern"
    );
    let raw = read_file_at(&img, plain.data_offset(), 4096);
    assert!(
        raw.iter().any(|&b| b != 0x3c),
        "pattern stored in the clear"
    );
}

#[test]
fn back_end_plaintext_export_of_a_luks2_volume() {
    let h = Harness::start();
    let (img, _pass) = h.luks_format("be.img", "luks2", 32 << 20);
    let name = h.export_plain(&img, b"correct horse battery");
    let out = run(&mut qemu_io(
        &h.uri(&name),
        &[
            "write -P 0xa5 0 3M",
            "write -P 0x42 100 1000",
            "read -P 0xa5 0 100",
            "read -P 0x42 100 1000",
            "read -P 0xa5 1100 1M",
            "flush",
        ],
    ));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    run(Command::new(tool("cryptsetup"))
        .args(["isLuks", "--type", "luks2"])
        .arg(&img));
    let dump = run(Command::new(tool("cryptsetup")).arg("luksDump").arg(&img));
    assert!(dump.contains("aes-xts-plain64"), "{dump}");
    let plain = Volume::open(FileIo::open_read_only(&img).unwrap())
        .unwrap()
        .decrypted(b"correct horse battery")
        .unwrap();
    let mut buf = vec![0u8; 3 << 20];
    plain.read_at(&mut buf, 0).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 0xa5));
    assert!(buf[100..1100].iter().all(|&b| b == 0x42));
    assert!(buf[1100..].iter().all(|&b| b == 0xa5));
    let raw = read_file_at(&img, plain.data_offset(), 1 << 20);
    assert!(
        raw.windows(16).all(|w| w != [0xa5; 16]),
        "plaintext reached the image"
    );
}

#[test]
fn removed_export_is_refused_and_its_connections_closed() {
    let h = Harness::start();
    let img = h.image("r.img", 8 << 20);
    let name = h.export_raw(&img, false);
    run(&mut qemu_io(&h.uri(&name), &["read 0 4k"]));
    let mut open = Raw::go(h.addr, &name);
    open.request(0, cmd::READ, 1, 0, 4096, &[]);
    assert_eq!(open.reply_with_data(4096), (0, 1));
    let export = h.exports.remove(&name).expect("was exported");
    h.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), export.drained())
            .await
            .expect("connections drain")
    });
    assert!(open.closed(), "open connection survived the removal");
    let out = fails(&mut qemu_io(&h.uri(&name), &["read 0 4k"]));
    assert!(
        out.contains("not available") || out.contains("export"),
        "{out}"
    );
    let out = fails(Command::new(tool("nbdinfo")).arg(h.uri(&name)));
    assert!(!out.is_empty());
}

#[test]
fn read_only_export_refuses_writes() {
    let h = Harness::start();
    let img = h.image("ro.img", 8 << 20);
    let name = h.export_raw(&img, true);
    let info = run(Command::new(tool("nbdinfo")).arg(h.uri(&name)));
    assert!(info.contains("is_read_only: true"), "{info}");
    let mut c = Raw::go(h.addr, &name);
    c.request(0, cmd::WRITE, 7, 0, 512, &[0xff; 512]);
    assert_eq!(c.reply(), (errno::EPERM, 7));
    c.request(0, cmd::WRITE_ZEROES, 8, 0, 512, &[]);
    assert_eq!(c.reply(), (errno::EPERM, 8));
    c.request(0, cmd::READ, 9, 0, 512, &[]);
    assert_eq!(c.reply_with_data(512), (0, 9));
    assert!(read_file_at(&img, 0, 512).iter().all(|&b| b == 0));
    // qemu opened read-write is turned down at the write.
    fails(Command::new(tool("qemu-io")).args([
        "-f",
        "raw",
        &h.uri(&name),
        "-c",
        "write -P 1 0 512",
    ]));
}

// ---- bad input from a raw client ----

struct Raw(TcpStream);

impl Raw {
    /// Connects and reads the greeting; the client flags are left to the test.
    fn greet(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = Raw(s);
        let g = r.read_n(18);
        assert_eq!(&g[..], &proto::greeting()[..]);
        r
    }

    fn fixed(addr: SocketAddr) -> Self {
        let mut r = Self::greet(addr);
        r.send(&3u32.to_be_bytes());
        r
    }

    fn go(addr: SocketAddr, name: &str) -> Self {
        let mut r = Self::fixed(addr);
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        r.option(opt::GO, &data);
        loop {
            let (_, kind, _) = r.option_reply();
            if kind == rep::ACK {
                return r;
            }
            assert_eq!(kind, rep::INFO, "GO refused");
        }
    }

    fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).unwrap();
    }

    fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.0.read_exact(&mut b).unwrap();
        b
    }

    fn option(&mut self, opt: u32, data: &[u8]) {
        let mut out = Vec::new();
        OptionHeader {
            opt,
            len: data.len() as u32,
        }
        .encode(&mut out);
        out.extend_from_slice(data);
        self.send(&out);
    }

    fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let h = self.read_n(20);
        assert_eq!(&h[..8], &proto::REPLY_MAGIC.to_be_bytes());
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        (opt, kind, self.read_n(len as usize))
    }

    fn request(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let mut out = Vec::new();
        Request {
            flags,
            kind,
            cookie,
            offset,
            len,
        }
        .encode(&mut out);
        out.extend_from_slice(payload);
        self.send(&out);
    }

    fn reply(&mut self) -> (u32, u64) {
        let h = self.read_n(16);
        assert_eq!(&h[..4], &proto::SIMPLE_REPLY_MAGIC.to_be_bytes());
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }

    fn reply_with_data(&mut self, len: usize) -> (u32, u64) {
        let r = self.reply();
        if r.0 == 0 {
            self.read_n(len);
        }
        r
    }

    /// The server hung up (end of stream or reset), not merely went quiet.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        loop {
            match self.0.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// After each bad client, a good export must still serve qemu.
fn still_serves(h: &Harness, good: &str) {
    let out = run(&mut qemu_io(
        &h.uri(good),
        &["write -P 0x66 0 64k", "read -P 0x66 0 64k"],
    ));
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn bad_negotiation_closes_or_errors_and_the_server_keeps_serving() {
    let h = Harness::start();
    let good = h.export_raw(&h.image("good.img", 4 << 20), false);

    // Client flags without fixed newstyle, and unknown flags.
    let mut c = Raw::greet(h.addr);
    c.send(&0u32.to_be_bytes());
    assert!(c.closed());
    let mut c = Raw::greet(h.addr);
    c.send(&0x8000_0001u32.to_be_bytes());
    assert!(c.closed());

    // Bad option magic.
    let mut c = Raw::fixed(h.addr);
    c.send(&[0xde; 16]);
    assert!(c.closed());

    // Option length beyond any sane option.
    let mut c = Raw::fixed(h.addr);
    let mut out = Vec::new();
    OptionHeader {
        opt: opt::GO,
        len: 1 << 30,
    }
    .encode(&mut out);
    c.send(&out);
    assert!(c.closed());

    // Truncated option: the length promises more than arrives, then EOF.
    let mut c = Raw::fixed(h.addr);
    let mut out = Vec::new();
    OptionHeader {
        opt: opt::INFO,
        len: 100,
    }
    .encode(&mut out);
    out.extend_from_slice(&[0; 10]);
    c.send(&out);
    c.0.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed());

    // Malformed INFO data, unknown option, LIST, unknown export: error
    // replies, and the same connection still negotiates.
    let mut c = Raw::fixed(h.addr);
    c.option(opt::INFO, &[0, 0, 0, 50, b'x']);
    assert_eq!(c.option_reply().1, rep::ERR_INVALID);
    c.option(99, b"whatever");
    assert_eq!(c.option_reply().1, rep::ERR_UNSUP);
    c.option(opt::STARTTLS, &[]);
    assert_eq!(c.option_reply().1, rep::ERR_UNSUP);
    c.option(opt::LIST, &[]);
    assert_eq!(c.option_reply().1, rep::ERR_POLICY);
    let mut data = 4u32.to_be_bytes().to_vec();
    data.extend_from_slice(b"nope");
    data.extend_from_slice(&0u16.to_be_bytes());
    c.option(opt::GO, &data);
    assert_eq!(c.option_reply().1, rep::ERR_UNKNOWN);
    c.option(opt::ABORT, &[]);
    assert_eq!(c.option_reply().1, rep::ACK);
    assert!(c.closed());

    // EXPORT_NAME of an unknown export has no error reply: a hang-up.
    let mut c = Raw::fixed(h.addr);
    c.option(opt::EXPORT_NAME, b"nope");
    assert!(c.closed());
    // ...and of a known one answers size and flags.
    let mut c = Raw::fixed(h.addr);
    c.option(opt::EXPORT_NAME, good.as_bytes());
    let r = c.read_n(10);
    assert_eq!(u64::from_be_bytes(r[..8].try_into().unwrap()), 4 << 20);

    still_serves(&h, &good);
}

#[test]
fn bad_requests_get_errors_or_a_close_and_the_server_keeps_serving() {
    let h = Harness::start();
    let good = h.export_raw(&h.image("good.img", 4 << 20), false);
    let victim = h.export_raw(&h.image("victim.img", 1 << 20), false);
    let size = 1u64 << 20;

    let mut c = Raw::go(h.addr, &victim);
    c.request(0, cmd::READ, 1, size - 512, 1024, &[]);
    assert_eq!(
        c.reply_with_data(1024),
        (errno::EINVAL, 1),
        "read past the end"
    );
    c.request(0, cmd::WRITE, 2, size, 512, &[1; 512]);
    assert_eq!(c.reply(), (errno::ENOSPC, 2), "write past the end");
    c.request(0, cmd::WRITE_ZEROES, 3, u64::MAX - 10, 512, &[]);
    assert_eq!(c.reply(), (errno::ENOSPC, 3), "offset overflow");
    c.request(0, cmd::TRIM, 4, size, 512, &[]);
    assert_eq!(c.reply(), (errno::EINVAL, 4), "trim past the end");
    c.request(0, cmd::READ, 5, 0, 64 << 20, &[]);
    assert_eq!(c.reply_with_data(0), (errno::EINVAL, 5), "oversized read");
    c.request(0, 42, 6, 0, 512, &[]);
    assert_eq!(c.reply(), (errno::EINVAL, 6), "unknown command");
    c.request(0x80, cmd::READ, 7, 0, 512, &[]);
    assert_eq!(
        c.reply_with_data(512),
        (errno::EINVAL, 7),
        "unknown command flag"
    );
    c.request(0, cmd::READ, 8, 0, 512, &[]);
    assert_eq!(c.reply_with_data(512), (0, 8), "connection still usable");
    c.request(0, cmd::FLUSH, 9, 0, 0, &[]);
    assert_eq!(c.reply(), (0, 9));
    c.request(0, cmd::DISC, 10, 0, 0, &[]);
    assert!(c.closed(), "DISC closes");

    // An oversized WRITE cannot be skipped: the connection is closed.
    let mut c = Raw::go(h.addr, &victim);
    c.request(0, cmd::WRITE, 11, 0, 64 << 20, &[]);
    assert!(c.closed());

    // Bad request magic.
    let mut c = Raw::go(h.addr, &victim);
    c.send(&[0x55; 28]);
    assert!(c.closed());

    // Disconnect in the middle of a WRITE payload: nothing half-applied
    // reaches the image (the write never started).
    let mut c = Raw::go(h.addr, &victim);
    c.request(0, cmd::WRITE, 12, 0, 65536, &[0xee; 1000]);
    drop(c);
    // Disconnect in the middle of a request head.
    let mut c = Raw::go(h.addr, &victim);
    c.send(&proto::REQUEST_MAGIC.to_be_bytes());
    drop(c);

    let mut c = Raw::go(h.addr, &victim);
    c.request(0, cmd::READ, 13, 0, 1000, &[]);
    let (e, _) = c.reply();
    assert_eq!(e, 0);
    assert!(
        c.read_n(1000).iter().all(|&b| b == 0),
        "a torn write reached the image"
    );

    still_serves(&h, &good);
    still_serves(&h, &victim);
}

#[test]
fn many_clients_at_once() {
    let h = Harness::start();
    let img = h.image("m.img", 16 << 20);
    let name = h.export_raw(&img, false);
    let children: Vec<_> = (0..6u64)
        .map(|i| {
            let w = format!("write -P {} {}M 1M", 0x10 + i, i * 2);
            let r = format!("read -P {} {}M 1M", 0x10 + i, i * 2);
            qemu_io(&h.uri(&name), &[&w, &r])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(!String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed"));
    }
    for i in 0..6u64 {
        assert!(read_file_at(&img, (i * 2) << 20, 1 << 20)
            .iter()
            .all(|&b| b == 0x10 + i as u8));
    }
}

// ---- TLS ----

/// A CA, and a server certificate for 127.0.0.1 signed by it, made with
/// the openssl CLI: `server/` as the server reads it, `client/` holding
/// only the CA as qemu's client credentials want.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf) {
    let server = dir.join("server");
    let client = dir.join("client");
    std::fs::create_dir_all(&server).unwrap();
    std::fs::create_dir_all(&client).unwrap();
    let ossl = tool("openssl");
    let ca_key = dir.join("ca-key.pem");
    let ca_cert = client.join("ca-cert.pem");
    run(Command::new(ossl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rekey test CA",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca_cert));
    let csr = dir.join("server.csr");
    run(Command::new(ossl)
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(server.join("server-key.pem"))
        .arg("-out")
        .arg(&csr));
    let ext = dir.join("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n").unwrap();
    run(Command::new(ossl)
        .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca_cert)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(server.join("server-cert.pem")));
    std::fs::copy(&ca_cert, server.join("ca-cert.pem")).unwrap();
    (server, client)
}

#[test]
fn tls_export_serves_qemu_and_refuses_clear_text() {
    let h = Harness::start();
    let (server_creds, client_creds) = make_certs(h.dir.path());
    let tls = TlsConfig::from_dir(&server_creds).unwrap();
    let server =
        h.rt.block_on(Server::bind(
            &ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
            h.exports.clone(),
        ))
        .unwrap()
        .with_tls(tls);
    let addr = server.local_addr().unwrap();
    h.rt.spawn(server.run());
    let img = h.image("tls.img", 8 << 20);
    let name = h.export_raw(&img, false);
    let opts = format!(
        "driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port={},file.export={name},file.tls-creds=tls0",
        addr.port()
    );
    let out = run(Command::new(tool("qemu-io"))
        .arg("--object")
        .arg(format!(
            "tls-creds-x509,id=tls0,endpoint=client,dir={}",
            client_creds.display()
        ))
        .args([
            "--image-opts",
            &opts,
            "-c",
            "write -P 0x9d 0 1M",
            "-c",
            "read -P 0x9d 0 1M",
        ]));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(read_file_at(&img, 0, 1 << 20).iter().all(|&b| b == 0x9d));
    // Without TLS qemu learns nothing and gets no export.
    let out = fails(&mut qemu_io(
        &format!("nbd://{addr}/{name}"),
        &["read 0 512"],
    ));
    assert!(out.to_lowercase().contains("tls"), "{out}");
    let mut c = Raw::fixed(addr);
    let mut data = (name.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    c.option(opt::GO, &data);
    assert_eq!(c.option_reply().1, rep::ERR_TLS_REQD);
    c.option(opt::LIST, &[]);
    assert_eq!(c.option_reply().1, rep::ERR_TLS_REQD);
    c.option(opt::EXPORT_NAME, name.as_bytes());
    assert!(c.closed());
}
