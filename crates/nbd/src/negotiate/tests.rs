use super::*;
use crate::proto::{tflag, BlockSize, Reader};

fn info(size: u64, read_only: bool) -> ExportInfo {
    let mut flags = tflag::HAS_FLAGS | tflag::SEND_FLUSH;
    if read_only {
        flags |= tflag::READ_ONLY;
    }
    ExportInfo {
        size,
        flags,
        block: BlockSize {
            minimum: 1,
            preferred: 4096,
            maximum: 1 << 20,
        },
    }
}

fn lookup(name: &str) -> Option<((), ExportInfo)> {
    (name == "vol").then(|| ((), info(1 << 30, false)))
}

/// Splits a byte string of option replies into (opt, type, data).
fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let mut r = Reader::new(b);
        assert_eq!(r.u64("magic").unwrap(), proto::REPLY_MAGIC);
        let o = r.u32("opt").unwrap();
        let t = r.u32("type").unwrap();
        let n = r.u32("len").unwrap() as usize;
        out.push((o, t, r.take(n, "data").unwrap().to_vec()));
        b = &b[20 + n..];
    }
    out
}

fn go_data(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&0u16.to_be_bytes());
    d
}

#[test]
fn go_sends_export_and_block_size_then_ack() {
    let n = Negotiation::new(ClientFlags { no_zeroes: true });
    let Step::Transmit { reply, .. } = n.option(opt::GO, &go_data("vol"), lookup) else {
        panic!("not transmit")
    };
    let r = replies(&reply);
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].1, rep::INFO);
    assert_eq!(&r[0].2[..2], &info::EXPORT.to_be_bytes());
    assert_eq!(&r[0].2[2..10], &(1u64 << 30).to_be_bytes());
    assert_eq!(&r[1].2[..2], &info::BLOCK_SIZE.to_be_bytes());
    assert_eq!(r[2].1, rep::ACK);
}

#[test]
fn info_stays_in_negotiation_and_unknown_export_is_err_unknown() {
    let n = Negotiation::new(ClientFlags { no_zeroes: true });
    assert!(matches!(
        n.option(opt::INFO, &go_data("vol"), lookup),
        Step::Continue { .. }
    ));
    let Step::Continue { reply } = n.option(opt::GO, &go_data("other"), lookup) else {
        panic!()
    };
    assert_eq!(replies(&reply)[0].1, rep::ERR_UNKNOWN);
}

#[test]
fn export_name_pads_unless_no_zeroes_and_hangs_up_on_unknown() {
    let padded = Negotiation::new(ClientFlags { no_zeroes: false });
    let Step::Transmit { reply, .. } = padded.option(opt::EXPORT_NAME, b"vol", lookup) else {
        panic!()
    };
    assert_eq!(reply.len(), 8 + 2 + 124);
    let bare = Negotiation::new(ClientFlags { no_zeroes: true });
    let Step::Transmit { reply, .. } = bare.option(opt::EXPORT_NAME, b"vol", lookup) else {
        panic!()
    };
    assert_eq!(reply.len(), 10);
    assert!(matches!(
        bare.option(opt::EXPORT_NAME, b"nope", lookup),
        Step::Close { .. }
    ));
}

#[test]
fn list_is_policy_refused_and_unknown_options_unsupported() {
    let n = Negotiation::new(ClientFlags { no_zeroes: true });
    let Step::Continue { reply } = n.option(opt::LIST, &[], lookup) else {
        panic!()
    };
    assert_eq!(replies(&reply)[0].1, rep::ERR_POLICY);
    for o in [opt::STARTTLS, opt::STRUCTURED_REPLY, 10, 11, 0xffff] {
        let Step::Continue { reply } = n.option(o, &[], lookup) else {
            panic!()
        };
        let r = &replies(&reply)[0];
        assert_eq!((r.0, r.1), (o, rep::ERR_UNSUP));
    }
    let Step::Continue { reply } = n.option(opt::GO, &[0, 0], lookup) else {
        panic!()
    };
    assert_eq!(replies(&reply)[0].1, rep::ERR_INVALID);
    assert!(matches!(
        n.option(opt::ABORT, &[], lookup),
        Step::Close { .. }
    ));
}

fn req(kind: u16, flags: u16, offset: u64, len: u32) -> Request {
    Request {
        flags,
        kind,
        cookie: 1,
        offset,
        len,
    }
}

#[test]
fn check_bounds_and_permissions() {
    let rw = info(1 << 20, false);
    let ro = info(1 << 20, true);
    assert_eq!(
        check(&req(cmd::READ, 0, 0, 512), &rw),
        Ok(Command::Read {
            offset: 0,
            len: 512
        })
    );
    assert_eq!(
        check(&req(cmd::READ, 0, (1 << 20) - 1, 2), &rw),
        Err(errno::EINVAL)
    );
    assert_eq!(
        check(&req(cmd::READ, 0, 0, (1 << 20) + 1), &rw),
        Err(errno::EINVAL)
    );
    assert_eq!(
        check(&req(cmd::WRITE, 0, 1 << 20, 1), &rw),
        Err(errno::ENOSPC)
    );
    assert_eq!(
        check(&req(cmd::WRITE, 0, u64::MAX, 1), &rw),
        Err(errno::ENOSPC)
    );
    assert_eq!(
        check(&req(cmd::WRITE_ZEROES, 0, 0, 2 << 20), &rw),
        Err(errno::ENOSPC)
    );
    assert_eq!(
        check(&req(cmd::TRIM, 0, 1 << 20, 1), &rw),
        Err(errno::EINVAL)
    );
    assert_eq!(
        check(&req(cmd::WRITE, cflag::FUA, 0, 1), &rw),
        Ok(Command::Write {
            offset: 0,
            len: 1,
            fua: true
        })
    );
    assert_eq!(
        check(&req(cmd::WRITE, cflag::NO_HOLE, 0, 1), &rw),
        Err(errno::EINVAL)
    );
    assert_eq!(
        check(&req(cmd::WRITE_ZEROES, cflag::NO_HOLE, 0, 1 << 20), &rw),
        Ok(Command::WriteZeroes {
            offset: 0,
            len: 1 << 20,
            fua: false
        })
    );
    for k in [cmd::WRITE, cmd::TRIM, cmd::WRITE_ZEROES] {
        assert_eq!(check(&req(k, 0, 0, 1), &ro), Err(errno::EPERM));
    }
    assert_eq!(
        check(&req(cmd::READ, 0, 0, 1), &ro),
        Ok(Command::Read { offset: 0, len: 1 })
    );
    assert_eq!(check(&req(cmd::FLUSH, 0, 0, 0), &ro), Ok(Command::Flush));
    assert_eq!(
        check(&req(cmd::DISC, 0, 0, 0), &ro),
        Ok(Command::Disconnect)
    );
    assert_eq!(check(&req(99, 0, 0, 0), &rw), Err(errno::EINVAL));
    assert_eq!(payload_len(&req(cmd::WRITE, 0, 0, 77)), 77);
    assert_eq!(payload_len(&req(cmd::READ, 0, 0, 77)), 0);
}

#[test]
fn forced_tls_says_nothing_before_starttls() {
    let mut n = Negotiation::with_tls_required(ClientFlags { no_zeroes: true });
    for o in [opt::GO, opt::INFO, opt::LIST, 77] {
        let Step::Continue { reply } = n.option(o, &go_data("vol"), lookup) else {
            panic!()
        };
        assert_eq!(replies(&reply)[0].1, rep::ERR_TLS_REQD);
    }
    assert!(matches!(
        n.option(opt::EXPORT_NAME, b"vol", lookup),
        Step::Close { .. }
    ));
    let Step::Continue { reply } = n.option(opt::STARTTLS, b"x", lookup) else {
        panic!()
    };
    assert_eq!(replies(&reply)[0].1, rep::ERR_INVALID);
    let Step::StartTls { reply } = n.option(opt::STARTTLS, &[], lookup) else {
        panic!()
    };
    assert_eq!(replies(&reply)[0].1, rep::ACK);
    n.tls_established();
    assert!(matches!(
        n.option(opt::GO, &go_data("vol"), lookup),
        Step::Transmit { .. }
    ));
    let Step::Continue { reply } = n.option(opt::STARTTLS, &[], lookup) else {
        panic!()
    };
    assert_eq!(replies(&reply)[0].1, rep::ERR_INVALID);
}

/// The fuzz target's body over pseudo-random bytes, so the no-panic and
/// round-trip properties are checked on every test run too.
#[test]
fn random_bytes_never_panic_and_heads_round_trip() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let rw = info(1 << 30, false);
    for i in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half the inputs start with valid magics so the parsers go deeper.
        if i % 2 == 0 && data.len() >= 16 {
            data[..8].copy_from_slice(&proto::IHAVEOPT.to_be_bytes());
            let n = (data.len() - 16) as u32;
            data[12..16].copy_from_slice(&n.to_be_bytes());
        }
        if let Some(head) = data.get(..16) {
            if let Ok(h) = proto::OptionHeader::read(head.try_into().unwrap()) {
                let mut out = Vec::new();
                h.encode(&mut out);
                assert_eq!(
                    proto::OptionHeader::read(&out.try_into().unwrap()).unwrap(),
                    h
                );
                for n in [
                    Negotiation::new(ClientFlags { no_zeroes: true }),
                    Negotiation::with_tls_required(ClientFlags { no_zeroes: false }),
                ] {
                    let _ = n.option(h.opt % 12, &data[16..], lookup);
                }
            }
        }
        let mut req = data.clone();
        req.resize(28, 0);
        req[..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
        let r = Request::read(&req[..].try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, req);
        let _ = check(&r, &rw);
    }
}
