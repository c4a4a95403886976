#![no_main]
// One header copy (binary header + JSON area): decoding must never panic, and
// a copy it accepts must re-encode to one that decodes to the same metadata.
use rekey_luks::luks2::{choose, decode_copy, CopyBytes};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let copy = CopyBytes { offset: 0, bytes: data.to_vec() };
    if let Ok(decoded) = decode_copy(&copy) {
        let mut h = choose(Ok(decoded), Err(rekey_luks::Error::InvalidHeader("absent".into()))).unwrap();
        let meta = h.meta.clone();
        let (primary, _) = h.encode_next().unwrap();
        let (_, again) = decode_copy(&CopyBytes { offset: 0, bytes: primary }).unwrap();
        assert_eq!(again, meta);
    }
});
