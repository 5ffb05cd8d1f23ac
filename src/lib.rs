//! Tower middleware for machine-to-machine OAuth 2.0: it obtains access tokens with the Client
//! Credentials grant (RFC 6749 §4.4), keeps them fresh in the background, and puts
//! `Authorization: Bearer <token>` on every request that goes through it.
//!
//! # Overview
//!
//! - [`ClientCredentials`] configures the token request (endpoint, credentials, scopes, body
//!   encoding, client authentication) and the refresh schedule, and starts a [`TokenHandle`].
//! - A [`Refresher`] task keeps the handle's token fresh: it fetches a new one before the old
//!   one expires, backs off on failures while the old token is still served, and stops when the
//!   last handle is dropped.
//! - [`BearerAuthLayer`] wraps any `tower::Service<http::Request<B>>`: it reads the current
//!   token without locking, waits for one when none is valid, and retries once after a 401.
//!   Its error, [`BearerAuthError`], keeps the inner service's error typed.
//! - [`TokenSet`] and [`TokenSetLayer`] are the same for a client of several APIs, each with
//!   its own audience, resources or scopes: one token per [`TokenKey`], chosen per request by
//!   the request's origin; see [`token_set`].
//! - [`dpop`]: sender-constrained tokens (RFC 9449). With a [`DpopKey`] the tokens are bound to
//!   the client's key and every request carries a proof signed with it.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_client_credentials::{BearerAuthLayer, ClientCredentials};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tokens = ClientCredentials::builder(
//!     "https://auth.example.com/oauth/token",
//!     "my-client-id",
//!     "my-client-secret",
//! )
//! .scopes(["orders:read", "orders:write"])
//! .build()? // configuration errors surface here
//! .start()
//! .await?; // fetches the first token: bad credentials fail here, not on request 1
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let api = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(tokens.clone()))
//!     .service(client);
//!
//! let request = http::Request::get("http://127.0.0.1:8080/orders")
//!     .body(Full::new(Bytes::new()))?;
//! let response = api.oneshot(request).await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```
//!
//! # Where the layer goes
//!
//! - **Inside `tower::timeout::Timeout`** (timeout added first, outermost): the timeout then
//!   bounds the whole call, including waiting for a token and the retry after a 401. A
//!   request cancelled by the timeout while it waits for a token affects no other request.
//! - **Inside `tower::retry::Retry`**: each of your retries gets the current token; our own
//!   401 retry happens within one of your attempts.
//! - **Outside your `FollowRedirect`, or with redirects off**: a client that follows redirects
//!   below this layer would carry the token to wherever the redirect points.
//!
//! # Feature flags
//!
//! - `rustls` (default): the built-in token-endpoint transport can reach `https` endpoints,
//!   through hyper-util and rustls (aws-lc-rs, or the process's default rustls provider if the
//!   application installed one). It trusts the roots of the next three features.
//! - `native-roots` (default): the operating system's root certificates (`SSL_CERT_FILE` and
//!   `SSL_CERT_DIR` are honoured).
//! - `webpki-roots`: Mozilla's roots compiled in, for images without CA files (distroless,
//!   scratch). With `native-roots` too, both sets are trusted.
//! - `platform-verifier`: the operating system's verifier (`rustls-platform-verifier`); it
//!   takes precedence over the two root features.
//! - `tonic`: [`ReplayBody`] for `tonic::body::Body`, so gRPC calls are retried after
//!   `UNAUTHENTICATED`.
//! - `axum`: [`ReplayBody`] for `axum::body::Body`, so that an axum handler can send the body
//!   it holds through the layer and have it retried after a 401.
//! - `metrics`: counters, histograms and a gauge through the `metrics` facade: token fetches
//!   by outcome and their duration, time requests spent waiting for a token, retries after
//!   401, and seconds until the current token expires. Names are listed in the README.
//! - `redis`: [`RedisCache`], a token cache shared by the replicas of a service through Redis,
//!   so that the fleet makes one token request per token lifetime; see [`shared_cache`].
//! - `reqwest`: [`reqwest`], the middleware's behaviour for `reqwest_middleware`
//!   ([`BearerAuthMiddleware`], and [`TokenSetMiddleware`] for a [`TokenSet`]) and a `reqwest::Client` as the token endpoint's transport
//!   ([`ReqwestTransport`](crate::reqwest::ReqwestTransport)). reqwest comes without its
//!   default features: TLS and proxies are those your reqwest enables.
//!
//! The embedded authorization server and protected API that the tests, examples and benches
//! use are a crate of their own, `tower-client-credentials-testkit`, for your tests too.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client_credentials;
pub mod dpop;
mod endpoint;
mod error;
pub mod layer;
mod metrics;
mod origin;
mod refresh;
mod request_path;
pub mod source;
mod template;
mod token;
pub mod token_set;
mod www_authenticate;

#[cfg(feature = "redis")]
pub mod shared_cache;

#[cfg(feature = "reqwest")]
pub mod reqwest;

/// The parsers of server bytes, opened to the fuzz targets in `fuzz/`. Only under cargo-fuzz's
/// `cfg(fuzzing)`: not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;

pub use crate::{
    client_credentials::{ClientCredentials, ClientCredentialsBuilder, TokenSourceBuilder},
    dpop::{DpopAlgorithm, DpopError, DpopKey},
    endpoint::{
        AssertionAudience, AuthMethod, ClientAssertion, ClientKey, DiscoveryError, Proxies,
        RequestFormat, SigningAlgorithm,
    },
    error::{BoxError, ConfigError, TokenError, TokenUnavailable},
    layer::{
        BearerAuth, BearerAuthLayer, Error as BearerAuthError, NoReplay, Origin, RecordedBody,
        Replay, ReplayBodies, ReplayBody, ReplayPolicy, ResponseFuture,
    },
    refresh::{Refresher, TokenHandle, TokenStatus},
    source::{IssuedToken, SourceFn, TokenSource, source_fn},
    token::{ExpirySource, Token},
    token_set::{TokenKey, TokenSet, TokenSetAuth, TokenSetBuilder, TokenSetLayer},
};

#[cfg(feature = "redis")]
pub use crate::shared_cache::RedisCache;

#[cfg(feature = "reqwest")]
pub use crate::reqwest::{BearerAuthMiddleware, TokenSetMiddleware};

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
