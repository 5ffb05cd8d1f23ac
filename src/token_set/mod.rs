//! Several APIs, several tokens, one client: a [`TokenSet`] holds one access token per
//! [`TokenKey`] (scopes, audience, resources), and [`TokenSetLayer`] puts on each request the
//! token of the key its route picks.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_client_credentials::{ClientCredentials, TokenKey, TokenSetLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tokens = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
//!     .build_set()?
//!     .route(
//!         "https://orders.example.com".parse()?,
//!         TokenKey::new().audience("https://orders.example.com").scopes(["orders:read"]),
//!     )?
//!     .route(
//!         "https://billing.example.com".parse()?,
//!         TokenKey::new().audience("https://billing.example.com"),
//!     )?
//!     .start() // fetches both tokens
//!     .await?;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let api = ServiceBuilder::new()
//!     .layer(TokenSetLayer::new(tokens.clone()))
//!     .service(client);
//!
//! // Goes with the orders token; a request to billing.example.com would carry the billing
//! // token, and one to any other origin no token at all.
//! let request = http::Request::get("https://orders.example.com/orders")
//!     .body(Full::new(Bytes::new()))?;
//! let response = api.oneshot(request).await?;
//! # let _ = response;
//! for (key, status) in tokens.status() {
//!     println!("{key:?}: valid = {}", status.valid);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Keys
//!
//! Tokens differ by the scopes, `audience` and `resource`s of their token request: that is a
//! [`TokenKey`]. A key's unset fields take the values set on the
//! [`ClientCredentialsBuilder`](crate::ClientCredentialsBuilder) before
//! [`build_set`](crate::ClientCredentialsBuilder::build_set); everything else (endpoint,
//! credentials, HTTP client, refresh schedule, `max_wait`) is shared by all keys.
//!
//! Each key has its own token and refresh schedule, exactly as a single
//! [`TokenHandle`](crate::TokenHandle): refreshed before expiry, one fetch at a time whatever
//! number of requests wait for it, backoff on failure, a 401 refreshing that key's token only.
//! All keys' refresh loops run inside one background task, spawned by
//! [`start`](TokenSetBuilder::start) or [`spawn`](TokenSetBuilder::spawn), which ends when the
//! last [`TokenSet`] clone is dropped.
//!
//! Keys are created on demand: [`start`](TokenSetBuilder::start) creates the keys of the
//! [routes](TokenSetBuilder::route) and waits for their first tokens; any other key is created
//! by the first request that needs it, which waits for its token like the first request of a
//! cold [`TokenHandle`](crate::TokenHandle). A key that no request uses for the
//! [idle timeout](TokenSetBuilder::idle_timeout) stops being refreshed and its token is
//! dropped; a later request brings it back with a new token.
//!
//! # Which token a request gets
//!
//! The first of these that decides, in this order:
//!
//! 1. **The request's origin** (scheme, host, port), looked up in the
//!    [routes](TokenSetBuilder::route). This is the common case, and it cannot be overridden:
//!    a request to a routed origin always carries that origin's token.
//! 2. **A [`TokenKey`] in the request's extensions**, set by the caller.
//! 3. **The [`route_with`](TokenSetBuilder::route_with) function**, given the method, URI and
//!    headers.
//!
//! A request that none of them maps to a key is sent untouched, without a token (logged at
//! debug level): a token never goes to an API it was not chosen for.
//!
//! # Health
//!
//! [`TokenSet::status`] lists each live key with the same [`TokenStatus`](crate::TokenStatus)
//! a single handle reports.

mod key;
mod layer;
mod service;
mod set;

pub(crate) use self::set::{SourceForKey, Sources};
pub use self::{
    key::TokenKey,
    layer::TokenSetLayer,
    service::TokenSetAuth,
    set::{TokenSet, TokenSetBuilder},
};
