//! [`BearerAuth`]: the service.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::{ArcSwapOption, Cache};
use http::{Request, Response};
use tower_service::Service;

use super::{
    Config, Error, Origin, ReplayBodies, ReplayPolicy,
    body::replay_in_place,
    future::ResponseFuture,
    retry::{DpopBase, Retry, RetryService, authorize},
};
use crate::{
    refresh::{Shared, TokenHandle},
    request_path,
    token::Token,
};

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
/// [`layer` module documentation](crate::layer) for what it does. `P` is the
/// [replay policy](super::ReplayPolicy) for request bodies.
#[derive(Clone)]
pub struct BearerAuth<S, P = ReplayBodies> {
    inner: S,
    cache: TokenCache,
    auth: Authorizer<P>,
    retry_service: RetryService<S>,
}

/// Everything but the inner service and the token cache: what a request needs to be sent.
#[derive(Clone)]
struct Authorizer<P> {
    handle: TokenHandle,
    config: Config,
    origins: Option<Arc<[Origin]>>,
    dpop_origin: Option<Arc<Origin>>,
    replay: P,
}

impl<S> BearerAuth<S> {
    /// Wraps `inner`, authorizing its requests with `handle`'s token.
    pub fn new(inner: S, handle: TokenHandle) -> Self {
        let config = Config::new(&handle);
        Self::from_parts(
            inner,
            handle,
            config,
            None,
            None,
            ReplayBodies,
            RetryService::new(),
        )
    }

    /// A [`BearerAuthLayer`](super::BearerAuthLayer) for this middleware.
    pub fn layer(handle: TokenHandle) -> super::BearerAuthLayer {
        super::BearerAuthLayer::new(handle)
    }
}

impl<S, P> BearerAuth<S, P> {
    crate::request_path::allow_origins_setter!(auth);
    crate::request_path::dpop_origin_setter!(auth);

    crate::request_path::config_setters!(auth.config);
    crate::request_path::replay_limit_setter!(auth.config);
    pub(crate) fn from_parts(
        inner: S,
        handle: TokenHandle,
        config: Config,
        origins: Option<Arc<[Origin]>>,
        dpop_origin: Option<Arc<Origin>>,
        replay: P,
        retry_service: RetryService<S>,
    ) -> Self {
        let cache = Cache::new(Store(handle.shared_arc()));
        Self {
            inner,
            cache,
            retry_service,
            auth: Authorizer {
                handle,
                config,
                origins,
                dpop_origin,
                replay,
            },
        }
    }

    /// See [`BearerAuthLayer::replay_policy`](super::BearerAuthLayer::replay_policy).
    pub fn replay_policy<Q>(self, policy: Q) -> BearerAuth<S, Q> {
        let Authorizer {
            handle,
            config,
            origins,
            dpop_origin,
            replay: _,
        } = self.auth;
        BearerAuth {
            inner: self.inner,
            cache: self.cache,
            retry_service: self.retry_service,
            auth: Authorizer {
                handle,
                config,
                origins,
                dpop_origin,
                replay: policy,
            },
        }
    }

    /// The token handle.
    pub fn handle(&self) -> &TokenHandle {
        &self.auth.handle
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service. Retries from then on are sent through clones
    /// of it as it is at the next request (not of the inner service as it was).
    pub fn get_mut(&mut self) -> &mut S {
        self.retry_service = RetryService::new();
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, P> fmt::Debug for BearerAuth<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("config", &self.auth.config)
            .field("origins", &self.auth.origins)
            .field("dpop_origin", &self.auth.dpop_origin)
            .field("replay", &std::any::type_name::<P>())
            .finish_non_exhaustive()
    }
}

/// Sends `$request` with `$token` through `$inner`, which `poll_ready` made ready; with
/// retries on (or a DPoP proof, whose answer may bring a nonce), keeps what a retry needs.
/// A macro, not a function: passed to a function, even one inlined, the request (256 bytes
/// for a `Request<Full<Bytes>>`) was copied into its argument on every request.
macro_rules! send {
    ($auth:expr, $inner:expr, $retry_service:expr, $request:ident, $token:expr) => {{
        let (auth, token) = (&$auth, $token);
        let dpop_base = auth.dpop_origin.as_deref();
        // With DPoP the response is looked at even without retries: it may bring a nonce.
        if auth.config.retry || token.ath.is_some() {
            // Inline here, not in a function taking the request: its argument was one more
            // copy of the request.
            let mut retry = auth.retry_state(&*$inner, $retry_service, &$request, token);
            match authorize(auth.handle.shared(), &mut $request, token, dpop_base) {
                Err(error) => ResponseFuture::failed(error),
                // Without retries (a DPoP request's answer is still looked at), no body to
                // keep.
                Ok(()) if !auth.config.retry => {
                    ResponseFuture::retryable($inner.call($request), retry)
                }
                Ok(()) => {
                    if let Some(replay) =
                        replay_in_place(&auth.replay, $request.body(), auth.config.replay_limit)
                    {
                        retry.set_replay(replay);
                        ResponseFuture::retryable($inner.call($request), retry)
                    } else {
                        // Not `Request::map`, which is not inlined: the head would move once
                        // more.
                        let (head, body) = $request.into_parts();
                        let (body, replay) = auth.replay.replay(body, auth.config.replay_limit);
                        retry.set_replay(replay);
                        ResponseFuture::retryable(
                            $inner.call(Request::from_parts(head, body)),
                            retry,
                        )
                    }
                }
            }
        } else {
            match authorize(auth.handle.shared(), &mut $request, token, dpop_base) {
                Ok(()) => ResponseFuture::direct($inner.call($request)),
                Err(error) => ResponseFuture::failed(error),
            }
        }
    }};
}

/// What each bound is for:
///
/// - `S: Clone`: a request that waits for a token is sent through the service `poll_ready`
///   made ready, and a clone stays behind for the next request; a retry sends through a clone.
/// - `Send + 'static` on `S`, `S::Future`, `S::Error`, `B` and `ResBody`: those two rare paths
///   (waiting for a token, retrying after a refusal) are boxed `Send` futures, so that the
///   response future stays small and `Send` on the common path.
/// - `P: ReplayPolicy<B>`: how the body is kept for the retry. Every policy the crate ships
///   takes any body type (the default, [`ReplayBodies`], replays the ones it knows).
/// - Nothing of `S::Error`: it comes back as [`Error::Inner`], typed.
impl<S, P, B, ResBody> Service<Request<B>> for BearerAuth<S, P>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    P: ReplayPolicy<B> + Clone + Send + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Self {
            inner,
            cache,
            auth,
            retry_service,
        } = self;
        if !request_path::authorizes(auth.origins.as_deref(), request.uri()) {
            request_path::not_authorized(request.uri());
            return ResponseFuture::direct(inner.call(request));
        }
        match cache.load() {
            // The store holds a token until the refresher withdraws it; a starved refresher
            // must not let it out past its time: the timer marks it expired (no clock read).
            Some(token) if !token.is_marked_expired() => {
                send!(auth, inner, retry_service, request, token)
            }
            _ => self.call_when_token(request),
        }
    }
}

impl<P> Authorizer<P> {
    /// What a retry needs of `request`, taken before the token goes in: the head as the
    /// caller built it (the retry puts its own token in), the service to clone.
    #[inline(always)]
    fn retry_state<S, B>(
        &self,
        inner: &S,
        retry_service: &RetryService<S>,
        request: &Request<B>,
        token: &Token,
    ) -> Box<Retry<S, B>>
    where
        S: Clone,
    {
        Retry::new(
            request,
            retry_service.of(inner),
            self.handle.clone(),
            token.generation,
            self.config.clone(),
            if token.ath.is_some() {
                DpopBase::Proof(self.dpop_origin.clone())
            } else {
                DpopBase::None
            },
        )
    }
}

impl<S, P> BearerAuth<S, P> {
    /// The slow path: no valid token. The service that `poll_ready` made ready goes with the
    /// request (a clone, not yet ready, stays behind, as `tower::buffer` and tower-http's
    /// `FollowRedirect` do), so that a concurrency limit's permit or a buffer slot it reserved
    /// is the one used; the request waits for the fetch in flight, then is sent.
    #[cold]
    #[inline(never)]
    fn call_when_token<B, ResBody>(&mut self, request: Request<B>) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        P: ReplayPolicy<B> + Clone + Send + 'static,
        B: Send + 'static,
        ResBody: Send + 'static,
    {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let retry_service = self.retry_service.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let token = request_path::wait_for_token(auth.handle.shared(), auth.config.max_wait)
                .await
                .map_err(Error::TokenUnavailable)?;
            let mut request = request;
            send!(auth, &mut inner, &retry_service, request, &token).await
        }))
    }
}
