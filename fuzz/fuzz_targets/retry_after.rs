//! The `Retry-After` reader: any header value, read at any time, and well-formed HTTP dates.
//! The delay is never more than the server asked for: its seconds, or the time from now to
//! its date (zero for a date in the past).
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
use libfuzzer_sys::fuzz_target;
use tower_client_credentials::fuzzing::retry_after;

/// The latest time an HTTP date can name (year 9999).
const MAX_SECS: u64 = 253_402_300_799;

fn delay(value: &[u8], now: SystemTime) -> Option<Duration> {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_bytes(value).ok()?);
    retry_after(&headers, now)
}

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes: the current time; the 9th: how the rest is used.
    let Some((head, rest)) = data.split_first_chunk::<9>() else {
        return;
    };
    let now_secs = u64::from_le_bytes(head[..8].try_into().unwrap()) % MAX_SECS;
    let now = UNIX_EPOCH + Duration::from_secs(now_secs);
    if head[8] & 1 == 0 {
        // Any bytes.
        let Some(delay) = delay(rest, now) else {
            return;
        };
        let text = std::str::from_utf8(rest).unwrap().trim();
        match text.parse::<u64>() {
            Ok(seconds) => assert_eq!(delay, Duration::from_secs(seconds)),
            Err(_) => {
                let date = httpdate::parse_http_date(text).expect("a date");
                assert_eq!(delay, date.duration_since(now).unwrap_or(Duration::ZERO));
            }
        }
    } else {
        // A date: the delay is exactly the time until it.
        let mut secs = [0u8; 8];
        let take = rest.len().min(8);
        secs[..take].copy_from_slice(&rest[..take]);
        let date = UNIX_EPOCH + Duration::from_secs(u64::from_le_bytes(secs) % MAX_SECS);
        let value = httpdate::fmt_http_date(date);
        let expected = date.duration_since(now).unwrap_or(Duration::ZERO);
        assert_eq!(delay(value.as_bytes(), now), Some(expected), "{value}");
    }
});
