use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::TokenSet;
use crate::layer::{
    BearerAuth, Config, Error, Origin, ReplayBodies, ReplayPolicy, ResponseFuture, RetryService,
};

/// Middleware that authorizes each request with the token of the key its route picks.
///
/// Made by [`TokenSetLayer`](super::TokenSetLayer) or [`TokenSetAuth::new`]. Once the key is
/// chosen it behaves exactly like [`BearerAuth`] with that key's token: waiting for the token,
/// retrying once after a 401. See the [module documentation](super).
///
/// `P` is the [replay policy](crate::ReplayPolicy) for request bodies.
#[derive(Clone)]
pub struct TokenSetAuth<S, P = ReplayBodies> {
    inner: S,
    set: TokenSet,
    config: Config,
    origins: Option<Arc<[Origin]>>,
    dpop_origin: Option<Arc<Origin>>,
    replay: P,
    /// Shared by every key's requests: the inner service is the same whatever the key.
    retry_service: RetryService<S>,
}

impl<S> TokenSetAuth<S> {
    /// Wraps `inner`, authorizing its requests with the tokens of `set`.
    pub fn new(inner: S, set: TokenSet) -> Self {
        let config = Config::with_max_wait(set.max_wait());
        Self::from_parts(inner, set, config, None, None, ReplayBodies)
    }

    /// A [`TokenSetLayer`](super::TokenSetLayer) for this middleware.
    pub fn layer(set: TokenSet) -> super::TokenSetLayer {
        super::TokenSetLayer::new(set)
    }
}

impl<S, P> TokenSetAuth<S, P> {
    crate::request_path::allow_origins_setter!();
    crate::request_path::dpop_origin_setter!();

    crate::request_path::config_setters!(config);
    crate::request_path::replay_limit_setter!(config);
    pub(crate) fn from_parts(
        inner: S,
        set: TokenSet,
        config: Config,
        origins: Option<Arc<[Origin]>>,
        dpop_origin: Option<Arc<Origin>>,
        replay: P,
    ) -> Self {
        Self {
            inner,
            set,
            config,
            origins,
            dpop_origin,
            replay,
            retry_service: RetryService::new(),
        }
    }

    /// See [`TokenSetLayer::replay_policy`](super::TokenSetLayer::replay_policy).
    pub fn replay_policy<Q>(self, policy: Q) -> TokenSetAuth<S, Q> {
        TokenSetAuth {
            inner: self.inner,
            set: self.set,
            config: self.config,
            origins: self.origins,
            dpop_origin: self.dpop_origin,
            replay: policy,
            retry_service: self.retry_service,
        }
    }

    /// The token set.
    pub fn token_set(&self) -> &TokenSet {
        &self.set
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

impl<S: fmt::Debug, P> fmt::Debug for TokenSetAuth<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSetAuth")
            .field("inner", &self.inner)
            .field("set", &self.set)
            .field("config", &self.config)
            .field("origins", &self.origins)
            .field("dpop_origin", &self.dpop_origin)
            .field("replay", &std::any::type_name::<P>())
            .finish()
    }
}

/// The bounds are [`BearerAuth`]'s, for the same reasons (see its `Service` implementation);
/// `P: Clone` because each request's key gets its own copy.
impl<S, P, B, ResBody> Service<Request<B>> for TokenSetAuth<S, P>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let handle = match self.set.handle_for(&request) {
            Some(Ok(handle)) => handle,
            Some(Err(error)) => {
                return ResponseFuture::failed(Error::TokenKey(error));
            }
            None => {
                tracing::debug!(
                    origin = ?Origin::from_uri(request.uri()),
                    "no token route for the request; sending it without a token"
                );
                return ResponseFuture::direct(self.inner.call(request));
            }
        };
        // The service driven to readiness goes to the key's `BearerAuth`; a clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        BearerAuth::from_parts(
            inner,
            handle,
            self.config.clone(),
            self.origins.clone(),
            self.dpop_origin.clone(),
            self.replay.clone(),
            self.retry_service.clone(),
        )
        .call(request)
    }
}
