//! Passphrases from keys, byte for byte as os-brick makes them.
//!
//! os-brick unlocks a LUKS volume with `binascii.hexlify(key)`: lowercase hex,
//! two digits per byte, no newline. Before 2016 it built the string as
//! `''.join(hex(b).replace('0x', '') for b in key)`, which drops the leading
//! zero of every byte below 0x10 (bug 1633518); volumes formatted then still
//! carry keyslots for that form, so the service tries it when the correct form
//! does not open a volume.

use zeroize::Zeroizing;

use crate::types::KeyBytes;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The passphrase os-brick derives from `key`: lowercase hex, leading zeros
/// kept (64 characters for a 256-bit key), no newline.
pub fn passphrase_hex(key: &KeyBytes) -> Zeroizing<String> {
    // Capacity fixed up front so the string never reallocates and leaves an
    // unwiped copy behind.
    let mut out = Zeroizing::new(String::with_capacity(key.len() * 2));
    for &b in key.expose() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The legacy "mangled" passphrase of os-brick bug 1633518: each byte's hex
/// without its leading zero (`00 01 0a 10` → `01a10`).
pub fn passphrase_legacy(key: &KeyBytes) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(key.len() * 2));
    for &b in key.expose() {
        if b >= 0x10 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
        }
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}
