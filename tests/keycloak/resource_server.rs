//! The protected API of the Keycloak tests: the shared resource server
//! (`tests/real_servers/resource_server.rs`, which documents its checks) with Keycloak's keys
//! and endpoints.
//!
//! - [`ResourceServer::jwt`]: Keycloak's JWT access tokens. The realm's JWKS
//!   (`/protocol/openid-connect/certs`, signing keys only) is fetched once; each token must
//!   have a `kid` from it, a valid RS256 or ES256 signature, `aud` containing `urn:tcc:api`,
//!   `iss` = the realm's issuer, and an `exp` still in the future with zero leeway, to the
//!   sub-second. Keycloak writes `typ: JWT`, not RFC 9068's `at+jwt`, so the header type is
//!   not checked.
//! - [`ResourceServer::introspecting`]: every token is looked up at Keycloak's introspection
//!   endpoint (RFC 7662) as `introspector`; it must be `active` with `aud` `urn:tcc:api`.

use std::collections::HashMap;

use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use serde::Deserialize;

use super::server::Keycloak;
use crate::real_servers::resource_server::JwtRules;

/// The audience the realm's `tcc-api` client scope puts in every access token.
pub(crate) const AUDIENCE: &str = "urn:tcc:api";
/// The client the resource server introspects as.
pub(crate) const INTROSPECTOR: (&str, &str) = ("introspector", "introspector-secret-0123456789");

/// The shared resource server, reading Keycloak's claims.
pub(crate) type ResourceServer = crate::real_servers::resource_server::ResourceServer<Claims>;

/// The claims the tests read of an accepted JWT (the resource server reads `jti`, `exp` and
/// `cnf` of every token itself).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    /// The client the token was issued to.
    pub(crate) azp: String,
}

impl ResourceServer {
    /// Validates JWTs from Keycloak's realm, with the signing keys it publishes now.
    pub(crate) async fn jwt(kc: &Keycloak) -> Self {
        let (status, _, body) = kc
            .send(Method::GET, &kc.endpoint("certs"), None, &[], &[])
            .await;
        assert_eq!(status, StatusCode::OK, "GET certs");
        let set: serde_json::Value = serde_json::from_slice(&body).expect("JWKS");
        let mut keys = HashMap::new();
        for jwk in set["keys"].as_array().expect("keys") {
            // The realm also publishes an RSA-OAEP encryption key.
            if jwk["use"] != "sig" {
                continue;
            }
            let algorithm = match jwk["alg"].as_str() {
                Some("RS256") => Algorithm::RS256,
                Some("ES256") => Algorithm::ES256,
                _ => continue,
            };
            let parsed: Jwk = serde_json::from_value(jwk.clone()).expect("JWK");
            let key = DecodingKey::from_jwk(&parsed).expect("decoding key");
            let kid = jwk["kid"].as_str().expect("kid").to_owned();
            keys.insert(kid, (algorithm, key));
        }
        assert!(!keys.is_empty(), "no RS256/ES256 signing key in {set}");
        Self::serve_jwt(JwtRules {
            keys,
            issuer: kc.issuer(),
            audience: AUDIENCE.to_owned(),
            typ: None,
        })
        .await
    }

    /// Introspects every token at Keycloak as [`INTROSPECTOR`].
    pub(crate) async fn introspecting(kc: &Keycloak) -> Self {
        Self::serve_introspecting(kc.endpoint("token/introspect"), INTROSPECTOR, AUDIENCE).await
    }
}
