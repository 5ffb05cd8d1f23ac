//! DPoP-bound tokens (RFC 9449) end to end: the same layer, one more builder option.
//!
//! ```text
//! cargo run --example dpop
//! ```
//!
//! Everything runs in this process on 127.0.0.1: the embedded authorization server requires a
//! DPoP proof and its own nonce on token requests, and the protected API checks every request's
//! proof (signature, `htm`, `htu`, `iat`, `ath`, `jti` replay, key against the token's
//! `cnf.jkt`) and asks for a nonce of its own, which it rotates halfway through. The example
//! sends requests through the layer, prints what the servers saw and exits.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{ServiceBuilder, ServiceExt};
use tower_client_credentials::{
    BearerAuthLayer, BoxError, ClientCredentials, DpopAlgorithm, DpopKey,
};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(3))
        .require_dpop(true)
        .dpop_nonce(true)
        .start()
        .await?;
    let api = auth.api().dpop_nonce(true);
    api.serve().await?;

    // A key for this process; `DpopKey::from_pem` loads one you keep.
    let key = DpopKey::generate(DpopAlgorithm::ES256)?;
    println!("DPoP key: {} {}", key.algorithm(), key.thumbprint());
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .scopes(["orders:read"])
            .dpop(key)
            .build()?
            .start()
            .await?;
    let token = tokens.current().ok_or("no token")?;
    println!(
        "token: type {}, lifetime {:?}, bound to {:?}",
        token.token_type(),
        token.lifetime(),
        auth.last_token().and_then(|issued| issued.dpop_jkt)
    );

    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(tokens.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let mut ok = 0;
    for i in 0..40 {
        if i == 20 {
            api.rotate_dpop_nonce();
        }
        let request = Request::post(format!("{}/orders/{i}", api.url()))
            .body(Full::new(Bytes::from(format!(r#"{{"order":{i}}}"#))))?;
        let response = client.clone().oneshot(request).await?;
        if response.status().is_success() {
            ok += 1;
        }
        response.into_body().collect().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("requests: {ok} of 40 succeeded");
    println!(
        "authorization server: {} token requests, {} proofs, {} nonce challenges",
        auth.token_requests(),
        auth.dpop_proofs(),
        auth.dpop_nonce_challenges()
    );
    println!(
        "API: {} accepted, {} refused, {} nonce challenges (one per nonce), {} distinct proofs",
        api.accepted(),
        api.rejected_total(),
        api.dpop_nonce_challenges(),
        api.seen_proof_jtis().len()
    );
    if ok != 40 {
        return Err("some requests failed".into());
    }
    Ok(())
}
