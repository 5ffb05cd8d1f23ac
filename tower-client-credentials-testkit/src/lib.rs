//! An embedded OAuth 2.0 authorization server and protected API, for the tests, examples and
//! benchmarks of `tower-client-credentials`, and for the tests of code that uses it.
//!
//! - [`MockAuthServer`] is a token endpoint for the client-credentials grant
//!   ([RFC 6749 §4.4]). It authenticates clients with `client_secret_basic` or
//!   `client_secret_post`, accepts form and JSON bodies, issues HS256 JWTs, records every
//!   request and token, and can be told to misbehave ([`Fault`]): error responses, delays,
//!   hangs and broken bodies.
//! - [`MockApi`] is a protected resource that accepts only live tokens from the same
//!   [`TokenRegistry`], counts why it rejected the others ([`RejectReason`]) and echoes the
//!   request body of the requests it accepts.
//!
//! Both can be used in memory, as a [`tower_service::Service`] that needs no socket and works on
//! tokio's paused clock ([`MockAuthServer::service`], [`MockApi::service`]), or over real
//! sockets on `127.0.0.1` ([`MockAuthServer::serve`], [`MockApi::serve`]). Token expiry is
//! judged on tokio's clock, so advancing a paused clock past a token's lifetime expires it.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, StatusCode, header};
//! use http_body_util::{BodyExt, Full};
//! use tower_client_credentials_testkit::{
//!     DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer, TOKEN_PATH,
//! };
//! use tower_service::Service;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let auth = MockAuthServer::new();
//! let api = auth.api();
//!
//! // Fetch a token from the token endpoint, in memory.
//! let form = serde_urlencoded::to_string([
//!     ("grant_type", "client_credentials"),
//!     ("client_id", DEFAULT_CLIENT_ID),
//!     ("client_secret", DEFAULT_CLIENT_SECRET),
//! ])?;
//! let request = Request::post(format!("http://auth.test{TOKEN_PATH}"))
//!     .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
//!     .body(Full::new(Bytes::from(form)))?;
//! let response = auth.service().call(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! let body = response.into_body().collect().await?.to_bytes();
//! let token: serde_json::Value = serde_json::from_slice(&body)?;
//! let access_token = token["access_token"].as_str().unwrap_or_default();
//!
//! // Use it at the protected API, which echoes the body back.
//! let request = Request::post("http://api.test/echo")
//!     .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
//!     .body(Full::new(Bytes::from_static(b"hello")))?;
//! let response = api.service().call(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "hello");
//! assert_eq!((auth.issued(), api.accepted()), (1, 1));
//!
//! // The same servers over real sockets.
//! auth.serve().await?;
//! api.serve().await?;
//! println!("token endpoint: {}, API: {}", auth.token_url(), api.url());
//! # Ok(())
//! # }
//! ```
//!
//! [RFC 6749 §4.4]: https://www.rfc-editor.org/rfc/rfc6749#section-4.4

#![forbid(unsafe_code)]

mod api;
mod auth_server;
mod body;
pub mod dpop;
pub mod keys;
mod registry;
mod serve;
#[cfg(test)]
mod test_support;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use api::{MockApi, MockApiService, RejectReason, TOKEN_JTI_HEADER, TRAILERS_HEADER};
pub use auth_server::{
    ClientAuthMethod, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, ExpiresIn, Fault, MockAuthServer,
    MockAuthServerBuilder, MockAuthService, RecordedRequest, TOKEN_PATH,
};
pub use body::BodyAborted;
pub use registry::{IssuedToken, TokenRegistry};
pub use serve::ResponseFuture;

/// The error type of the mock servers' bodies and in-memory services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of the mock servers.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Locks `mutex`, ignoring poisoning: the mock's state stays usable after a panicking test.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
