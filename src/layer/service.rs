use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::{ArcSwapOption, Cache};
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header::AUTHORIZATION};
use tower::ServiceExt;
use tower_service::Service;

use super::{
    Origin, ReplayBody,
    future::{ResponseFuture, Retry},
};
use crate::{
    dpop::{self, DpopError},
    error::BoxError,
    refresh::{Shared, TokenHandle},
    token::Token,
};

/// Per-layer settings, copied into every service.
#[derive(Clone, Copy)]
pub(crate) struct Config {
    pub(crate) retry: bool,
    pub(crate) replay_limit: usize,
    pub(crate) max_wait: Duration,
    pub(crate) is_unauthorized: fn(StatusCode, &HeaderMap) -> bool,
}

impl Config {
    pub(crate) fn new(handle: &TokenHandle) -> Self {
        Self::with_max_wait(handle.shared().max_wait)
    }

    /// The defaults, waiting at most `max_wait` for a token.
    pub(crate) fn with_max_wait(max_wait: Duration) -> Self {
        Self {
            retry: true,
            replay_limit: 64 * 1024,
            max_wait,
            is_unauthorized: default_is_unauthorized,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("retry", &self.retry)
            .field("replay_limit", &self.replay_limit)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Status 401, or a gRPC response with `grpc-status: 16` (UNAUTHENTICATED) in its headers, as
/// a server's auth interceptor sends it (trailers-only response).
fn default_is_unauthorized(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        || headers
            .get(GRPC_STATUS)
            .is_some_and(|value| value.as_bytes() == b"16")
}

/// The token store as seen through an [`arc_swap::Cache`]: each service keeps the current
/// token's `Arc` and revalidates it with one atomic load per request, instead of `load()`'s
/// read-modify-write pair.
#[derive(Clone)]
pub(crate) struct Store(Arc<Shared>);

impl std::ops::Deref for Store {
    type Target = ArcSwapOption<Token>;

    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

type TokenCache = Cache<Store, Option<Arc<Token>>>;

/// Middleware that authorizes requests with a client-credentials access token.
///
/// Made by [`BearerAuthLayer`](super::BearerAuthLayer) or [`BearerAuth::new`]. See the
/// [`layer` module documentation](crate::layer) for what it does.
#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    handle: TokenHandle,
    cache: TokenCache,
    config: Config,
    origins: Option<Arc<[Origin]>>,
    dpop_origin: Option<Arc<Origin>>,
}

impl<S> BearerAuth<S> {
    /// Wraps `inner`, authorizing its requests with `handle`'s token.
    pub fn new(inner: S, handle: TokenHandle) -> Self {
        let config = Config::new(&handle);
        Self::from_parts(inner, handle, config, None, None)
    }

    /// A [`BearerAuthLayer`](super::BearerAuthLayer) for this middleware.
    pub fn layer(handle: TokenHandle) -> super::BearerAuthLayer {
        super::BearerAuthLayer::new(handle)
    }

    pub(crate) fn from_parts(
        inner: S,
        handle: TokenHandle,
        config: Config,
        origins: Option<Arc<[Origin]>>,
        dpop_origin: Option<Arc<Origin>>,
    ) -> Self {
        let cache = Cache::new(Store(handle.shared_arc()));
        Self {
            inner,
            handle,
            cache,
            config,
            origins,
            dpop_origin,
        }
    }

    /// See [`BearerAuthLayer::dpop_origin`](super::BearerAuthLayer::dpop_origin).
    pub fn dpop_origin(mut self, origin: Origin) -> Self {
        self.dpop_origin = Some(Arc::new(origin));
        self
    }

    /// See [`BearerAuthLayer::allow_origins`](super::BearerAuthLayer::allow_origins).
    pub fn allow_origins(mut self, origins: impl IntoIterator<Item = Origin>) -> Self {
        self.origins = Some(origins.into_iter().collect());
        self
    }

    /// Whether the token may go with a request to `uri`.
    fn authorizes(&self, uri: &http::Uri) -> bool {
        match &self.origins {
            None => true,
            // A relative URI goes to the inner client's fixed origin (a tonic channel).
            Some(_) if uri.host().is_none() => true,
            Some(origins) => origins.iter().any(|origin| origin.matches(uri)),
        }
    }

    /// See [`BearerAuthLayer::retry_unauthorized`](super::BearerAuthLayer::retry_unauthorized).
    pub fn retry_unauthorized(mut self, retry: bool) -> Self {
        self.config.retry = retry;
        self
    }

    /// See [`BearerAuthLayer::replay_limit`](super::BearerAuthLayer::replay_limit).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.config.replay_limit = bytes;
        self
    }

    /// See [`BearerAuthLayer::max_wait`](super::BearerAuthLayer::max_wait).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// See [`BearerAuthLayer::unauthorized_if`](super::BearerAuthLayer::unauthorized_if).
    pub fn unauthorized_if(mut self, predicate: fn(StatusCode, &HeaderMap) -> bool) -> Self {
        self.config.is_unauthorized = predicate;
        self
    }

    /// The token handle.
    pub fn handle(&self) -> &TokenHandle {
        &self.handle
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for BearerAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("origins", &self.origins)
            .field("dpop_origin", &self.dpop_origin)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for BearerAuth<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.authorizes(request.uri()) {
            tracing::debug!(
                origin = ?Origin::from_uri(request.uri()),
                "request to an origin not allowed for the token; sending it without"
            );
            return ResponseFuture::direct(self.inner.call(request));
        }
        let Some(token) = self.cache.load() else {
            return self.call_when_token(request);
        };
        request
            .headers_mut()
            .insert(AUTHORIZATION, token.header_value().clone());
        let generation = token.generation;
        let dpop = token.ath.is_some();
        if let Some(ath) = &token.ath {
            match dpop_proof(
                self.handle.shared(),
                &request,
                self.dpop_origin.as_deref(),
                ath,
            ) {
                Ok(proof) => {
                    request.headers_mut().insert(dpop::DPOP, proof);
                }
                Err(error) => return ResponseFuture::failed(error),
            }
        }

        // With DPoP the response is looked at even without retries: it may bring a nonce.
        if !self.config.retry && !dpop {
            return ResponseFuture::direct(self.inner.call(request));
        }
        let (parts, body) = request.into_parts();
        let (body, replay) = body.into_replay(self.config.replay_limit);
        let retry = Retry::new(
            &parts,
            replay,
            self.inner.clone(),
            self.handle.clone(),
            generation,
            self.config,
            dpop.then(|| self.dpop_origin.clone()),
        );
        ResponseFuture::retryable(self.inner.call(Request::from_parts(parts, body)), retry)
    }
}

/// A DPoP proof for `request`, carrying the token's `ath`.
pub(crate) fn dpop_proof<B>(
    shared: &Shared,
    request: &Request<B>,
    base: Option<&Origin>,
    ath: &str,
) -> Result<http::HeaderValue, DpopError> {
    // A token is DPoP-bound only when the handle has a prover.
    let prover = shared.dpop.as_ref().ok_or(DpopError::RelativeUri)?;
    prover.api_proof(request.method(), request.uri(), base, ath)
}

impl<S> BearerAuth<S> {
    /// The slow path: no valid token. Wait for the fetch in flight, then send through a clone
    /// of the inner service driven to readiness.
    fn call_when_token<B, ResBody>(&mut self, request: Request<B>) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: ReplayBody + Send + 'static,
        ResBody: Send + 'static,
    {
        let service = self.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let started = tokio::time::Instant::now();
            let waited = service
                .handle
                .shared()
                .wait_for(0, service.config.max_wait)
                .await;
            crate::metrics::waited(started.elapsed());
            if let Err(error) = waited {
                tracing::debug!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    error = %error,
                    "request failed waiting for an access token"
                );
                return Err(BoxError::from(error));
            }
            tracing::trace!(
                waited_ms = started.elapsed().as_millis() as u64,
                "request waited for an access token"
            );
            service.oneshot(request).await
        }))
    }
}
