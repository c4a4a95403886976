//! What the HTTP-speaking key managers (and the service's Keystone client)
//! share: how an endpoint URL is read, and Keystone's `expires_at` times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::KeyError;

/// `url` without trailing slashes or a trailing `/v1`, checked to be an
/// http(s) URL with a host; `what` names the setting in the error.
pub(crate) fn endpoint_base(what: &'static str, url: &str) -> Result<String, KeyError> {
    let url = url.trim().trim_end_matches('/');
    let base = url.strip_suffix("/v1").unwrap_or(url).to_string();
    let parsed = reqwest::Url::parse(&base).map_err(|e| KeyError::invalid(what, format!("{base:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(KeyError::invalid(what, format!("{base:?} is not an http(s) URL with a host")));
    }
    Ok(base)
}

/// Time left until a Keystone `expires_at` (`2026-12-01T21:00:00.000000Z`);
/// `None` if it is past or unreadable.
pub fn keystone_time_left(expires_at: &str) -> Option<Duration> {
    let at = unix_seconds(expires_at)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    at.checked_sub(now).filter(|s| *s > 0).map(Duration::from_secs)
}

/// Seconds since the epoch of an RFC 3339 UTC time (fractions dropped).
fn unix_seconds(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once('T')?;
    let time = time.trim_end_matches('Z');
    let time = time.strip_suffix("+00:00").unwrap_or(time);
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let hms = time.split('.').next()?;
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystone_times() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2026-12-01T21:00:00.000000Z"), Some(1_796_158_800));
        assert_eq!(unix_seconds("2000-02-29T12:30:15+00:00"), Some(951_827_415));
        assert_eq!(unix_seconds("2026-13-01T00:00:00Z"), None);
        assert_eq!(unix_seconds("tomorrow"), None);
        assert_eq!(keystone_time_left("2000-01-01T00:00:00.000000Z"), None);
        let left = keystone_time_left("2999-01-01T00:00:00.000000Z").unwrap();
        assert!(left > Duration::from_secs(86_400 * 365 * 900));
        assert_eq!(keystone_time_left("soon"), None);
    }

    #[test]
    fn endpoint_bases() {
        assert_eq!(endpoint_base("x", " http://h:1/v1/ ").unwrap(), "http://h:1");
        assert_eq!(endpoint_base("x", "https://h").unwrap(), "https://h");
        assert!(endpoint_base("x", "ftp://h").is_err());
        assert!(endpoint_base("x", "not a url").is_err());
    }
}
