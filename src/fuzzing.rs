//! Thin wrappers that let the fuzz targets in `fuzz/` call the crate's private parsers of server
//! bytes directly, with owned outputs. Compiled only under cargo-fuzz's `cfg(fuzzing)`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::{DiscoveryError, dpop, endpoint, www_authenticate};

/// A parsed `WWW-Authenticate` challenge: scheme, token68, parameters.
pub type Challenge = (String, Option<String>, Vec<(String, String)>);

/// The most challenges kept from one response.
pub const MAX_CHALLENGES: usize = www_authenticate::MAX_CHALLENGES;
/// The most parameters kept per challenge.
pub const MAX_PARAMS: usize = www_authenticate::MAX_PARAMS;
/// The longest `DPoP-Nonce` kept.
pub const MAX_NONCE_LEN: usize = dpop::MAX_NONCE_LEN;
/// The longest token lifetime the crate uses.
pub const MAX_LIFETIME: Duration = crate::token::MAX_LIFETIME;

fn owned(challenges: Vec<www_authenticate::Challenge<'_>>) -> Vec<Challenge> {
    challenges
        .into_iter()
        .map(|challenge| {
            (
                challenge.scheme.to_owned(),
                challenge.token68.map(str::to_owned),
                challenge
                    .params
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value.into_owned()))
                    .collect(),
            )
        })
        .collect()
}

/// The challenges of every `WWW-Authenticate` line.
pub fn www_authenticate(headers: &HeaderMap) -> Vec<Challenge> {
    owned(www_authenticate::challenges(headers))
}

/// The challenges of one field value, whatever characters it holds.
pub fn www_authenticate_value(value: &str) -> Vec<Challenge> {
    owned(www_authenticate::parse(value))
}

/// The `error` code the layer logs for a 401.
pub fn challenge_error(headers: &HeaderMap) -> Option<String> {
    www_authenticate::challenge_error(headers)
}

/// What DPoP makes of the response's challenges: `use_dpop_nonce`, `invalid_dpop_proof`,
/// `other`, or `None`.
pub fn dpop_challenge(headers: &HeaderMap) -> Option<&'static str> {
    dpop::challenge(headers).map(|challenge| match challenge {
        dpop::Challenge::UseNonce => "use_dpop_nonce",
        dpop::Challenge::InvalidProof => "invalid_dpop_proof",
        dpop::Challenge::Other => "other",
    })
}

/// The usable `DPoP-Nonce` of a response.
pub fn dpop_nonce(headers: &HeaderMap) -> Option<String> {
    dpop::nonce_of(headers).map(|nonce| nonce.to_string())
}

/// `Retry-After` as a delay from `now`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    endpoint::retry_after(headers, now)
}

/// An authorization server metadata document fetched from `url` for `issuer`: its token
/// endpoint and authentication methods.
pub fn discovery_document(
    issuer: &str,
    url: &str,
    body: &[u8],
) -> Result<(String, Option<Vec<String>>), DiscoveryError> {
    endpoint::parse_discovery(issuer, url, body)
        .map(|metadata| (metadata.token_endpoint, metadata.auth_methods))
}

/// A token as the shared cache stores it.
#[cfg(feature = "redis")]
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The access token.
    pub access_token: String,
    /// The token type.
    pub token_type: String,
    /// Its lifetime, in milliseconds as stored.
    pub lifetime: Duration,
    /// Its expiry in Unix milliseconds.
    pub expires_at_ms: u64,
    /// Its scope.
    pub scope: Option<String>,
}

/// The key that seals values in the fuzz targets (id `key_id`).
#[cfg(feature = "redis")]
fn codec(key_id: Option<u8>) -> crate::shared_cache::Codec {
    crate::shared_cache::Codec {
        sealing: key_id.map(|id| crate::shared_cache::Sealing::new(id, &[0x5a; 32])),
    }
}

/// The shared-cache value of `token` under the Redis key `key`, sealed with key id `key_id`
/// or in clear.
#[cfg(feature = "redis")]
pub fn shared_cache_encode(key_id: Option<u8>, key: &str, token: &StoredToken) -> Vec<u8> {
    let stored = crate::shared_cache::StoredToken {
        access_token: zeroize::Zeroizing::new(token.access_token.clone()),
        token_type: token.token_type.clone(),
        lifetime: token.lifetime,
        expires_at_ms: token.expires_at_ms,
        scope: token.scope.clone(),
    };
    codec(key_id).encode(key, &stored).to_vec()
}

/// The token in a shared-cache value read under the Redis key `key`, or the error's message.
#[cfg(feature = "redis")]
pub fn shared_cache_decode(
    key_id: Option<u8>,
    key: &str,
    value: &[u8],
) -> Result<StoredToken, String> {
    codec(key_id)
        .decode(key, value)
        .map(|token| StoredToken {
            access_token: token.access_token.to_string(),
            token_type: token.token_type,
            lifetime: token.lifetime,
            expires_at_ms: token.expires_at_ms,
            scope: token.scope,
        })
        .map_err(|error| error.to_string())
}

/// The longest value a shared-cache publication carries.
#[cfg(feature = "redis")]
pub const MAX_PUBLISHED_VALUE: usize = crate::shared_cache::publication::MAX_VALUE;

/// The message a lease holder publishes with `value`, stored with `ttl`.
#[cfg(feature = "redis")]
pub fn shared_cache_publish(value: &[u8], ttl: Duration) -> Vec<u8> {
    crate::shared_cache::publication::encode(value, ttl).to_vec()
}

/// The time to live and value a shared-cache publication carries, if any.
#[cfg(feature = "redis")]
pub fn shared_cache_published(message: &[u8]) -> Option<(Duration, Vec<u8>)> {
    crate::shared_cache::publication::decode(message).map(|(ttl, value)| (ttl, value.to_vec()))
}
