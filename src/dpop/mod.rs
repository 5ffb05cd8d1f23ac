//! DPoP: sender-constrained access tokens (RFC 9449).
//!
//! A bearer token works for whoever holds it. A DPoP-bound token works only together with a
//! proof, signed for each request, that the sender holds the private key the token was issued
//! to. Turn it on with [`ClientCredentialsBuilder::dpop`](crate::ClientCredentialsBuilder::dpop);
//! everything else stays as it is:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::ServiceBuilder;
//! use tower_client_credentials::{BearerAuthLayer, ClientCredentials, DpopAlgorithm, DpopKey};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tokens = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
//!     .dpop(DpopKey::generate(DpopAlgorithm::ES256)?)
//!     .build()?
//!     .start()
//!     .await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let service = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(tokens))
//!     .service(client);
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! What happens then:
//!
//! - **Token requests** carry a `DPoP` proof (`htm: POST`, `htu`: the token endpoint). The
//!   server must answer `token_type: DPoP`; a bearer token in answer to a DPoP request is an
//!   error ([`TokenError::NotDpopBound`](crate::TokenError::NotDpopBound)), since sending it as
//!   a bearer token would quietly give up the protection asked for.
//! - **API requests** carry `Authorization: DPoP <token>` and a fresh proof with the
//!   request's method and URL (`htu`: without query and fragment), the current time, a unique
//!   `jti` and `ath`, the token's hash. The header prefix and `ath` are computed once per token
//!   and the JWS header once per key; per request only the claims are serialised and signed.
//!   A request with a relative URI (a tonic channel's) takes its `htu` origin from
//!   [`BearerAuthLayer::dpop_origin`](crate::BearerAuthLayer::dpop_origin).
//! - **Nonces** (RFC 9449 §8, §9). When the token endpoint answers `use_dpop_nonce`, or an API
//!   answers 401 with `WWW-Authenticate: DPoP error="use_dpop_nonce"`, the request is sent
//!   once more with the nonce from its `DPoP-Nonce` header. The latest nonce is remembered
//!   separately for the authorization server and for each API origin, and later proofs carry
//!   it. A `DPoP-Nonce` on any response, successful ones included, updates it.
//! - **A refused proof** (401 with `DPoP error="invalid_dpop_proof"`) is retried once with a
//!   new proof and the same token; any other 401 gets a new token, as for bearer tokens. Either
//!   way a request is sent at most twice, with the body replay of the
//!   [retry](crate::layer#retrying-after-401).
//!
//! Cost: one signature per request. ES256 and EdDSA cost tens of microseconds, RS256 about
//! a millisecond (see BENCHMARKS.md); the bearer path is unchanged.
//!
//! Key handling: a [`DpopKey`] generated at start lives as long as the process; tokens bound
//! to it are useless to anyone else. Load one with [`DpopKey::from_pem`] when several
//! processes must share tokens. The private key is wiped from memory when dropped and never
//! printed.

mod key;
mod proof;

use std::{error::Error as StdError, fmt};

pub use self::key::{DpopAlgorithm, DpopKey};
pub(crate) use self::proof::{Challenge, DPOP, Prover, ath, challenge, htu};
#[cfg(fuzzing)]
pub(crate) use self::proof::{MAX_NONCE_LEN, nonce_of};

/// Why a request could not be given a DPoP proof.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopError {
    /// The request's URI has no scheme and host (a tonic channel's requests), and no
    /// [`dpop_origin`](crate::BearerAuthLayer::dpop_origin) is set, so the proof's `htu` is
    /// unknown.
    RelativeUri,
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RelativeUri => f.write_str(
                "a DPoP proof needs the request's absolute URL, but the URI is relative; \
                 set `BearerAuthLayer::dpop_origin` to the origin the client sends to",
            ),
        }
    }
}

impl StdError for DpopError {}

#[cfg(test)]
mod tests {
    use http::{Method, Uri};
    use jsonwebtoken::{
        Algorithm, DecodingKey, Validation,
        jwk::{Jwk, ThumbprintHash},
    };
    use serde::Deserialize;
    use tower_client_credentials_testkit::keys::TestKey;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Claims {
        jti: String,
        htm: String,
        htu: String,
        iat: u64,
        ath: Option<String>,
        nonce: Option<String>,
    }

    /// Verifies a proof the way a server does, with the key from its own header.
    fn verify(proof: &str) -> (jsonwebtoken::Header, Claims) {
        let header = jsonwebtoken::decode_header(proof).unwrap();
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        let jwk = header
            .jwk
            .clone()
            .expect("the proof carries its public key");
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Claims>(proof, &key, &validation).unwrap();
        (header, data.claims)
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn proofs_verify_with_the_key_in_their_header() {
        for (algorithm, expected) in [
            (DpopAlgorithm::ES256, Algorithm::ES256),
            (DpopAlgorithm::EdDSA, Algorithm::EdDSA),
        ] {
            let key = DpopKey::generate(algorithm).unwrap();
            let prover = Prover::new(key.clone());
            let uri: Uri = "https://API.example.com/orders/7?expand=lines#top"
                .parse()
                .unwrap();
            let token = "opaque-token-123";
            let before = now();
            let proof = prover
                .api_proof(&Method::PATCH, &uri, None, &ath(token))
                .unwrap();
            assert!(proof.is_sensitive());
            let (header, claims) = verify(proof.to_str().unwrap());
            assert_eq!(header.alg, expected);
            let jwk: Jwk = header.jwk.unwrap();
            assert_eq!(
                jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
                key.thumbprint()
            );
            assert!(jwk.common.key_algorithm.is_none() || jwk.is_supported());
            assert_eq!(claims.htm, "PATCH");
            assert_eq!(claims.htu, "https://api.example.com/orders/7");
            assert!(claims.iat >= before && claims.iat <= now());
            assert_eq!(claims.ath.as_deref(), Some(ath(token).as_str()));
            assert_eq!(claims.nonce, None);
            assert!(claims.jti.len() >= 22);

            let token_proof = prover.token_request_proof("https://auth.example.com/token");
            let (_, claims) = verify(token_proof.to_str().unwrap());
            assert_eq!(claims.htm, "POST");
            assert_eq!(claims.htu, "https://auth.example.com/token");
            assert_eq!(claims.ath, None);
        }
    }

    #[test]
    fn the_public_proof_has_the_request_and_token_claims() {
        let key = DpopKey::generate(DpopAlgorithm::ES256).unwrap();
        let uri: Uri = "https://API.example.com:443/orders?x=1".parse().unwrap();
        let proof = key
            .proof(&Method::DELETE, &uri, Some("tok"), Some("n-1"))
            .unwrap();
        assert!(proof.is_sensitive());
        let (header, claims) = verify(proof.to_str().unwrap());
        assert_eq!(
            header
                .jwk
                .unwrap()
                .thumbprint(ThumbprintHash::SHA256)
                .unwrap(),
            key.thumbprint()
        );
        assert_eq!(claims.htm, "DELETE");
        assert_eq!(claims.htu, "https://api.example.com/orders");
        assert_eq!(claims.ath.as_deref(), Some(ath("tok").as_str()));
        assert_eq!(claims.nonce.as_deref(), Some("n-1"));
        let again = key.proof(&Method::DELETE, &uri, None, None).unwrap();
        let (_, second) = verify(again.to_str().unwrap());
        assert_ne!(second.jti, claims.jti, "a fresh jti per proof");
        assert_eq!((second.ath, second.nonce), (None, None));
        assert_eq!(
            key.proof(&Method::GET, &"/relative".parse().unwrap(), None, None),
            Err(DpopError::RelativeUri)
        );
    }

    #[test]
    fn rs256_keys_from_pem() {
        let pem = TestKey::rsa2048().private_pem();
        let key = DpopKey::from_pem(DpopAlgorithm::RS256, pem.as_bytes()).unwrap();
        let prover = Prover::new(key.clone());
        let (header, claims) = verify(
            prover
                .token_request_proof("https://a.test/t")
                .to_str()
                .unwrap(),
        );
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(
            header
                .jwk
                .unwrap()
                .thumbprint(ThumbprintHash::SHA256)
                .unwrap(),
            key.thumbprint()
        );
        assert_eq!(claims.htm, "POST");
    }

    #[test]
    fn pem_keys_of_each_kind() {
        let p256_pkcs8 = TestKey::p256().private_pem().into_bytes();
        let p256_sec1 = TestKey::p256().sec1_pem().into_bytes();
        let ed25519 = TestKey::ed25519().private_pem().into_bytes();
        let a = DpopKey::from_pem(DpopAlgorithm::ES256, &p256_pkcs8).unwrap();
        let b = DpopKey::from_pem(DpopAlgorithm::ES256, &p256_sec1).unwrap();
        // The same key in two encodings has one thumbprint.
        assert_eq!(a.thumbprint(), b.thumbprint());
        DpopKey::from_pem(DpopAlgorithm::EdDSA, &ed25519).unwrap();
        // Wrong algorithm for the key, garbage: configuration errors without key material.
        for (algorithm, pem) in [
            (DpopAlgorithm::EdDSA, &p256_pkcs8[..]),
            (DpopAlgorithm::ES256, &ed25519[..]),
            (DpopAlgorithm::RS256, &p256_pkcs8[..]),
            (DpopAlgorithm::ES256, b"not a key"),
            (DpopAlgorithm::ES256, &[0xff, 0xfe][..]),
        ] {
            let error = DpopKey::from_pem(algorithm, pem).unwrap_err().to_string();
            assert!(error.contains("DPoP key"), "{error}");
            assert!(!error.contains("MII"), "{error}");
        }
    }

    #[test]
    fn debug_shows_no_private_key() {
        let pem = TestKey::p256().private_pem().into_bytes();
        let key = DpopKey::from_pem(DpopAlgorithm::ES256, &pem).unwrap();
        let debug = format!("{key:?} {:?}", Prover::new(key.clone()));
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(debug.contains(key.thumbprint()), "{debug}");
        let secret = String::from_utf8_lossy(&pem);
        let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..20]), "{debug}");
    }

    #[test]
    fn every_proof_has_its_own_jti_and_the_current_nonce() {
        let prover = Prover::new(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
        let uri: Uri = "http://127.0.0.1:8080/x".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("dpop-nonce", http::HeaderValue::from_static("nonce-1"));
        prover.learn_api_nonce(&uri, None, &headers);
        let mut jtis = std::collections::HashSet::new();
        for _ in 0..50 {
            let proof = prover.api_proof(&Method::GET, &uri, None, "a").unwrap();
            let (_, claims) = verify(proof.to_str().unwrap());
            assert_eq!(claims.nonce.as_deref(), Some("nonce-1"));
            assert!(jtis.insert(claims.jti));
        }
        // Another origin has no nonce yet.
        let other: Uri = "http://127.0.0.1:8081/x".parse().unwrap();
        let proof = prover.api_proof(&Method::GET, &other, None, "a").unwrap();
        assert_eq!(verify(proof.to_str().unwrap()).1.nonce, None);
    }
}
