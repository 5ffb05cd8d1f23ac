//! The shared cache's value codec (`redis` feature): any value, in clear or sealed, decodes to
//! a usable token or an error that shows none of it; a token written and read back is the
//! same token; a sealed value with any byte changed does not decode.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tower_client_credentials::fuzzing::{
    MAX_LIFETIME, StoredToken, shared_cache_decode, shared_cache_encode,
};

const KEY: &str = "tcc:fuzz";
const KEY_ID: u8 = 3;
/// The errors a round trip can give: a token that is a piece of one of them may show in it.
const REASONS: [&str; 3] = [
    "the stored value is malformed: the access token is empty or not a valid header value",
    "the stored value is malformed: the token type is empty or not a valid scheme",
    "the stored value is malformed: the lifetime is zero",
];

fn usable(token: &StoredToken) -> bool {
    !token.access_token.is_empty()
        && token
            .access_token
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
        && !token.token_type.is_empty()
        && token.token_type.bytes().all(|b| b.is_ascii_graphic())
        && !token.lifetime.is_zero()
}

/// A token from fuzz bytes: fields split at 0xff.
fn token(data: &[u8]) -> StoredToken {
    let mut fields = data.split(|&b| b == 0xff);
    let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let access_token = text();
    let token_type = text();
    let scope = Some(text()).filter(|scope| !scope.is_empty());
    let numbers = text();
    let number = |at: usize| {
        numbers
            .as_bytes()
            .iter()
            .skip(at)
            .take(8)
            .fold(0_u64, |n, &b| n << 8 | u64::from(b))
    };
    StoredToken {
        access_token,
        token_type,
        lifetime: Duration::from_millis(number(0)),
        expires_at_ms: number(8),
        scope,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let key_id = (selector & 1 == 1).then_some(KEY_ID);
    if selector & 2 == 0 {
        // Any stored value.
        match shared_cache_decode(key_id, KEY, rest) {
            Ok(token) => {
                assert!(usable(&token));
                assert!(token.lifetime <= MAX_LIFETIME);
            }
            Err(message) => assert!(!message.is_empty()),
        }
        return;
    }
    // A token written and read back; then the value tampered with.
    let (flip, rest) = rest.split_first().map_or((0, rest), |(f, r)| (*f, r));
    let token = token(rest);
    let value = shared_cache_encode(key_id, KEY, &token);
    match shared_cache_decode(key_id, KEY, &value) {
        Ok(read) => {
            assert!(usable(&token));
            assert!(read.access_token == token.access_token);
            assert_eq!(read.token_type, token.token_type);
            assert_eq!(read.lifetime, token.lifetime.min(MAX_LIFETIME));
            assert_eq!(read.expires_at_ms, token.expires_at_ms);
            assert_eq!(read.scope, token.scope);
        }
        Err(message) => {
            assert!(!usable(&token), "{message}");
            // Unless the token happens to be a piece of the fixed message ("red value").
            if token.access_token.len() >= 8
                && !REASONS
                    .iter()
                    .any(|reason| reason.contains(&*token.access_token))
            {
                assert!(!message.contains(&token.access_token), "{message}");
            }
        }
    }
    // Another replica's key, and a wrong Redis key: neither decodes a sealed value.
    if key_id.is_some() {
        assert!(shared_cache_decode(Some(KEY_ID + 1), KEY, &value).is_err());
        assert!(shared_cache_decode(key_id, "tcc:other", &value).is_err());
        let mut tampered = value.clone();
        let at = usize::from(flip) % tampered.len();
        tampered[at] ^= 0x01 | (flip >> 1);
        assert!(shared_cache_decode(key_id, KEY, &tampered).is_err());
    }
});
