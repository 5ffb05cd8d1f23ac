//! The message the lease holder publishes when it stores a token: the value and its time to
//! live, so that the waiting replicas adopt it without reading the key again.
//!
//! `0x01`, the time to live in milliseconds (8 bytes, big-endian), then the value as stored.
//! Anything else (the empty message of a lease given up, a message of another version, one
//! too long) only wakes the waiters, which then read the key: a replica of another version
//! still gets its token.

use std::time::Duration;

use zeroize::Zeroizing;

/// The first byte of a message that carries a value.
const VALUE: u8 = 0x01;

/// The longest value a message carries; a longer one is read from the key. Tokens are a few
/// KiB; this bounds what a hostile publisher makes every replica keep.
pub(crate) const MAX_VALUE: usize = 64 * 1024;

/// The message that publishes `value`, stored with `ttl`; the empty message (a wake-up only)
/// for a value longer than [`MAX_VALUE`].
pub(crate) fn encode(value: &[u8], ttl: Duration) -> Zeroizing<Vec<u8>> {
    let mut message = Zeroizing::new(Vec::new());
    if value.len() <= MAX_VALUE {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        message.reserve_exact(1 + 8 + value.len());
        message.push(VALUE);
        message.extend_from_slice(&ttl_ms.to_be_bytes());
        message.extend_from_slice(value);
    }
    message
}

/// The time to live and value a message carries, or `None` for a wake-up only.
pub(crate) fn decode(message: &[u8]) -> Option<(Duration, &[u8])> {
    let (&VALUE, rest) = message.split_first()? else {
        return None;
    };
    let (ttl_ms, value) = rest.split_first_chunk::<8>()?;
    if value.is_empty() || value.len() > MAX_VALUE {
        return None;
    }
    Some((Duration::from_millis(u64::from_be_bytes(*ttl_ms)), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_and_its_ttl_round_trip() {
        let ttl = Duration::from_millis(4_321);
        let message = encode(b"sealed value", ttl);
        assert_eq!(decode(&message), Some((ttl, &b"sealed value"[..])));
        // Milliseconds: what `SET PX` keeps too.
        let message = encode(b"v", Duration::from_micros(1_999));
        assert_eq!(
            decode(&message),
            Some((Duration::from_millis(1), &b"v"[..]))
        );
        let message = encode(b"v", Duration::MAX);
        assert_eq!(
            decode(&message).map(|(ttl, _)| ttl.as_millis()),
            Some(u64::MAX.into())
        );
    }

    #[test]
    fn anything_else_only_wakes() {
        // A lease given up publishes the empty message.
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x01"), None);
        assert_eq!(decode(b"\x01\0\0\0\0\0\0\x03"), None);
        // No value after the TTL.
        assert_eq!(decode(b"\x01\0\0\0\0\0\0\0\x03"), None);
        assert_eq!(decode(b"\x02\0\0\0\0\0\0\0\x03value"), None);
        // Too long to carry: written as a wake-up, and refused as a value if sent anyway.
        let long = vec![b'x'; MAX_VALUE + 1];
        assert!(encode(&long, Duration::from_secs(1)).is_empty());
        let mut message = vec![VALUE, 0, 0, 0, 0, 0, 0, 0, 1];
        message.extend_from_slice(&long);
        assert_eq!(decode(&message), None);
        let at_limit = encode(&long[1..], Duration::from_secs(1));
        assert_eq!(
            decode(&at_limit).map(|(_, value)| value.len()),
            Some(MAX_VALUE)
        );
    }
}
