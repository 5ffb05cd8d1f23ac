//! The protected API of the interop tests: the shared resource server
//! (`tests/real_servers/resource_server.rs`, which documents its checks) with oidc-provider's
//! keys and endpoints.
//!
//! - [`ResourceServer::jwt`]: JWT access tokens (RFC 9068). The provider's JWKS is fetched
//!   once; each token must have `typ: at+jwt`, a `kid` from that set, a valid ES256 signature,
//!   `aud = urn:tcc:api`, `iss` = the issuer, and an `exp` still in the future with zero
//!   leeway, to the sub-second.
//! - [`ResourceServer::introspecting`]: opaque tokens, each one looked up at the provider's
//!   introspection endpoint (RFC 7662) with the resource server's own client credentials; it
//!   must be `active` with `aud = urn:tcc:opaque`.

use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, jwk::JwkSet};
use serde::Deserialize;

use super::authorization_server::AuthServer;
use crate::real_servers::resource_server::{Confirmation, JwtRules};

/// The audience of the provider's JWT access tokens.
pub(crate) const JWT_AUDIENCE: &str = "urn:tcc:api";
/// The audience of its opaque access tokens.
pub(crate) const OPAQUE_AUDIENCE: &str = "urn:tcc:opaque";

/// The shared resource server, reading oidc-provider's claims.
pub(crate) type ResourceServer = crate::real_servers::resource_server::ResourceServer<Claims>;

/// The claims the tests read of an accepted JWT (the resource server reads `jti`, `exp` and
/// `cnf` of every token itself).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    pub(crate) sub: String,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
    pub(crate) scope: Option<String>,
    /// `cnf.jkt` of a DPoP-bound token.
    pub(crate) cnf: Option<Confirmation>,
}

impl ResourceServer {
    /// Validates JWTs from `auth`, with the keys published at its `/jwks` now.
    pub(crate) async fn jwt(auth: &AuthServer) -> Self {
        Self::jwt_expecting(auth, auth.issuer(), JWT_AUDIENCE).await
    }

    /// Like [`jwt`](Self::jwt), but expecting another `iss` or `aud`: it then rejects the
    /// provider's tokens, which shows those claims are checked.
    pub(crate) async fn jwt_expecting(auth: &AuthServer, issuer: &str, audience: &str) -> Self {
        let (status, _, body) = auth.send(Method::GET, "/jwks", None, &[]).await;
        assert_eq!(status, StatusCode::OK, "GET /jwks");
        let set: JwkSet = serde_json::from_slice(&body).expect("JWKS");
        assert!(!set.keys.is_empty(), "empty JWKS");
        // The provider signs with ES256 (server.mjs's default `SIGNING_ALG`).
        let keys = set
            .keys
            .iter()
            .map(|jwk| {
                let kid = jwk.common.key_id.clone().expect("kid");
                let key = DecodingKey::from_jwk(jwk).expect("decoding key");
                (kid, (Algorithm::ES256, key))
            })
            .collect();
        Self::serve_jwt(JwtRules {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            typ: Some("at+jwt"),
        })
        .await
    }

    /// Introspects every token at `auth`, authenticating as `client` (id, secret).
    pub(crate) async fn introspecting(auth: &AuthServer, client: (&str, &str)) -> Self {
        let url = format!("{}/token/introspection", auth.issuer());
        Self::serve_introspecting(url, client, OPAQUE_AUDIENCE).await
    }
}
