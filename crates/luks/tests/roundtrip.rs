//! Property tests: format → parse → encode round trips, and parsers that
//! never panic on arbitrary bytes.

use proptest::prelude::*;
use rekey_luks::crypto::CipherSpec;
use rekey_luks::luks2::{self, binary};
use rekey_luks::volume::read_header;
use rekey_luks::{luks1, FormatOptions, Header, MemIo, PbkdfOptions, Version, Volume};

fn luks1_header() -> impl Strategy<Value = luks1::Header> {
    (
        prop::sample::select(vec![("aes", "xts-plain64", 32u32), ("aes", "xts-plain64", 64), ("aes", "cbc-essiv:sha256", 32)]),
        prop::sample::select(vec!["sha1", "sha256", "sha512"]),
        any::<[u8; 20]>(),
        any::<[u8; 32]>(),
        1000u32..1_000_000,
        prop::collection::vec((any::<bool>(), 1000u32..100_000, any::<[u8; 32]>()), 8),
    )
        .prop_map(|((c, m, kb), hash, dig, salt, it, slots)| {
            let (offsets, payload) = luks1::Header::layout(kb);
            let keyslots: Vec<luks1::Keyslot> = slots
                .into_iter()
                .zip(offsets)
                .map(|((active, iterations, salt), off)| luks1::Keyslot {
                    active,
                    iterations,
                    salt,
                    key_material_offset: off,
                    stripes: 4000,
                })
                .collect();
            luks1::Header {
                cipher_name: c.into(),
                cipher_mode: m.into(),
                hash_spec: hash.into(),
                payload_offset: payload,
                key_bytes: kb,
                mk_digest: dig,
                mk_digest_salt: salt,
                mk_digest_iterations: it,
                uuid: uuid::Uuid::from_bytes(salt[..16].try_into().unwrap()).to_string(),
                keyslots: keyslots.try_into().unwrap(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn luks1_encode_parse_round_trip(h in luks1_header()) {
        let bytes = h.encode().unwrap();
        prop_assert_eq!(bytes.len(), luks1::PHDR_SIZE);
        prop_assert_eq!(luks1::Header::parse(&bytes).unwrap(), h);
    }

    #[test]
    fn luks1_parse_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        if bytes.len() >= 8 { bytes[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x01"); }
        let _ = luks1::Header::parse(&bytes);
    }

    #[test]
    fn luks2_binary_parse_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        if bytes.len() >= 8 { bytes[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x02"); }
        let _ = luks2::decode_copy(&luks2::CopyBytes { offset: 0, bytes });
    }

    #[test]
    fn luks2_json_parse_never_panics(s in "\\PC*") {
        let _ = luks2::Metadata::parse(s.as_bytes());
    }

    #[test]
    fn format_parse_encode_round_trip(
        v2 in any::<bool>(),
        xts512 in any::<bool>(),
        sector4k in any::<bool>(),
        label in "[a-z0-9-]{0,47}",
        slot in 0u32..8,
    ) {
        let version = if v2 { Version::Luks2 } else { Version::Luks1 };
        let opts = FormatOptions {
            version,
            cipher: CipherSpec::parse("aes-xts-plain64").unwrap(),
            key_size_bits: if xts512 { 512 } else { 256 },
            sector_size: if sector4k && v2 { 4096 } else { 512 },
            pbkdf: PbkdfOptions::minimal(),
            label: v2.then(|| label.clone()),
            keyslot: Some(slot),
            ..Default::default()
        };
        let io = MemIo::new(17 << 20);
        let v = Volume::format(&io, &opts, b"pw", None).unwrap();
        let parsed = read_header(&io).unwrap();
        prop_assert_eq!(&parsed, v.header());
        prop_assert_eq!(v.active_keyslots(), vec![slot]);
        match parsed {
            Header::Luks1(h) => prop_assert_eq!(luks1::Header::parse(&h.encode().unwrap()).unwrap(), h),
            Header::Luks2(mut h) => {
                let before = h.meta.clone();
                let (primary, secondary) = h.encode_next().unwrap();
                let (bin, meta) = luks2::decode_copy(&luks2::CopyBytes { offset: 0, bytes: primary }).unwrap();
                prop_assert_eq!(&meta, &before);
                prop_assert_eq!(bin.label, label);
                let (bin2, meta2) = luks2::decode_copy(&luks2::CopyBytes { offset: h.hdr_size, bytes: secondary }).unwrap();
                prop_assert_eq!(meta2, before);
                prop_assert_eq!(bin2.copy, binary::Copy::Secondary);
                prop_assert_eq!(bin2.seqid, bin.seqid);
            }
        }
    }
}

/// Unknown tokens, unknown members and unknown keyslot types survive a rewrite.
#[test]
fn unknown_json_is_preserved() {
    let io = MemIo::new(17 << 20);
    let opts = FormatOptions { pbkdf: PbkdfOptions::minimal(), ..Default::default() };
    let mut v = Volume::format(&io, &opts, b"pw", None).unwrap();
    let Header::Luks2(mut h) = v.header().clone() else { unreachable!() };
    h.meta.tokens.insert(3, serde_json::json!({"type": "systemd-tpm2", "keyslots": ["0"], "tpm2-pcrs": [7]}));
    h.meta.extra.insert("x-future".into(), serde_json::json!({"a": 1}));
    h.meta.segments.get_mut(&0).unwrap().extra.insert("x-seg".into(), serde_json::json!("kept"));
    v.commit_luks2(h).unwrap();
    v.add_keyslot(b"pw", b"pw2", None, &PbkdfOptions::minimal()).unwrap();
    let Header::Luks2(after) = read_header(&io).unwrap() else { unreachable!() };
    assert_eq!(after.meta.tokens[&3]["tpm2-pcrs"][0], 7);
    assert_eq!(after.meta.extra["x-future"]["a"], 1);
    assert_eq!(after.meta.segments[&0].extra["x-seg"], "kept");
}

/// A header with an unknown mandatory requirement is refused clearly.
#[test]
fn unknown_mandatory_requirement_is_refused() {
    let io = MemIo::new(17 << 20);
    let opts = FormatOptions { pbkdf: PbkdfOptions::minimal(), ..Default::default() };
    let mut v = Volume::format(&io, &opts, b"pw", None).unwrap();
    let Header::Luks2(mut h) = v.header().clone() else { unreachable!() };
    h.meta.config.requirements = Some(luks2::json::Requirements { mandatory: vec!["x-from-the-future".into()], ..Default::default() });
    v.commit_luks2(h).unwrap();
    let v = Volume::open(&io).unwrap();
    let err = v.unlock(b"pw", None).unwrap_err();
    assert_eq!(err.kind(), rekey_luks::ErrorKind::Unsupported);
    assert!(err.to_string().contains("x-from-the-future"), "{err}");
}

/// Found by cargo fuzz: a text field filling its whole width parsed, but
/// could not be written back. Fields end one byte early, as in cryptsetup.
#[test]
fn full_width_text_field_round_trips() {
    let mut h = luks1::Header::parse(&luks1_sample()).unwrap().encode().unwrap();
    h[8..40].fill(b'a'); // cipher name, no NUL at all
    let parsed = luks1::Header::parse(&h).unwrap();
    assert_eq!(parsed.cipher_name.len(), 31);
    assert_eq!(luks1::Header::parse(&parsed.encode().unwrap()).unwrap(), parsed);
}

fn luks1_sample() -> Vec<u8> {
    let io = MemIo::new(4 << 20);
    let opts = FormatOptions { version: Version::Luks1, pbkdf: PbkdfOptions::minimal(), key_size_bits: 256, ..Default::default() };
    Volume::format(&io, &opts, b"pw", None).unwrap();
    io.to_vec()[..luks1::PHDR_SIZE].to_vec()
}
