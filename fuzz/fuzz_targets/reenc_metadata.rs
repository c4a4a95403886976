#![no_main]
// One header copy carrying re-encryption state: whatever it holds, reading
// cryptsetup's re-encryption metadata from it is an error or a state, never a
// panic; an accepted state yields its progress and digest input without one.
use rekey_luks::luks2::{decode_copy, reenc, CopyBytes};
use rekey_luks::Secret;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let copy = CopyBytes { offset: 0, bytes: data.to_vec() };
    if let Ok((_, meta)) = decode_copy(&copy) {
        if let Ok(Some(st)) = reenc::parse(&meta) {
            let _ = st.progress(&meta, 1 << 30);
            let key = Secret::new(vec![0x5a; 64]);
            let _ = reenc::verification_data(&meta, &st, Some(&key), Some(&key));
        }
    }
});
