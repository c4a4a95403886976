use super::*;

#[test]
fn greeting_is_nbdmagic_ihaveopt_fixed_newstyle() {
    let g = greeting();
    assert_eq!(&g[..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    assert_eq!(u16::from_be_bytes([g[16], g[17]]), 3);
}

#[test]
fn client_flags_refuse_non_fixed_and_unknown() {
    assert_eq!(
        ClientFlags::read(1u32.to_be_bytes()),
        Ok(ClientFlags { no_zeroes: false })
    );
    assert_eq!(
        ClientFlags::read(3u32.to_be_bytes()),
        Ok(ClientFlags { no_zeroes: true })
    );
    assert!(ClientFlags::read(0u32.to_be_bytes()).is_err());
    assert!(ClientFlags::read(2u32.to_be_bytes()).is_err());
    assert!(ClientFlags::read(5u32.to_be_bytes()).is_err());
}

#[test]
fn option_header_round_trips_and_rejects_bad_magic_and_length() {
    let mut b = Vec::new();
    OptionHeader {
        opt: opt::GO,
        len: 12,
    }
    .encode(&mut b);
    let head: [u8; 16] = b.clone().try_into().unwrap();
    assert_eq!(
        OptionHeader::read(&head),
        Ok(OptionHeader {
            opt: opt::GO,
            len: 12
        })
    );
    let mut bad = head;
    bad[0] ^= 1;
    assert!(OptionHeader::read(&bad).is_err());
    let mut b = Vec::new();
    OptionHeader {
        opt: opt::GO,
        len: MAX_OPTION + 1,
    }
    .encode(&mut b);
    assert!(OptionHeader::read(&b.try_into().unwrap()).is_err());
}

#[test]
fn info_option_parses_and_rejects_short_or_trailing_data() {
    let mut d = 3u32.to_be_bytes().to_vec();
    d.extend_from_slice(b"vol");
    d.extend_from_slice(&2u16.to_be_bytes());
    d.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    d.extend_from_slice(&info::NAME.to_be_bytes());
    assert_eq!(
        ClientOption::read(opt::GO, &d),
        Ok(ClientOption::Info {
            name: "vol".into(),
            requests: vec![3, 1],
            go: true
        })
    );
    assert!(ClientOption::read(opt::INFO, &d[..d.len() - 1]).is_err());
    let mut long = d.clone();
    long.push(0);
    assert!(ClientOption::read(opt::INFO, &long).is_err());
    let mut huge = (MAX_NAME as u32 + 1).to_be_bytes().to_vec();
    huge.resize(4 + MAX_NAME + 1 + 2, b'a');
    assert!(ClientOption::read(opt::INFO, &huge).is_err());
    assert!(ClientOption::read(opt::LIST, b"x").is_err());
    assert!(ClientOption::read(opt::EXPORT_NAME, &[0xff, 0xfe]).is_err());
    assert_eq!(
        ClientOption::read(42, b"anything"),
        Ok(ClientOption::Unsupported(42))
    );
}

#[test]
fn request_round_trips_and_rejects_bad_magic() {
    let req = Request {
        flags: cflag::FUA,
        kind: cmd::WRITE,
        cookie: 0xdead_beef,
        offset: 1 << 40,
        len: 4096,
    };
    let mut b = Vec::new();
    req.encode(&mut b);
    let head: [u8; Request::LEN] = b.try_into().unwrap();
    assert_eq!(Request::read(&head), Ok(req));
    let mut bad = head;
    bad[3] ^= 0x80;
    assert!(Request::read(&bad).is_err());
}

#[test]
fn simple_reply_layout() {
    let mut b = Vec::new();
    simple_reply(&mut b, errno::EINVAL, 7);
    assert_eq!(b.len(), SIMPLE_REPLY_LEN);
    assert_eq!(&b[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
    assert_eq!(&b[4..8], &22u32.to_be_bytes());
    assert_eq!(&b[8..], &7u64.to_be_bytes());
}
