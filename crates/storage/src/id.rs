//! Volume and snapshot ids.
//!
//! Ids become file names and RBD image names, so they are checked before any
//! use: ASCII letters, digits, `-` and `_`, starting with a letter or digit,
//! at most 64 bytes. That admits UUIDs and rejects `..`, `/`, `@` (RBD's
//! snapshot separator), NUL and whitespace.

use crate::error::{Error, ErrorKind, Result};

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Checks that `id` is safe to embed in a file or image name.
pub fn validate_id(id: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let starts_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if id.len() > MAX_ID_LEN || !starts_ok || !id.chars().all(ok_char) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "invalid id {:?}: want 1-{MAX_ID_LEN} ASCII letters, digits, '-' or '_', \
                 starting with a letter or digit",
                id.escape_debug().to_string()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_simple_names() {
        for id in ["0b5a1a1e-6d1d-4f6e-9d2c-2f0f1d7f7b8a", "a", "vol_1", "A-9"] {
            validate_id(id).unwrap();
        }
    }

    #[test]
    fn rejects_traversal_and_separators() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for id in ["", "..", "../x", "a/b", "/abs", "a@b", "-a", "_a", "a b", "a\0", "é", &long] {
            let err = validate_id(id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}");
        }
    }
}
