//! Signed client assertions and discovery against oidc-provider: `pkjwt-client`
//! (`private_key_jwt`, ES256, a key pair made by the test process) and `jwt-secret-client`
//! (`client_secret_jwt`, HS256), configured from the issuer URL alone. The provider verifies
//! each assertion's signature, `iss`, `sub`, `aud`, `exp` and refuses a replayed `jti`.

use std::time::Duration;

use http::StatusCode;
use tower_client_credentials::{
    AssertionAudience, AuthMethod, ClientCredentials, ClientKey, SigningAlgorithm,
};

use tower_client_credentials_testkit::keys::TestKey;

use super::authorization_server::{PKJWT_KID, pkjwt_key_pair};
use super::{AuthServer, BOTH_SCOPES, ResourceServer, api, get, start_error};

const PKJWT_CLIENT: &str = "pkjwt-client";
const JWT_SECRET_CLIENT: (&str, &str) = (
    "jwt-secret-client",
    "jwt-secret-client-hs256-key-0123456789abcdef0123456789abcdef0123",
);

/// `pkjwt-client`'s registered key.
fn pkjwt_key() -> ClientKey {
    ClientKey::from_pem(SigningAlgorithm::ES256, pkjwt_key_pair().private_pem())
        .expect("the pkjwt-client key")
        .with_key_id(PKJWT_KID)
}

/// A P-256 key the provider has never seen.
fn unknown_p256_key() -> ClientKey {
    ClientKey::from_pem(SigningAlgorithm::ES256, TestKey::p256().private_pem()).expect("key")
}

/// Both clients get tokens through discovery from the issuer URL alone; the resource server
/// accepts them. oidc-provider 9.13 serves the RFC 8414 document
/// (`/.well-known/oauth-authorization-server`) as well as the OpenID Connect one, so discovery
/// stops at the first. The assertion's `aud` may be the token endpoint (the default) or the
/// issuer.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn private_key_jwt_and_client_secret_jwt_through_discovery() {
    let auth = AuthServer::start(
        "private_key_jwt_and_client_secret_jwt_through_discovery",
        &[("TOKEN_TTL", "60")],
    )
    .await;
    let rs = ResourceServer::jwt(&auth).await;

    for audience in [AssertionAudience::TokenEndpoint, AssertionAudience::Issuer] {
        let handle =
            ClientCredentials::from_issuer_with_key(auth.issuer(), PKJWT_CLIENT, pkjwt_key())
                .scopes(BOTH_SCOPES)
                .assertion_audience(audience.clone())
                .discover()
                .await
                .expect("discovery")
                .build()
                .expect("configuration")
                .start()
                .await
                .unwrap_or_else(|e| panic!("pkjwt-client with aud {audience:?}: {e}"));
        let token = handle.current().expect("a token");
        assert_eq!(token.scope(), Some("api:read api:write"));
        super::assert_ends_at_exp(&token, 60);
        assert_eq!(get(&api(&handle), &rs.url("/orders")).await, StatusCode::OK);
    }

    // The provider supports every method, and the crate prefers `client_secret_basic` with a
    // secret; this client is registered for `client_secret_jwt`, so it says so.
    let handle =
        ClientCredentials::from_issuer(auth.issuer(), JWT_SECRET_CLIENT.0, JWT_SECRET_CLIENT.1)
            .auth_method(AuthMethod::ClientSecretJwt)
            .scopes(["api:read"])
            .discover()
            .await
            .expect("discovery")
            .build()
            .expect("configuration")
            .start()
            .await
            .expect("jwt-secret-client");
    assert_eq!(handle.current().expect("a token").scope(), Some("api:read"));
    assert_eq!(get(&api(&handle), &rs.url("/orders")).await, StatusCode::OK);

    let subjects: Vec<_> = rs.claims().into_iter().map(|c| c.sub).collect();
    assert_eq!(subjects, [PKJWT_CLIENT, PKJWT_CLIENT, JWT_SECRET_CLIENT.0]);
    assert_eq!((rs.accepted(), rs.rejected()), (3, 0));
    assert_eq!(auth.tokens_issued().await, 3);
    // Each discovery found the RFC 8414 document.
    assert_eq!(
        auth.logged("GET /.well-known/oauth-authorization-server -> 200")
            .await,
        3
    );
    assert_eq!(auth.logged("POST /token -> 401").await, 0);
}

/// The same signer makes one assertion per token request: four refetches in a row (each
/// token discarded as if an API had accepted, then refused it) all succeed, which they would not if a `jti`
/// were reused, since the provider refuses replays.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn every_refresh_signs_a_new_assertion_the_provider_accepts() {
    let auth = AuthServer::start(
        "every_refresh_signs_a_new_assertion_the_provider_accepts",
        &[("TOKEN_TTL", "60")],
    )
    .await;
    let handle = ClientCredentials::from_issuer_with_key(auth.issuer(), PKJWT_CLIENT, pkjwt_key())
        .discover()
        .await
        .expect("discovery")
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("first token");
    for generation in 2..=5 {
        let token = handle.current().expect("a token");
        // As an API would: accepted, then refused (expired or revoked): replaced at once.
        handle.accepted(&token);
        assert!(handle.invalidate(&token));
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let next = handle.token().await.expect("a new token");
                if next.generation() >= generation {
                    return next;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the refetch succeeded");
        assert_eq!(next.generation(), generation);
        assert_ne!(next.access_token(), token.access_token());
    }
    assert_eq!(auth.tokens_issued().await, 5);
    assert_eq!(auth.logged("POST /token -> 401").await, 0);
}

/// A key the provider does not hold for the client (with the registered `kid` or none), an
/// RSA key for a client registered for ES256, and a wrong HS256 secret all get the typed
/// `invalid_client`; no error shows the key or the secret.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn a_wrong_key_or_secret_is_invalid_client() {
    let auth = AuthServer::start("a_wrong_key_or_secret_is_invalid_client", &[]).await;
    let discovered = |key: ClientKey| {
        let issuer = auth.issuer().to_owned();
        async move {
            ClientCredentials::from_issuer_with_key(issuer, PKJWT_CLIENT, key)
                .discover()
                .await
                .expect("discovery")
        }
    };
    let rsa = ClientKey::from_pem(SigningAlgorithm::RS256, TestKey::rsa2048().private_pem())
        .expect("key")
        .with_key_id(PKJWT_KID);
    let mut errors = Vec::new();
    for key in [
        unknown_p256_key().with_key_id(PKJWT_KID),
        unknown_p256_key(),
        rsa,
    ] {
        errors.push(start_error(discovered(key).await, 401, "invalid_client").await);
    }
    let wrong_secret = "jwt-secret-client-hs256-key-WRONG-456789abcdef0123456789abcdef0123";
    let builder = ClientCredentials::from_issuer(auth.issuer(), JWT_SECRET_CLIENT.0, wrong_secret)
        .auth_method(AuthMethod::ClientSecretJwt)
        .discover()
        .await
        .expect("discovery");
    errors.push(start_error(builder, 401, "invalid_client").await);

    let pem_body: Vec<String> = TestKey::p256()
        .private_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    for error in &errors {
        let text = format!("{error} {error:?}");
        assert!(!text.contains(wrong_secret), "{text}");
        assert!(
            pem_body.iter().all(|line| !text.contains(line.as_str())),
            "{text}"
        );
    }
    assert_eq!(auth.logged("POST /token -> 401 invalid_client").await, 4);
    assert_eq!(auth.tokens_issued().await, 0);

    // With a secret and no method chosen, discovery picks `client_secret_basic`, which the
    // provider refuses for a client registered for `client_secret_jwt`.
    let builder =
        ClientCredentials::from_issuer(auth.issuer(), JWT_SECRET_CLIENT.0, JWT_SECRET_CLIENT.1)
            .discover()
            .await
            .expect("discovery");
    start_error(builder, 401, "invalid_client").await;
}
