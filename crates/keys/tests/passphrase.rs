//! Passphrases match os-brick's byte for byte.
//!
//! os-brick: `binascii.hexlify(key).decode('utf-8')`; legacy (bug 1633518):
//! `''.join(hex(b).replace('0x', '') for b in key)`. The expected strings
//! below are what those Python expressions print for these keys.

use rekey_keys::{passphrase_hex, passphrase_legacy, KeyBytes};

#[test]
fn leading_zero_bytes_are_kept() {
    let key = KeyBytes::from_slice(&[0x00, 0x00, 0x01, 0x0a, 0x10, 0x11]);
    assert_eq!(passphrase_hex(&key).as_str(), "0000010a1011");
    assert_eq!(passphrase_legacy(&key).as_str(), "001a1011");
}

#[test]
fn full_256_bit_key() {
    let key = KeyBytes::from_slice(&[
        0x00, 0x00, 0x01, 0x0a, 0x10, 0x11, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0x81, 0x92, 0xa3,
        0xb4, 0xc5, 0xd6, 0xe7, 0xf8, 0x09, 0x0f, 0xf0, 0xff, 0x7f, 0x80, 0x01, 0x00, 0xde, 0xad,
        0xbe, 0xef,
    ]);
    let hex = passphrase_hex(&key);
    assert_eq!(
        hex.as_str(),
        "0000010a10112b3c4d5e6f708192a3b4c5d6e7f8090ff0ff7f800100deadbeef"
    );
    assert_eq!(hex.len(), 64, "64 characters for 256 bits");
    assert!(!hex.ends_with('\n'));
    assert_eq!(
        passphrase_legacy(&key).as_str(),
        "001a10112b3c4d5e6f708192a3b4c5d6e7f89ff0ff7f8010deadbeef"
    );
}

#[test]
fn every_byte_value() {
    let all: Vec<u8> = (0..=255).collect();
    let key = KeyBytes::from_slice(&all);
    let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(passphrase_hex(&key).as_str(), expected);
    let legacy: String = all.iter().map(|b| format!("{b:x}")).collect();
    assert_eq!(passphrase_legacy(&key).as_str(), legacy);
}

#[test]
fn hex_is_lowercase_and_legacy_differs_only_with_small_bytes() {
    let key = KeyBytes::from_slice(&[0xAB, 0xCD, 0xEF, 0x10]);
    assert_eq!(passphrase_hex(&key).as_str(), "abcdef10");
    assert_eq!(
        passphrase_legacy(&key).as_str(),
        "abcdef10",
        "no byte below 0x10: both forms agree"
    );
    assert_eq!(passphrase_hex(&KeyBytes::new(Vec::new())).as_str(), "");
}
