//! Directory documents (dir-spec §1.2–§1.3 meta-format): shared encoding helpers, and
//! [`routerdesc`], the server descriptor a relay publishes.
//!
//! Invariants of every document written here: lines end in LF only, with no trailing
//! spaces; inline binary values are unpadded base64; objects are padded base64 wrapped at
//! 64 columns between `-----BEGIN X-----` and `-----END X-----` (INTEROP traps 16, 18).

pub mod authcert;
pub mod bwweights;
pub mod consensus;
pub mod microdesc;
pub mod policy;
pub mod protover;
pub mod routerdesc;
pub mod tokenize;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// Unpadded base64, as inline values use (Ed25519 keys: 43 chars, signatures: 86).
pub fn b64_unpadded(data: &[u8]) -> String {
    STANDARD_NO_PAD.encode(data)
}

/// Decodes base64 with or without padding.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// A PEM-style object: `-----BEGIN {label}-----`, padded base64 in 64-column lines,
/// `-----END {label}-----`, each line ending in LF.
pub fn pem_object(label: &str, data: &[u8]) -> String {
    let b64 = STANDARD.encode(data);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for seconds since the epoch (dir-spec §1.3).
pub fn format_time(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD HH:MM:SS` (UTC) to seconds since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if d.next().is_some()
        || t.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    let days = days_from_civil(y, m, day);
    u64::try_from(days)
        .ok()
        .map(|days| days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_time(1_790_000_000), "2026-09-21 14:13:20");
        assert_eq!(format_time(4_107_542_399), "2100-02-28 23:59:59");
        assert_eq!(parse_time("2026-09-21 14:13:20"), Some(1_790_000_000));
        assert_eq!(parse_time("2026-13-01 00:00:00"), None);
        assert_eq!(parse_time("2026-01-01"), None);
        assert_eq!(parse_time("x"), None);
    }

    #[test]
    fn pem_wraps_at_64() {
        let p = pem_object("X", &[0u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN X-----");
        // 100 bytes are 136 base64 characters: 64 + 64 + 8.
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert!(lines[3].ends_with('='));
        assert_eq!(lines[4], "-----END X-----");
    }

    proptest! {
        #[test]
        fn time_round_trips(secs in 0u64..10_000_000_000) {
            prop_assert_eq!(parse_time(&format_time(secs)), Some(secs));
        }
    }
}
