//! The most common real use: an axum server whose handler calls a protected downstream API
//! through a hyper-util client wrapped in `BearerAuthLayer`.
//!
//! ```text
//! cargo run --example axum_downstream
//! ```
//!
//! Everything runs in this process on 127.0.0.1: the embedded authorization server, the
//! protected downstream API (which accepts only live tokens and echoes request bodies), and
//! the axum server. The example then sends a few requests to its own axum server, revoking
//! every token halfway through to show the layer recovering by itself, prints what happened
//! and exits.
//!
//! The layered client lives in the axum state: `BearerAuth<S>` is `Clone` when `S` is, and
//! every clone shares the one token handle, so handlers never fetch tokens themselves.

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_client_credentials::{
    BearerAuth, BearerAuthError, BearerAuthLayer, BoxError, ClientCredentials,
};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};

/// The client for the downstream API: hyper-util's client with the layer in front.
type DownstreamClient = BearerAuth<Client<HttpConnector, Full<Bytes>>>;

/// The axum state. Cloned for every request; the clones share the connection pool and the
/// token.
#[derive(Clone)]
struct AppState {
    downstream: DownstreamClient,
    downstream_url: String,
}

/// `GET /orders/{id}`: asks the downstream API about the order and reports its answer.
async fn order(
    State(app): State<AppState>,
    Path(id): Path<u32>,
) -> Result<String, (StatusCode, String)> {
    let request = Request::post(format!("{}/orders/{id}", app.downstream_url))
        .body(Full::new(Bytes::from(format!(r#"{{"order":{id}}}"#))))
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    let response = app.downstream.oneshot(request).await.map_err(|error| {
        // No token could be had (the authorization server is down, say): say so, rather
        // than blaming the downstream API.
        if let BearerAuthError::TokenUnavailable(_) = error {
            (StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        } else {
            (StatusCode::BAD_GATEWAY, error.to_string())
        }
    })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err((
            StatusCode::BAD_GATEWAY,
            format!("downstream answered {status}"),
        ));
    }
    Ok(format!(
        "downstream answered {status} with {}",
        String::from_utf8_lossy(&body)
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The authorization server and the protected downstream API.
    let auth = MockAuthServer::start().await?;
    let api = auth.api();
    api.serve().await?;

    // The token handle, fetched once at startup, and the layered client.
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .scopes(["orders:read"])
            .build()?
            .start()
            .await?;
    let downstream: DownstreamClient = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(tokens))
        .service(Client::builder(TokioExecutor::new()).build_http());

    // The axum server.
    let app = Router::new()
        .route("/orders/{id}", get(order))
        .with_state(AppState {
            downstream,
            downstream_url: api.url(),
        });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                stopped.await.ok();
            })
            .await
    });
    println!("authorization server: {}", auth.token_url());
    println!("downstream API:       {}", api.url());
    println!("axum server:          http://{addr}");
    println!();

    // Some callers of the axum server.
    let callers = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for id in 1..=4 {
        if id == 3 {
            auth.revoke_all();
            println!("-- the authorization server revokes every token --");
        }
        let uri = format!("http://{addr}/orders/{id}");
        let response = callers.get(uri.parse()?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET /orders/{id} -> {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    stop.send(()).ok();
    server.await??;

    println!();
    println!("tokens fetched:                 {}", auth.issued());
    println!("downstream requests accepted:   {}", api.accepted());
    println!(
        "downstream requests refused:    {} (each retried with a new token)",
        api.rejected_total()
    );
    Ok(())
}
