//! The reqwest path against oidc-provider (feature `reqwest`): token requests through a
//! `reqwest::Client` (`reqwest_client`, discovery included) and API calls through a
//! `reqwest_middleware::ClientWithMiddleware` with `BearerAuthMiddleware`, with
//! `client_secret_basic`, `private_key_jwt` (the key pair the test process made, see
//! [`pkjwt_key_pair`]) and DPoP with the provider's and the resource server's nonces. The
//! resource server checks every token and proof independently of the crate. Compiled with
//! the `reqwest` feature only (CI's `--all-features`; `tests/interop/run.sh` does not pass
//! it; run `cargo test --features reqwest --test interop -- --ignored reqwest`).

use http::StatusCode;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower_client_credentials::{
    BearerAuthMiddleware, ClientCredentials, ClientKey, DpopAlgorithm, DpopKey, SigningAlgorithm,
    TokenHandle,
};

use super::authorization_server::{AuthServer, PKJWT_KID, pkjwt_key_pair};
use super::{BASIC, BOTH_SCOPES, ResourceServer, builder};

const PKJWT_CLIENT: &str = "pkjwt-client";
/// `dpop-client` of server.mjs: `dpop_bound_access_tokens: true`.
const DPOP: (&str, &str) = ("dpop-client", "dpop-secret-0123456789");

/// The one reqwest client of a test: it carries the token requests and, with the middleware,
/// the API calls. No redirects: a token request carries the client's credentials.
fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

fn with_middleware(http: reqwest::Client, handle: TokenHandle) -> ClientWithMiddleware {
    ClientBuilder::new(http)
        .with(BearerAuthMiddleware::new(handle))
        .build()
}

async fn post(client: &ClientWithMiddleware, url: String) -> StatusCode {
    client
        .post(url)
        .body("{\"n\":1}")
        .send()
        .await
        .expect("sent")
        .status()
}

/// `client_secret_basic`, and `private_key_jwt` configured from the issuer URL alone (the
/// discovery requests go through reqwest too): tokens the resource server accepts, through
/// the middleware.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn reqwest_with_client_secret_basic_and_private_key_jwt() {
    let test = "reqwest_with_client_secret_basic_and_private_key_jwt";
    let auth = AuthServer::start(test, &[("STRICT_CLIENT_AUTH", "1"), ("TOKEN_TTL", "60")]).await;
    let rs = ResourceServer::jwt(&auth).await;
    let http = reqwest_client();

    let basic = builder(&auth, BASIC)
        .scopes(BOTH_SCOPES)
        .reqwest_client(http.clone())
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("basic-client");
    let key = ClientKey::from_pem(SigningAlgorithm::ES256, pkjwt_key_pair().private_pem())
        .expect("the pkjwt-client key")
        .with_key_id(PKJWT_KID);
    let pkjwt = ClientCredentials::from_issuer_with_key(auth.issuer(), PKJWT_CLIENT, key)
        .reqwest_client(http.clone())
        .scopes(["api:read"])
        .discover()
        .await
        .expect("discovery through reqwest")
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("pkjwt-client");
    assert_eq!(pkjwt.current().expect("a token").scope(), Some("api:read"));

    for handle in [basic, pkjwt] {
        let client = with_middleware(http.clone(), handle);
        for i in 0..5 {
            assert_eq!(
                post(&client, rs.url(&format!("/orders/{i}"))).await,
                StatusCode::OK
            );
        }
    }
    let subjects: Vec<_> = rs.claims().into_iter().map(|c| c.sub).collect();
    assert_eq!(subjects[..5], [BASIC.0; 5]);
    assert_eq!(subjects[5..], [PKJWT_CLIENT; 5]);
    assert_eq!((rs.accepted(), rs.rejected()), (10, 0));
    assert_eq!(auth.tokens_issued().await, 2);
    assert_eq!(
        auth.logged("GET /.well-known/oauth-authorization-server -> 200")
            .await,
        1
    );
    assert_eq!(auth.logged("POST /token -> 401").await, 0);
}

/// DPoP with nonces at both ends: the provider's (`DPOP_NONCE=1`: the token request is
/// refused once with `use_dpop_nonce` and sent again, through reqwest) and the resource
/// server's (one challenge answered by one retry of the middleware). One bound token for all
/// of it.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn reqwest_with_dpop_and_nonces() {
    let test = "reqwest_with_dpop_and_nonces";
    let auth = AuthServer::start(test, &[("DPOP_NONCE", "1"), ("TOKEN_TTL", "60")]).await;
    let rs = ResourceServer::jwt(&auth).await;
    let http = reqwest_client();
    let key = DpopKey::generate(DpopAlgorithm::ES256).expect("key");
    let handle = builder(&auth, DPOP)
        .dpop(key)
        .reqwest_client(http.clone())
        .build()
        .expect("configuration")
        .start()
        .await
        .unwrap_or_else(|error| panic!("{test}: {error}"));
    assert_eq!(handle.current().expect("a token").token_type(), "DPoP");
    let client = with_middleware(http, handle);

    for i in 0..10 {
        assert_eq!(
            post(&client, rs.url(&format!("/orders/{i}?q=1"))).await,
            StatusCode::OK
        );
    }
    rs.require_dpop_nonce();
    for _ in 0..10 {
        assert_eq!(post(&client, rs.url("/orders")).await, StatusCode::OK);
    }
    assert_eq!(rs.nonce_challenges(), 1, "{:?}", rs.reasons());
    assert_eq!(rs.dpop_accepted(), 20);
    assert_eq!(rs.rejected(), 1, "{:?}", rs.reasons());
    assert_eq!(auth.tokens_issued().await, 1);
    // The provider's nonce cost one refused token request.
    assert_eq!(auth.logged("POST /token -> 400").await, 1);
}
