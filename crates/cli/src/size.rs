//! Sizes on the command line as people type them: `40M`, `64MiB`, `4k`,
//! `1073741824`. Suffixes are binary (K = 1024), as cryptsetup's and
//! qemu-img's are.

/// Parses plain bytes or a number with a K/M/G/T suffix (optionally
/// followed by `iB` or `B`, any case). Whole numbers only; overflow, a
/// fraction, a sign or an unknown suffix is an error naming the input.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, suffix) = s.split_at(digits);
    let bad = || format!("{s:?} is not a size (bytes, or a whole number with K, M, G or T: 40M, 64MiB)");
    if number.is_empty() {
        return Err(bad());
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// [`parse_size`] for flags held in a `u32` (sector sizes).
pub fn parse_size_u32(s: &str) -> Result<u32, String> {
    u32::try_from(parse_size(s)?).map_err(|_| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_suffixes_and_plain_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("20971520"), Ok(20 << 20));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("40M"), Ok(40 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
    }

    #[test]
    fn everything_else_is_refused() {
        for s in ["", "M", "-1", "+4K", "1.5G", "4 K", " 4K", "4K ", "4X", "4KK", "0x10", "16777216T", "99999999999999999999"] {
            assert!(parse_size(s).is_err(), "{s:?}");
        }
        assert!(parse_size_u32("4G").is_err());
        assert_eq!(parse_size_u32("4K"), Ok(4096));
    }
}
