//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use tower_client_credentials::{
    BearerAuth, BearerAuthLayer, BoxError, ClientCredentials, ClientCredentialsBuilder,
    TokenHandle, TokenUnavailable,
};
use tower_client_credentials_testkit::{
    BoxBody, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockApi, MockApiService, MockAuthServer,
};

/// A builder whose token requests go to `auth` in memory (paused-clock friendly).
pub fn builder(auth: &MockAuthServer) -> ClientCredentialsBuilder {
    ClientCredentials::builder(
        "http://127.0.0.1/oauth/token",
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
    )
    .http_client(auth.service())
}

/// An authorization server with tokens of `lifetime`.
pub fn auth_server(lifetime: Duration) -> MockAuthServer {
    MockAuthServer::builder().lifetime(lifetime).build()
}

/// The layer around the in-memory API.
pub fn client(handle: &TokenHandle, api: &MockApi) -> BearerAuth<MockApiService> {
    BearerAuthLayer::new(handle.clone()).layer(api.service())
}

pub fn request(body: &'static str) -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1/api/orders")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid request")
}

/// Sends one request and returns its status and body.
pub async fn send<S>(
    service: &S,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), BoxError>
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<BoxBody>> + Clone,
    S::Error: Into<BoxError>,
{
    // Boxed, the layer's error is the concrete one inside (`TokenUnavailable`, the API's).
    let response = service.clone().oneshot(request).await.map_err(Into::into)?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The `TokenUnavailable` inside a request error.
pub fn unavailable(error: &BoxError) -> &TokenUnavailable {
    error
        .downcast_ref::<TokenUnavailable>()
        .unwrap_or_else(|| panic!("expected TokenUnavailable, got {error:?}"))
}

/// Everything written by a `tracing` subscriber, as text: give clones of it to the subscriber
/// as its writer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}
