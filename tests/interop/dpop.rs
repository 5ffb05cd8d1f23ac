//! The resource server's DPoP checks (RFC 9449), against tokens that oidc-provider bound to a
//! key: proofs are made here by hand, so these tests need nothing of the crate's client side.
//! They also pin down what `dpop-client` and `DPOP_NONCE=1` in `server.mjs` do.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};
use tower_client_credentials::{BearerAuthLayer, ClientCredentials, DpopAlgorithm, DpopKey};
use tower_client_credentials_testkit::{dpop::access_token_hash, keys::TestKey};

use super::authorization_server::AuthServer;
use super::resource_server::ResourceServer;
use crate::real_servers::http::http_client;

/// `dpop-client` of server.mjs: `dpop_bound_access_tokens: true`.
const DPOP: (&str, &str) = ("dpop-client", "dpop-secret-0123456789");
const GRANT: (&str, &str) = ("grant_type", "client_credentials");

/// A P-256 key that signs proofs, with its public JWK.
struct ProofKey {
    key: EncodingKey,
    jwk: Value,
}

impl ProofKey {
    fn load(pem: &[u8]) -> Self {
        let key = EncodingKey::from_ec_pem(pem).expect("P-256 PEM");
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("JWK");
        Self {
            key,
            jwk: serde_json::to_value(jwk).expect("JWK JSON"),
        }
    }

    fn proof(&self, method: &str, url: &str, token: Option<&str>, nonce: Option<&str>) -> String {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let mut claims = json!({
            "jti": format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            "htm": method,
            "htu": url,
            "iat": iat,
        });
        if let Some(token) = token {
            claims["ath"] = json!(access_token_hash(token));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, Algorithm::ES256)
            .expect("sign");
        format!("{message}.{signature}")
    }
}

/// A token request of `dpop-client` with `proof`; status, `DPoP-Nonce` and JSON body.
async fn token_request(
    auth: &AuthServer,
    proof: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let headers: Vec<(&str, &str)> = proof.map(|proof| ("dpop", proof)).into_iter().collect();
    let (status, headers, body) = auth
        .send_with_headers(Method::POST, "/token", Some(DPOP), &[GRANT], &headers)
        .await;
    let nonce = headers
        .get("dpop-nonce")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, nonce, serde_json::from_slice(&body).expect("JSON"))
}

/// A GET of `url` with `Authorization: {scheme} {token}` and the proofs; status, challenge and
/// `DPoP-Nonce`.
async fn call(
    url: &str,
    scheme: &str,
    token: &str,
    proof: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut request = Request::get(url).header(header::AUTHORIZATION, format!("{scheme} {token}"));
    if let Some(proof) = proof {
        request = request.header("dpop", proof);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    let response = http_client().request(request).await.expect("request sent");
    let text = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    (
        response.status(),
        text("www-authenticate").unwrap_or_default(),
        text("dpop-nonce"),
    )
}

/// `dpop-client` gets a DPoP-bound JWT (`cnf.jkt`) only with a proof, and the resource server
/// accepts it only as `DPoP` with a valid, fresh proof by the bound key for its own URL, and,
/// once it asks for one, with its nonce.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn resource_server_checks_dpop_proofs() {
    let test = "resource_server_checks_dpop_proofs";
    let auth = AuthServer::start(test, &[("TOKEN_TTL", "60")]).await;
    let rs = ResourceServer::jwt(&auth).await;
    let key = ProofKey::load(TestKey::p256().private_pem().as_bytes());
    let other = ProofKey::load(TestKey::new_p256().private_pem().as_bytes());

    let (status, _, body) = token_request(&auth, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");

    let proof = key.proof("POST", &auth.token_url(), None, None);
    let (status, _, body) = token_request(&auth, Some(&proof)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(token.matches('.').count(), 2, "a JWT for urn:tcc:api");

    let url = rs.url("/orders");
    let invalid_token = r#"DPoP error="invalid_token", algs="ES256 EdDSA RS256""#;
    let invalid_proof = r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA RS256""#;

    let good = key.proof("GET", &url, Some(&token), None);
    let (status, challenge, _) = call(&url, "DPoP", &token, Some(&good)).await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let jkt = rs.claims().pop().and_then(|c| c.cnf).expect("cnf.jkt").jkt;
    let expected: Jwk = serde_json::from_value(key.jwk.clone()).expect("jwk");
    assert_eq!(
        jkt,
        expected
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .expect("thumbprint")
    );

    let fresh = || key.proof("GET", &url, Some(&token), None);
    for (scheme, proof, challenge) in [
        ("Bearer", Some(fresh()), invalid_token),
        ("DPoP", None, invalid_proof),
        ("DPoP", Some(good.clone()), invalid_proof),
        (
            "DPoP",
            Some(other.proof("GET", &url, Some(&token), None)),
            invalid_proof,
        ),
        (
            "DPoP",
            Some(key.proof("GET", &rs.url("/other"), Some(&token), None)),
            invalid_proof,
        ),
        (
            "DPoP",
            Some(key.proof("POST", &url, Some(&token), None)),
            invalid_proof,
        ),
        (
            "DPoP",
            Some(key.proof("GET", &url, Some("another"), None)),
            invalid_proof,
        ),
    ] {
        let (status, got, _) = call(&url, scheme, &token, proof.as_deref()).await;
        assert_eq!(
            (status, got.as_str()),
            (StatusCode::UNAUTHORIZED, challenge)
        );
    }
    assert_eq!(
        rs.reasons(),
        [
            "DPoP-bound token as Bearer",
            "dpop: a DPoP proof is required",
            "dpop: the DPoP proof jti was used before",
            "dpop: the DPoP proof key is not the key the access token is bound to",
            "dpop: the DPoP proof htu does not match the request URL",
            "dpop: the DPoP proof htm does not match the request method",
            "dpop: the DPoP proof ath does not match the access token",
        ]
    );

    // An unbound token with the DPoP scheme.
    let bearer = auth
        .raw_token(("basic-client", "basic-secret-0123456789"), &[])
        .await;
    let bearer = bearer["access_token"].as_str().expect("token");
    let (status, challenge, _) = call(
        &url,
        "DPoP",
        bearer,
        Some(&key.proof("GET", &url, Some(bearer), None)),
    )
    .await;
    assert_eq!(
        (status, challenge.as_str()),
        (StatusCode::UNAUTHORIZED, invalid_token)
    );

    // The resource server's own nonce.
    let nonce = rs.require_dpop_nonce();
    let (status, challenge, sent) = call(&url, "DPoP", &token, Some(&fresh())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.starts_with(r#"DPoP error="use_dpop_nonce""#),
        "{challenge}"
    );
    assert_eq!(sent.as_deref(), Some(nonce.as_str()));
    let with_nonce = key.proof("GET", &url, Some(&token), Some(&nonce));
    let (status, challenge, _) = call(&url, "DPoP", &token, Some(&with_nonce)).await;
    assert_eq!(status, StatusCode::OK, "{challenge}");

    assert_eq!((rs.accepted(), rs.dpop_accepted()), (2, 2));
    assert_eq!((rs.rejected(), rs.nonce_challenges()), (9, 1));
}

/// With `DPOP_NONCE=1` the provider answers a proof without its nonce with `use_dpop_nonce`
/// and a `DPoP-Nonce` header; a proof with that nonce gets a token.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn provider_requires_its_dpop_nonce() {
    let test = "provider_requires_its_dpop_nonce";
    let auth = AuthServer::start(test, &[("DPOP_NONCE", "1")]).await;
    let key = ProofKey::load(TestKey::p256().private_pem().as_bytes());
    let proof = key.proof("POST", &auth.token_url(), None, None);
    let (status, nonce, body) = token_request(&auth, Some(&proof)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "use_dpop_nonce", "{body}");
    let nonce = nonce.expect("DPoP-Nonce");
    let proof = key.proof("POST", &auth.token_url(), None, Some(&nonce));
    let (status, _, body) = token_request(&auth, Some(&proof)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
}

/// The crate's own DPoP client against oidc-provider and the DPoP-checking resource server:
/// ES256 and EdDSA keys, with and without the provider's nonce, and with the resource server's
/// own nonce switched on halfway (and rotated).
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn the_client_gets_bound_tokens_and_its_proofs_are_accepted() {
    for (nonce_mode, algorithm) in [
        ("0", DpopAlgorithm::ES256),
        ("1", DpopAlgorithm::ES256),
        ("1", DpopAlgorithm::EdDSA),
    ] {
        let test = format!(
            "the_client_gets_bound_tokens_and_its_proofs_are_accepted ({algorithm}, DPOP_NONCE={nonce_mode})"
        );
        let auth =
            AuthServer::start(&test, &[("DPOP_NONCE", nonce_mode), ("TOKEN_TTL", "60")]).await;
        let rs = ResourceServer::jwt(&auth).await;
        let key = DpopKey::generate(algorithm).expect("key");
        let handle = ClientCredentials::builder(auth.token_url(), DPOP.0, DPOP.1)
            .dpop(key.clone())
            .build()
            .expect("configuration")
            .start()
            .await
            .unwrap_or_else(|error| panic!("{test}: {error}"));
        let token = handle.current().expect("a token");
        assert_eq!(token.token_type(), "DPoP", "{test}");
        // The provider bound the token to our key.
        let claims = jwt_claims(token.access_token());
        assert_eq!(claims["cnf"]["jkt"], key.thumbprint(), "{test}");

        let api = BearerAuthLayer::new(handle.clone()).layer(http_client());
        let send = |url: String| {
            let api = api.clone();
            async move {
                let request = Request::post(url)
                    .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
                    .expect("request");
                let response = api.oneshot(request).await.expect("sent");
                response.status()
            }
        };
        for i in 0..20 {
            assert_eq!(
                send(rs.url(&format!("/orders/{i}?q=1"))).await,
                StatusCode::OK
            );
        }
        // The resource server's nonce: one challenge, answered by one retry; then rotated.
        rs.require_dpop_nonce();
        for _ in 0..10 {
            assert_eq!(send(rs.url("/orders")).await, StatusCode::OK, "{test}");
        }
        rs.require_dpop_nonce();
        for _ in 0..10 {
            assert_eq!(send(rs.url("/orders")).await, StatusCode::OK, "{test}");
        }
        assert_eq!(rs.nonce_challenges(), 2, "{test}: {:?}", rs.reasons());
        assert_eq!(rs.dpop_accepted(), 40, "{test}");
        assert_eq!(rs.rejected(), 2, "{test}: {:?}", rs.reasons());
        // One token for all of it.
        assert_eq!(auth.tokens_issued().await, 1, "{test}");
    }
}

/// `dpop-client` (registered with `dpop_bound_access_tokens`) without a DPoP key is refused by
/// the provider with a typed OAuth error; a client registered without it may still ask for,
/// and gets, a bound token.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn dpop_is_required_by_a_dpop_registration_and_optional_for_others() {
    let test = "dpop_is_required_by_a_dpop_registration_and_optional_for_others";
    let auth = AuthServer::start(test, &[]).await;
    let error = ClientCredentials::builder(auth.token_url(), DPOP.0, DPOP.1)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect_err("dpop-client without a proof");
    assert_eq!(error.oauth_error(), Some("invalid_grant"), "{error}");

    // `basic-client` has no `dpop_bound_access_tokens`; oidc-provider still binds a token
    // requested with a proof, so this succeeds with a DPoP token.
    let handle =
        ClientCredentials::builder(auth.token_url(), "basic-client", "basic-secret-0123456789")
            .dpop(DpopKey::generate(DpopAlgorithm::EdDSA).expect("key"))
            .build()
            .expect("configuration")
            .start()
            .await
            .expect("a token");
    assert_eq!(handle.current().expect("token").token_type(), "DPoP");
}

/// The claims of a JWT, without checks.
fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}
