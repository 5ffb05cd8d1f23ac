//! What is stored under a shared token's key: the access token and the metadata a replica needs
//! to use it (token type, lifetime, expiry, scope), never a client secret or key.
//!
//! A value is one format byte followed by the record:
//!
//! - `0x01` then the record as JSON, in clear: anyone who can read the key can use the token.
//! - `0x02`, a key id byte, a 96-bit random nonce, then the JSON record sealed with AES-256-GCM
//!   under the key of that id. The associated data is the format byte, the key id and the
//!   Redis key name, so a value copied under another key (another client's, other scopes) does
//!   not decrypt either.
//!
//! Anything else, an unknown key id, a value that does not authenticate, a record that does
//! not parse, or a plaintext value where encryption is configured (and the reverse) is a
//! [`ValueError`]: the caller treats it as a miss, and never panics.

use std::{borrow::Cow, fmt, time::Duration};

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const PLAIN: u8 = 0x01;
const SEALED: u8 = 0x02;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Prepended to the associated data: values of this crate only.
const AAD_DOMAIN: &[u8] = b"tower-client-credentials/shared-token/v1";

/// A token as stored in the shared cache.
pub(crate) struct StoredToken {
    pub(crate) access_token: Zeroizing<String>,
    /// The `Authorization` scheme, `Bearer`.
    pub(crate) token_type: String,
    /// The lifetime the token was issued with.
    pub(crate) lifetime: Duration,
    /// When it expires, in Unix milliseconds by the clock of the replica that fetched it. For
    /// people reading the key: replicas go by the key's TTL, which no clock skew affects.
    pub(crate) expires_at_ms: u64,
    pub(crate) scope: Option<String>,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("lifetime", &self.lifetime)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The JSON record. Its strings are borrowed from the JSON unless they hold escapes (a `"` or
/// `\` in a token, a control character in a scope), which `&str` fields would refuse.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    access_token: Cow<'a, str>,
    #[serde(borrow)]
    token_type: Cow<'a, str>,
    lifetime_ms: u64,
    expires_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<Cow<'a, str>>,
}

/// Why a stored value cannot be used. None of them shows any part of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum ValueError {
    /// The value is empty.
    Empty,
    /// The first byte is not a format this crate writes.
    UnknownFormat(u8),
    /// The value is in clear but an encryption key is configured.
    NotEncrypted,
    /// The value is encrypted but no encryption key is configured.
    NoKey,
    /// The value was sealed with a key id that is not the configured one.
    UnknownKeyId {
        /// The id in the value.
        found: u8,
        /// The configured id.
        expected: u8,
    },
    /// The value is too short to hold a nonce and a tag.
    Truncated,
    /// The value does not authenticate under the configured key: a wrong key with the same id,
    /// a value tampered with or moved from another key.
    Decrypt,
    /// The record does not parse, or holds an unusable token.
    Malformed(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the stored value is empty"),
            Self::UnknownFormat(byte) => write!(f, "unknown value format 0x{byte:02x}"),
            Self::NotEncrypted => {
                f.write_str("the stored value is not encrypted but an encryption key is set")
            }
            Self::NoKey => f.write_str("the stored value is encrypted and no key is set"),
            Self::UnknownKeyId { found, expected } => write!(
                f,
                "the stored value is sealed with key id {found}, the configured key is {expected}"
            ),
            Self::Truncated => f.write_str("the stored value is truncated"),
            Self::Decrypt => {
                f.write_str("the stored value does not decrypt with the configured key")
            }
            Self::Malformed(reason) => write!(f, "the stored value is malformed: {reason}"),
        }
    }
}

impl std::error::Error for ValueError {}

/// The 256-bit key that seals stored values, and its id.
#[derive(Clone)]
pub(crate) struct Sealing {
    id: u8,
    /// "Less safe" only in that the caller picks the nonces: a fresh random 96-bit one per
    /// value, well inside the birthday bound for the handful of values a key ever seals.
    cipher: Arc<LessSafeKey>,
}

impl Sealing {
    pub(crate) fn new(id: u8, key: &[u8; 32]) -> Self {
        // A 32-byte key is exactly what AES-256-GCM takes, so this cannot fail.
        let key = UnboundKey::new(&AES_256_GCM, key).expect("an AES-256 key is 32 bytes");
        Self {
            id,
            cipher: Arc::new(LessSafeKey::new(key)),
        }
    }

    pub(crate) fn id(&self) -> u8 {
        self.id
    }
}

impl fmt::Debug for Sealing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealing")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Encodes and decodes the values of one Redis key.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    pub(crate) sealing: Option<Sealing>,
}

impl Codec {
    /// The value of `token` under `key`. The bytes are zeroed when dropped.
    pub(crate) fn encode(&self, key: &str, token: &StoredToken) -> Zeroizing<Vec<u8>> {
        let record = Record {
            access_token: Cow::Borrowed(&token.access_token),
            token_type: Cow::Borrowed(&token.token_type),
            lifetime_ms: u64::try_from(token.lifetime.as_millis()).unwrap_or(u64::MAX),
            expires_at_ms: token.expires_at_ms,
            scope: token.scope.as_deref().map(Cow::Borrowed),
        };
        // Serializing a struct of strings and integers cannot fail.
        let json = Zeroizing::new(serde_json::to_vec(&record).unwrap_or_default());
        match &self.sealing {
            None => {
                let mut value = Zeroizing::new(Vec::with_capacity(1 + json.len()));
                value.push(PLAIN);
                value.extend_from_slice(&json);
                value
            }
            Some(sealing) => {
                let mut nonce = [0_u8; NONCE_LEN];
                let header = [SEALED, sealing.id];
                let aad = aad(&header, key);
                let mut sealed = Zeroizing::new(Vec::with_capacity(json.len() + TAG_LEN));
                sealed.extend_from_slice(&json);
                // Sealing fails only when the random source does, or for messages beyond
                // 64 GiB: the value is then empty, which every reader takes as a miss.
                let sealed_ok = aws_lc_rs::rand::fill(&mut nonce).is_ok()
                    && sealing
                        .cipher
                        .seal_in_place_append_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&aad[..]),
                            &mut *sealed,
                        )
                        .is_ok();
                let mut value = Zeroizing::new(Vec::with_capacity(2 + NONCE_LEN + sealed.len()));
                if sealed_ok {
                    value.extend_from_slice(&header);
                    value.extend_from_slice(&nonce);
                    value.extend_from_slice(&sealed);
                }
                value
            }
        }
    }

    /// The token in `value`, read under `key`.
    pub(crate) fn decode(&self, key: &str, value: &[u8]) -> Result<StoredToken, ValueError> {
        let (&format, rest) = value.split_first().ok_or(ValueError::Empty)?;
        match (format, &self.sealing) {
            (PLAIN, None) => parse(rest),
            (PLAIN, Some(_)) => Err(ValueError::NotEncrypted),
            (SEALED, None) => Err(ValueError::NoKey),
            (SEALED, Some(sealing)) => {
                let (&id, rest) = rest.split_first().ok_or(ValueError::Truncated)?;
                if id != sealing.id {
                    return Err(ValueError::UnknownKeyId {
                        found: id,
                        expected: sealing.id,
                    });
                }
                if rest.len() < NONCE_LEN + TAG_LEN {
                    return Err(ValueError::Truncated);
                }
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| ValueError::Truncated)?;
                let aad = aad(&[SEALED, id], key);
                let mut buffer = Zeroizing::new(sealed.to_vec());
                let json = sealing
                    .cipher
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad[..]),
                        &mut buffer[..],
                    )
                    .map_err(|_| ValueError::Decrypt)?;
                parse(json)
            }
            (other, _) => Err(ValueError::UnknownFormat(other)),
        }
    }
}

fn aad(header: &[u8], key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + header.len() + key.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(header);
    aad.extend_from_slice(key.as_bytes());
    aad
}

fn parse(json: &[u8]) -> Result<StoredToken, ValueError> {
    // The error's position and category only: its message may quote the value.
    let record: Record<'_> = serde_json::from_slice(json).map_err(|error| {
        ValueError::Malformed(format!(
            "not a token record ({:?} error at column {})",
            error.classify(),
            error.column()
        ))
    })?;
    let malformed = |reason: &str| Err(ValueError::Malformed(reason.to_owned()));
    if record.access_token.is_empty()
        || !record
            .access_token
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return malformed("the access token is empty or not a valid header value");
    }
    if record.token_type.is_empty() || !record.token_type.bytes().all(|b| b.is_ascii_graphic()) {
        return malformed("the token type is empty or not a valid scheme");
    }
    if record.lifetime_ms == 0 {
        return malformed("the lifetime is zero");
    }
    Ok(StoredToken {
        // An unescaped token is moved, not copied, into the zeroing string.
        access_token: Zeroizing::new(record.access_token.into_owned()),
        token_type: record.token_type.into_owned(),
        lifetime: Duration::from_millis(record.lifetime_ms).min(crate::token::MAX_LIFETIME),
        expires_at_ms: record.expires_at_ms,
        scope: record.scope.map(Cow::into_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "tcc:0123";
    const SECRET_TOKEN: &str = "eyJ-the-access-token-0123456789";

    fn token() -> StoredToken {
        StoredToken {
            access_token: Zeroizing::new(SECRET_TOKEN.to_owned()),
            token_type: "Bearer".into(),
            lifetime: Duration::from_secs(3600),
            expires_at_ms: 1_700_000_000_000,
            scope: Some("orders:read".into()),
        }
    }

    fn plain() -> Codec {
        Codec { sealing: None }
    }

    fn sealed(id: u8, key: u8) -> Codec {
        Codec {
            sealing: Some(Sealing::new(id, &[key; 32])),
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn values_that_json_escapes_round_trip() {
        // RFC 6749 allows `"` and `\` in a token (VSCHAR); a server may send anything as
        // scope. Found by the `shared_cache` fuzz target: these did not decode.
        let token = StoredToken {
            access_token: Zeroizing::new(r#"a"b\c"#.to_owned()),
            token_type: "Bearer".into(),
            lifetime: Duration::from_secs(60),
            expires_at_ms: 1,
            scope: Some("x\u{12}\"y".into()),
        };
        for codec in [plain(), sealed(1, 7)] {
            let decoded = codec.decode(KEY, &codec.encode(KEY, &token)).unwrap();
            assert_eq!(*decoded.access_token, *token.access_token);
            assert_eq!(decoded.scope, token.scope);
        }
    }

    #[test]
    fn plaintext_round_trip() {
        let value = plain().encode(KEY, &token());
        assert_eq!(value[0], PLAIN);
        let json: serde_json::Value = serde_json::from_slice(&value[1..]).unwrap();
        assert_eq!(json["access_token"], SECRET_TOKEN);
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["lifetime_ms"], 3_600_000);
        assert_eq!(json["expires_at_ms"], 1_700_000_000_000_u64);
        assert_eq!(json["scope"], "orders:read");
        let decoded = plain().decode(KEY, &value).unwrap();
        assert_eq!(&*decoded.access_token, SECRET_TOKEN);
        assert_eq!(decoded.token_type, "Bearer");
        assert_eq!(decoded.lifetime, Duration::from_secs(3600));
        assert_eq!(decoded.expires_at_ms, 1_700_000_000_000);
        assert_eq!(decoded.scope.as_deref(), Some("orders:read"));
        assert!(!format!("{decoded:?}").contains(SECRET_TOKEN));
    }

    #[test]
    fn sealed_round_trip_hides_the_token() {
        let codec = sealed(7, 0x42);
        let value = codec.encode(KEY, &token());
        assert_eq!(&value[..2], &[SEALED, 7]);
        assert!(!contains(&value, SECRET_TOKEN.as_bytes()));
        assert!(!contains(&value, b"orders:read"));
        let decoded = codec.decode(KEY, &value).unwrap();
        assert_eq!(&*decoded.access_token, SECRET_TOKEN);
        // A fresh nonce every time.
        assert_ne!(*value, *codec.encode(KEY, &token()));
        assert!(!format!("{codec:?}").contains("66"));
    }

    #[test]
    fn wrong_keys_and_mismatched_modes_are_typed_errors() {
        let value = sealed(7, 0x42).encode(KEY, &token());
        assert_eq!(
            sealed(7, 0x43).decode(KEY, &value).unwrap_err(),
            ValueError::Decrypt
        );
        assert_eq!(
            sealed(8, 0x42).decode(KEY, &value).unwrap_err(),
            ValueError::UnknownKeyId {
                found: 7,
                expected: 8
            }
        );
        // Moved under another key: the associated data no longer matches.
        assert_eq!(
            sealed(7, 0x42).decode("tcc:other", &value).unwrap_err(),
            ValueError::Decrypt
        );
        assert_eq!(plain().decode(KEY, &value).unwrap_err(), ValueError::NoKey);
        let clear = plain().encode(KEY, &token());
        assert_eq!(
            sealed(7, 0x42).decode(KEY, &clear).unwrap_err(),
            ValueError::NotEncrypted
        );
        // Tampering with any byte of the sealed part is detected.
        let mut tampered = value.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            sealed(7, 0x42).decode(KEY, &tampered).unwrap_err(),
            ValueError::Decrypt
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"garbage",
            b"\x01",
            b"\x01{",
            b"\x01[1,2]",
            b"\x01{\"access_token\":\"\",\"token_type\":\"Bearer\",\"lifetime_ms\":1,\"expires_at_ms\":1}",
            b"\x01{\"access_token\":\"a\\nb\",\"token_type\":\"Bearer\",\"lifetime_ms\":1,\"expires_at_ms\":1}",
            b"\x01{\"access_token\":\"ab\",\"token_type\":\"Bearer\",\"lifetime_ms\":0,\"expires_at_ms\":1}",
            b"\x01{\"access_token\":\"ab\",\"token_type\":\"Bearer\",\"lifetime_ms\":-5,\"expires_at_ms\":1}",
            b"\x01{\"access_token\":7}",
            b"\x02",
            b"\x02\x07",
            b"\x02\x07short",
            b"\xff\xfe\xfd",
        ];
        for case in cases {
            assert!(plain().decode(KEY, case).is_err(), "{case:?}");
            assert!(sealed(7, 1).decode(KEY, case).is_err(), "{case:?}");
        }
        for _ in 0..2000 {
            let len = fastrand::usize(0..96);
            let bytes: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
            let _ = plain().decode(KEY, &bytes);
            let _ = sealed(7, 1).decode(KEY, &bytes);
        }
    }

    #[test]
    fn errors_do_not_quote_the_value() {
        let value = format!("\x01{{\"access_token\":{SECRET_TOKEN}}}");
        let error = plain().decode(KEY, value.as_bytes()).unwrap_err();
        assert!(matches!(error, ValueError::Malformed(_)));
        assert!(!error.to_string().contains("the-access-token"), "{error}");
        let value = format!(
            "\x01{{\"access_token\":\"{SECRET_TOKEN}\",\"token_type\":5,\"lifetime_ms\":1,\"expires_at_ms\":1}}"
        );
        let error = plain().decode(KEY, value.as_bytes()).unwrap_err();
        assert!(!error.to_string().contains("the-access-token"), "{error}");
    }
}
