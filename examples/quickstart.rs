//! The crate's main job, end to end: an embedded authorization server issues 3-second tokens,
//! an embedded API accepts only live ones, and a hyper-util client wrapped in
//! `BearerAuthLayer` calls the API for about 15 seconds from 8 concurrent workers.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! It prints each token fetch as it happens and, at the end, how many requests went out and
//! that every one of them was accepted.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{ServiceBuilder, ServiceExt};
use tower_client_credentials::{BearerAuthLayer, BoxError, ClientCredentials};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};
use tracing_subscriber::EnvFilter;

const RUN_FOR: Duration = Duration::from_secs(15);
const WORKERS: usize = 8;

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
        .lifetime(Duration::from_secs(3))
        .start()
        .await?;
    let api = auth.api();
    api.serve().await?;
    println!("authorization server: {}", auth.token_url());
    println!("protected API:        {}", api.url());

    // The token handle: the first token is fetched before `start` returns.
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .scopes(["orders:read", "orders:write"])
            .build()?
            .start()
            .await?;

    // Any tower service that takes `http::Request<B>` can go inside the layer.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(tokens.clone()))
        .service(client);

    let deadline = tokio::time::Instant::now() + RUN_FOR;
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let service = service.clone();
        let url = format!("{}/orders/{worker}", api.url());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0_u64, 0_u64);
            while tokio::time::Instant::now() < deadline {
                let request = Request::post(&url).body(Full::new(Bytes::from_static(b"{}")))?;
                let response = service.clone().oneshot(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if status == StatusCode::OK {
                    ok += 1;
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, BoxError>((ok, failed))
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (worker_ok, worker_failed) = worker.await??;
        ok += worker_ok;
        failed += worker_failed;
    }

    println!();
    println!("requests sent:      {}", ok + failed);
    println!("requests accepted:  {ok}");
    println!("requests refused:   {failed}");
    println!("tokens fetched:     {}", auth.issued());
    println!(
        "token lifetime:     3 s, refreshed at ~80 % of it ({} fetches in {} s)",
        auth.issued(),
        RUN_FOR.as_secs()
    );
    if failed == 0 && api.rejected_total() == 0 {
        println!("every request succeeded with a valid token");
        Ok(())
    } else {
        Err(format!("{failed} requests were refused").into())
    }
}
