//! The `DPoP-Nonce` reader: any header value. A nonce is kept exactly when it is
//! `1*NQCHAR` (RFC 9449 §8.1) and at most `MAX_NONCE_LEN` bytes, and then as it was sent.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_client_credentials::fuzzing::{MAX_NONCE_LEN, dpop_nonce};

fn is_nqchar(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        // Not a header value: no server can send it.
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("dpop-nonce"), value);
    let usable =
        !data.is_empty() && data.len() <= MAX_NONCE_LEN && data.iter().all(|&b| is_nqchar(b));
    match dpop_nonce(&headers) {
        Some(nonce) => {
            assert!(usable);
            assert_eq!(nonce.as_bytes(), data);
        }
        None => assert!(!usable),
    }
});
