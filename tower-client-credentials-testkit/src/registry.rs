//! The record of every token that a [`MockAuthServer`](super::MockAuthServer) issued, shared
//! with the [`MockApi`](super::MockApi) servers that check them.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::lock;

/// A token issued by a [`MockAuthServer`](super::MockAuthServer).
///
/// `Debug` shows the `jti` but not the token itself.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedToken {
    /// The access token (a compact HS256 JWT).
    pub access_token: String,
    /// The token's unique `jti` claim.
    pub jti: String,
    /// The client the token was issued to (its `sub` and `client_id` claims).
    pub client_id: String,
    /// The token's `aud` claim.
    pub audience: String,
    /// The granted scopes, space-delimited; empty when none were granted.
    pub scope: String,
    /// When the token was issued, on tokio's clock.
    pub issued_at: Instant,
    /// When the token expires, on tokio's clock (so a paused clock can be advanced past it).
    pub expires_at: Instant,
    /// Whether the token has been revoked.
    pub revoked: bool,
    /// The JWK thumbprint of the key the token is bound to by DPoP ([RFC 9449 §6]), also its
    /// `cnf.jkt` claim; `None` for a bearer token.
    ///
    /// [RFC 9449 §6]: https://www.rfc-editor.org/rfc/rfc9449#section-6
    pub dpop_jkt: Option<String>,
}

impl IssuedToken {
    /// Whether the token has expired by tokio's clock.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.expires_at
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"[redacted]")
            .field("jti", &self.jti)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .field("dpop_jkt", &self.dpop_jkt)
            .finish()
    }
}

/// The JWT claims of the tokens the mock issues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) aud: String,
    /// Fractional seconds (RFC 7519 §2 allows them): the exact time of issue, so that a
    /// token's `exp` agrees with its `expires_in` to the millisecond.
    pub(crate) iat: f64,
    pub(crate) exp: f64,
    pub(crate) jti: String,
    pub(crate) scope: String,
    pub(crate) client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cnf: Option<Confirmation>,
}

/// The `cnf` claim of a DPoP-bound token ([RFC 9449 §6.1]).
///
/// [RFC 9449 §6.1]: https://www.rfc-editor.org/rfc/rfc9449#section-6.1
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Confirmation {
    pub(crate) jkt: String,
}

/// The tokens issued by one [`MockAuthServer`](super::MockAuthServer), with the key and issuer
/// needed to check them.
///
/// Cloning is cheap and every clone sees the same tokens. Get it from
/// [`MockAuthServer::registry`](super::MockAuthServer::registry) and hand it to
/// [`MockApi::new`](super::MockApi::new).
#[derive(Clone)]
pub struct TokenRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
    tokens: Mutex<Tokens>,
}

#[derive(Default)]
struct Tokens {
    /// Issue order.
    order: Vec<String>,
    by_token: HashMap<String, IssuedToken>,
}

impl TokenRegistry {
    pub(crate) fn new(issuer: String, signing_key: &[u8]) -> Self {
        Self {
            inner: Arc::new(Inner {
                issuer,
                encoding_key: EncodingKey::from_secret(signing_key),
                decoding_key: DecodingKey::from_secret(signing_key),
                tokens: Mutex::new(Tokens::default()),
            }),
        }
    }

    /// The `iss` claim of the tokens.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Signs `claims` (HS256).
    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.inner.encoding_key,
        )
    }

    /// Checks the signature and issuer of `token` and returns its claims. Expiry is not checked
    /// here: it is judged by [`IssuedToken::expires_at`] on tokio's clock.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.inner.decoding_key, &validation)
            .map(|data| data.claims)
    }

    pub(crate) fn insert(&self, token: IssuedToken) {
        let mut tokens = lock(&self.inner.tokens);
        tokens.order.push(token.access_token.clone());
        tokens.by_token.insert(token.access_token.clone(), token);
    }

    /// The record of `access_token`, if this registry issued it.
    pub fn get(&self, access_token: &str) -> Option<IssuedToken> {
        lock(&self.inner.tokens).by_token.get(access_token).cloned()
    }

    /// Every issued token, oldest first.
    pub fn tokens(&self) -> Vec<IssuedToken> {
        let tokens = lock(&self.inner.tokens);
        tokens
            .order
            .iter()
            .filter_map(|token| tokens.by_token.get(token).cloned())
            .collect()
    }

    /// The most recently issued token.
    pub fn last(&self) -> Option<IssuedToken> {
        let tokens = lock(&self.inner.tokens);
        tokens
            .order
            .last()
            .and_then(|token| tokens.by_token.get(token).cloned())
    }

    /// How many tokens have been issued.
    pub fn len(&self) -> usize {
        lock(&self.inner.tokens).order.len()
    }

    /// Whether no token has been issued yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Revokes `access_token`. Returns whether the registry knew it.
    pub fn revoke(&self, access_token: &str) -> bool {
        match lock(&self.inner.tokens).by_token.get_mut(access_token) {
            Some(token) => {
                token.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Revokes every token issued so far.
    pub fn revoke_all(&self) {
        for token in lock(&self.inner.tokens).by_token.values_mut() {
            token.revoked = true;
        }
    }
}

impl fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRegistry")
            .field("issuer", &self.inner.issuer)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}
