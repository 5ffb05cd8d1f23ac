//! reqwest support (feature `reqwest`): [`BearerAuthMiddleware`], the layer's behaviour for a
//! [`reqwest_middleware::ClientWithMiddleware`].
//!
//! ```no_run
//! use tower_client_credentials::{ClientCredentials, reqwest::BearerAuthMiddleware};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tokens = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
//!     .scopes(["orders:read"])
//!     .build()?
//!     .start()
//!     .await?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(BearerAuthMiddleware::new(tokens).allow_origins(["https://api.example.com".parse()?]))
//!     .build();
//! let response = client.get("https://api.example.com/orders").send().await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```
//!
//! # Same rules as the tower layer
//!
//! The middleware is a second adapter over the request path that
//! [`BearerAuthLayer`](crate::BearerAuthLayer) uses (see the [`layer`
//! module](crate::layer#retrying-after-401)): the token comes from the lock-free store, a
//! request that finds none waits for the single fetch in flight, a request to an origin outside
//! [`allow_origins`](BearerAuthMiddleware::allow_origins) goes without it, a DPoP-bound token
//! gets a proof per request, and a refusal (401, or what
//! [`unauthorized_if`](BearerAuthMiddleware::unauthorized_if) says) is retried once, with the
//! same decisions about which token to retry with and the same metrics and tracing.
//!
//! Differences that come from reqwest:
//!
//! - The retry sends a copy made with [`reqwest::Request::try_clone`] before the first
//!   attempt. A body that cannot be copied (a stream, `Body::wrap_stream`) is sent once: its
//!   401 is returned as it is, and the next request gets a new token. A body of bytes is
//!   copied by reference count, whatever its size, so there is no replay limit.
//! - Errors the middleware adds are [`reqwest_middleware::Error::Middleware`] holding a
//!   [`TokenUnavailable`](crate::TokenUnavailable) (no token within the wait) or a
//!   [`DpopError`]: `error` downcasts to them through `anyhow`. The request
//!   is then not sent; it never goes out without a token.
//! - reqwest follows redirects inside the client, below every middleware, and drops the
//!   `Authorization` header on a redirect to another host; the DPoP proof, bound to the first
//!   URL, would not pass there anyway.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Extensions, Uri, header::AUTHORIZATION};
use reqwest_middleware::{Error, Middleware, Next, Result};

pub use crate::endpoint::ReqwestTransport;
use crate::{
    dpop::{self, DpopError},
    origin::Origin,
    refresh::{Shared, TokenHandle},
    request_path::{self, Config, DpopBase},
    token::Token,
    token_set::TokenSet,
};

/// A [`reqwest_middleware::Middleware`] that authorizes requests with a client-credentials
/// access token, as [`BearerAuthLayer`](crate::BearerAuthLayer) does for tower services. See
/// the [module documentation](self).
#[derive(Clone)]
pub struct BearerAuthMiddleware {
    handle: TokenHandle,
    config: Config,
    origins: Option<Arc<[Origin]>>,
}

impl BearerAuthMiddleware {
    crate::request_path::allow_origins_setter!();
    crate::request_path::config_setters!(config);

    /// Authorizes requests with `handle`'s token.
    pub fn new(handle: TokenHandle) -> Self {
        let config = Config::new(&handle);
        Self {
            handle,
            config,
            origins: None,
        }
    }

    /// The token handle.
    pub fn handle(&self) -> &TokenHandle {
        &self.handle
    }
}

impl std::fmt::Debug for BearerAuthMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuthMiddleware")
            .field("config", &self.config)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

/// A [`reqwest_middleware::Middleware`] that authorizes each request with the token of the
/// [`TokenSet`] key its route picks, as [`TokenSetLayer`](crate::TokenSetLayer) does for tower
/// services: by the routes of the set, then a [`TokenKey`](crate::TokenKey) given with
/// `RequestBuilder::with_extension`, then the set's `route_with` function. Once the key is
/// chosen it behaves as [`BearerAuthMiddleware`] with that key's token; a request that no
/// route decides goes without a token.
#[derive(Clone)]
pub struct TokenSetMiddleware {
    set: TokenSet,
    config: Config,
}

impl TokenSetMiddleware {
    crate::request_path::config_setters!(config);

    /// Authorizes requests with the tokens of `set`.
    pub fn new(set: TokenSet) -> Self {
        let config = Config::with_max_wait(set.max_wait());
        Self { set, config }
    }

    /// The token set.
    pub fn token_set(&self) -> &TokenSet {
        &self.set
    }
}

impl std::fmt::Debug for TokenSetMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSetMiddleware")
            .field("set", &self.set)
            .field("config", &self.config)
            .finish()
    }
}

#[async_trait]
impl Middleware for TokenSetMiddleware {
    async fn handle(
        &self,
        request: ::reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<::reqwest::Response> {
        let uri = uri_of(&request);
        let handle = uri.as_ref().and_then(|uri| {
            self.set
                .handle_for_parts(request.method(), uri, request.headers(), extensions)
        });
        let handle = match handle {
            Some(Ok(handle)) => handle,
            Some(Err(error)) => return Err(Error::middleware(error)),
            None => {
                tracing::debug!(
                    origin = ?uri.as_ref().and_then(Origin::from_uri),
                    "no token route for the request; sending it without a token"
                );
                return next.run(request, extensions).await;
            }
        };
        send(&handle, &self.config, request, uri, extensions, next).await
    }
}

/// The request's URL as an `http::Uri`, for the origin allowlist and the DPoP proof. `None`
/// for a URL that `http` cannot represent: such a request is not authorized.
fn uri_of(request: &::reqwest::Request) -> Option<Uri> {
    request.url().as_str().parse().ok()
}

/// Puts `token` in `request`: its `Authorization` header and, for a DPoP-bound token, a proof
/// for `uri` (which is then `Some`).
fn authorize(
    shared: &Shared,
    request: &mut ::reqwest::Request,
    token: &Token,
    uri: Option<&Uri>,
) -> std::result::Result<(), DpopError> {
    request
        .headers_mut()
        .insert(AUTHORIZATION, token.header_value().clone());
    if let Some(ath) = &token.ath {
        let uri = uri.ok_or(DpopError::RelativeUri)?;
        let proof = request_path::api_proof(shared, request.method(), uri, None, ath)?;
        request.headers_mut().insert(dpop::DPOP, proof);
    }
    Ok(())
}

#[async_trait]
impl Middleware for BearerAuthMiddleware {
    async fn handle(
        &self,
        request: ::reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<::reqwest::Response> {
        // Parsed only when an allowlist or a proof needs it.
        let mut uri = None;
        if let Some(origins) = &self.origins {
            uri = uri_of(&request);
            if !uri
                .as_ref()
                .is_some_and(|uri| request_path::authorizes(Some(origins), uri))
            {
                request_path::not_authorized(uri.as_ref().unwrap_or(&Uri::default()));
                return next.run(request, extensions).await;
            }
        }
        send(&self.handle, &self.config, request, uri, extensions, next).await
    }
}

/// Sends `request` with `handle`'s token, and once more after a refusal: the path both
/// middlewares share once the token is chosen. `uri` is the request's, if already parsed.
async fn send(
    handle: &TokenHandle,
    config: &Config,
    mut request: ::reqwest::Request,
    mut uri: Option<Uri>,
    extensions: &mut Extensions,
    next: Next<'_>,
) -> Result<::reqwest::Response> {
    let shared = handle.shared();
    let token = match shared.current.load_full() {
        // As in the layer: a token past its usable end is never sent.
        Some(token) if !token.is_marked_expired() => token,
        _ => request_path::wait_for_token(shared, config.max_wait)
            .await
            .map_err(Error::middleware)?,
    };
    if token.ath.is_some() && uri.is_none() {
        uri = uri_of(&request);
    }
    authorize(shared, &mut request, &token, uri.as_ref()).map_err(Error::middleware)?;
    let dpop = if token.ath.is_some() {
        DpopBase::Proof(None)
    } else {
        DpopBase::None
    };
    // With DPoP the response is read even without retries: it may bring a nonce.
    if !config.retry && matches!(dpop, DpopBase::None) {
        return next.run(request, extensions).await;
    }
    let copy = if config.retry {
        request.try_clone()
    } else {
        None
    };
    let uri = uri.unwrap_or_default();
    let first = next.clone().run(request, extensions).await?;
    let refused = request_path::inspect(
        shared,
        &uri,
        &dpop,
        token.generation,
        config,
        first.status(),
        first.headers(),
    );
    if !refused || !config.retry {
        return Ok(first);
    }
    let (Some(with), Some(mut retry)) = (
        request_path::on_refusal(
            shared,
            token.generation,
            &dpop,
            first.status(),
            first.headers(),
            copy.is_some(),
        ),
        copy,
    ) else {
        return Ok(first);
    };
    // Release the first response (and its connection) before waiting or sending again.
    drop(first);
    let token = with
        .token(shared, token.generation, config.max_wait)
        .await
        .map_err(Error::middleware)?;
    // The copy carries the first attempt's proof; the retry gets its own.
    retry.headers_mut().remove(dpop::DPOP);
    authorize(shared, &mut retry, &token, Some(&uri)).map_err(Error::middleware)?;
    let response = next.run(retry, extensions).await?;
    request_path::after_retry(
        shared,
        &uri,
        &dpop,
        token.generation,
        config,
        response.status(),
        response.headers(),
    );
    Ok(response)
}
