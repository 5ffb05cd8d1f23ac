//! The middleware: [`BearerAuthLayer`] and [`BearerAuth`] put the current access token in each
//! request's `Authorization` header, wait for one when none is valid, and retry once after a
//! 401 (or gRPC `UNAUTHENTICATED`) with a fresh token.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::ServiceBuilder;
//! use tower_client_credentials::{BearerAuthLayer, ClientCredentials};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tokens = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
//!     .scopes(["orders:read"])
//!     .build()?
//!     .start()
//!     .await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let service = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(tokens))
//!     .service(client);
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! # The request path
//!
//! With a valid token, [`BearerAuth`]'s `call` reads the token from an `ArcSwap` (no lock),
//! clones its prebuilt header value (a reference-count increment) into the request and calls
//! the inner service. With [`retry_unauthorized`](BearerAuthLayer::retry_unauthorized) on, it
//! also keeps a copy of the method, URI, headers and extensions, a clone of the inner service
//! and the body's replay for the retry, as the layer's [replay policy](ReplayPolicy) says.
//!
//! With no valid token, the request waits for the token request in flight (there is at most
//! one), for at most [`max_wait`](BearerAuthLayer::max_wait), then goes out through the inner
//! service that `poll_ready` made ready (a clone stays in the layer for the next request). If the token request fails or the wait runs out, the
//! request fails with [`Error::TokenUnavailable`]; it is never sent without a token.
//!
//! # Errors
//!
//! The service's error is [`Error<E>`] (re-exported as
//! [`BearerAuthError`](crate::BearerAuthError)): `Error::Inner(e)` is the inner service's own
//! error `e`, typed as the inner service returned it, and the other variants are the
//! middleware's (no token, no DPoP proof), for requests it did not send. Converting it into a
//! [`BoxError`](crate::BoxError) unwraps it, so boxing stacks see the concrete error.
//!
//! # Where the token goes
//!
//! By default the layer authorizes every request that passes through it, like tower-http's
//! `AddAuthorization`. When the inner client can reach more than one host, restrict it with
//! [`allow_origins`](BearerAuthLayer::allow_origins): requests to other origins then go out
//! untouched, without our token (and with any `Authorization` header they had), which is
//! logged at debug level. Requests with a relative URI (a tonic channel's, whose origin is
//! fixed by the channel) are always authorized.
//!
//! Redirects: a client that follows redirects *inside* this layer copies our `Authorization`
//! header to wherever the redirect points. Put tower-http's `FollowRedirect` *outside* this
//! layer (added to the `ServiceBuilder` before it) and set `allow_origins`: each redirected
//! request then comes through the layer again, and a cross-origin one goes without the token.
//!
//! # Retrying after 401
//!
//! A response is "unauthorized" when its status is 401 or it carries `grpc-status: 16`
//! (configurable with [`unauthorized_if`](BearerAuthLayer::unauthorized_if)). The layer also
//! notes every other answer (except server errors) as the token being *accepted*: what a
//! refusal means depends on it. Then:
//!
//! 1. If another request has already brought a newer token, the retry uses it at once.
//! 2. If the refused token had been accepted before, it has expired or been revoked: it is
//!    withdrawn at once (once for all requests that carried it) and the request waits for the
//!    refresher's next token, the same single fetch every other request waits for. The first
//!    response is dropped before the wait, releasing its connection.
//! 3. If the token was refused before any request succeeded with it, the first time is
//!    treated as in 2. Further fresh tokens refused in a row mean the API refuses our tokens:
//!    their replacement backs off (see
//!    [`refused_token_backoff`](crate::ClientCredentialsBuilder::refused_token_backoff)) and
//!    the 401 is returned as it is.
//! 4. The request is sent again once, with the new token. Whatever comes back is returned as
//!    it is.
//!
//! A request whose body cannot be replayed (larger than
//! [`replay_limit`](BearerAuthLayer::replay_limit)) is not retried: its 401 is returned, and
//! the next request gets a new token. A request that waited for a new token and got none
//! within `max_wait` fails with [`TokenUnavailable`](crate::TokenUnavailable), as a request
//! that found no token does.
//!
//! # Expired tokens
//!
//! The refresher withdraws a token before it expires. The request path checks too: a timer
//! armed when the token was published marks it expired at its usable end, from tokio's timer
//! driver (no task needs to run), and each request reads the mark with one relaxed load. A
//! token past its usable end is never sent, even when the refresher has not run (a starved
//! runtime).

mod body;
mod error;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod retry;
mod service;

pub(crate) use self::retry::RetryService;
pub use self::{
    body::{NoReplay, RecordedBody, Replay, ReplayBodies, ReplayBody, ReplayPolicy},
    error::Error,
    future::ResponseFuture,
    layer::BearerAuthLayer,
    service::BearerAuth,
};
pub(crate) use crate::request_path::Config;
pub use crate::{origin::Origin, request_path::default_unauthorized};
