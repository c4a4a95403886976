#![no_main]
// decode → encode → decode must agree for every header that parses.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(h) = rekey_luks::luks1::Header::parse(data) {
        assert_eq!(rekey_luks::luks1::Header::parse(&h.encode().unwrap()).unwrap(), h);
    }
});
