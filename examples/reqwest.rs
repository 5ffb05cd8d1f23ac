//! reqwest users: an embedded authorization server and API on 127.0.0.1, token requests sent
//! with a `reqwest::Client` (`ReqwestTransport`), and API calls through a
//! `reqwest_middleware::ClientWithMiddleware` with `BearerAuthMiddleware`, which attaches the
//! token, waits for it when none is valid and retries once after a 401.
//!
//! ```text
//! cargo run --example reqwest --features reqwest
//! ```
//!
//! It revokes the token halfway, so that one request shows the retry with a fresh token.

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use tower_client_credentials::{
    BearerAuthMiddleware, BoxError, ClientCredentials, reqwest::ReqwestTransport,
};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("tower_client_credentials=info")),
        )
        .with_target(false)
        .init();

    // The embedded authorization server and API, on 127.0.0.1.
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(300))
        .start()
        .await?;
    let api = auth.api();
    api.serve().await?;

    // One reqwest client for both jobs. No redirects: a token request carries the secret.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .scopes(["orders:read"])
            .http_client(ReqwestTransport::new(http.clone()))
            .build()?
            .start()
            .await?;

    // The token goes only to the API's origin.
    let client = ClientBuilder::new(http)
        .with(BearerAuthMiddleware::new(tokens.clone()).allow_origins([api.url().parse()?]))
        .build();

    let url = format!("{}/orders", api.url());
    for round in 1..=4 {
        if round == 3 {
            println!("revoking the token at the authorization server");
            auth.revoke_all();
        }
        let response = client
            .post(&url)
            .body(format!("order {round}"))
            .send()
            .await?;
        let status = response.status();
        println!("request {round}: {status} {}", response.text().await?);
        if !status.is_success() {
            return Err(format!("request {round} was refused").into());
        }
    }
    println!(
        "token requests: {}; API requests: {}, refused: {} (the revoked token, retried)",
        auth.token_requests(),
        api.requests(),
        api.rejected_total()
    );
    tokens.shutdown();
    Ok(())
}
