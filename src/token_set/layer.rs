use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderMap, StatusCode};
use tower_layer::Layer;

use super::{TokenSet, TokenSetAuth};
use crate::layer::{Config, Origin, ReplayBodies};

/// Applies [`TokenSetAuth`] to a service: each request gets the token of the
/// [`TokenKey`](super::TokenKey) its route picks, or none. See the
/// [module documentation](super). `P` is the [replay policy](crate::ReplayPolicy) for request
/// bodies.
#[derive(Clone)]
pub struct TokenSetLayer<P = ReplayBodies> {
    set: TokenSet,
    config: Config,
    origins: Option<Arc<[Origin]>>,
    dpop_origin: Option<Arc<Origin>>,
    replay: P,
}

impl TokenSetLayer {
    /// A layer that authorizes requests with the tokens of `set`.
    pub fn new(set: TokenSet) -> Self {
        let config = Config::with_max_wait(set.max_wait());
        Self {
            set,
            config,
            origins: None,
            dpop_origin: None,
            replay: ReplayBodies,
        }
    }
}

impl<P> TokenSetLayer<P> {
    /// How request bodies are kept for the retry. Default: [`ReplayBodies`]. See
    /// [`BearerAuthLayer::replay_policy`](crate::BearerAuthLayer::replay_policy).
    pub fn replay_policy<Q>(self, policy: Q) -> TokenSetLayer<Q> {
        TokenSetLayer {
            set: self.set,
            config: self.config,
            origins: self.origins,
            dpop_origin: self.dpop_origin,
            replay: policy,
        }
    }

    /// Sends the tokens only to these origins (scheme, host, port), whatever key the route
    /// picks: requests to any other origin go out untouched, with no token. Default: every
    /// origin. See
    /// [`BearerAuthLayer::allow_origins`](crate::BearerAuthLayer::allow_origins).
    pub fn allow_origins(mut self, origins: impl IntoIterator<Item = Origin>) -> Self {
        self.origins = Some(origins.into_iter().collect());
        self
    }

    /// The origin in the `htu` of DPoP proofs for requests with a relative URI. Default: none.
    /// See [`BearerAuthLayer::dpop_origin`](crate::BearerAuthLayer::dpop_origin).
    pub fn dpop_origin(mut self, origin: Origin) -> Self {
        self.dpop_origin = Some(Arc::new(origin));
        self
    }

    /// Whether an unauthorized response is retried once with a new token of the same key.
    /// Default: `true`. See [`BearerAuthLayer::retry_unauthorized`](crate::BearerAuthLayer::retry_unauthorized).
    pub fn retry_unauthorized(mut self, retry: bool) -> Self {
        self.config.retry = retry;
        self
    }

    /// The most request-body bytes kept for a retry. Default: 64 KiB. See
    /// [`BearerAuthLayer::replay_limit`](crate::BearerAuthLayer::replay_limit).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.config.replay_limit = bytes;
        self
    }

    /// How long a request waits for its key's token when none is valid, and for the new
    /// token after a 401. Default: the builder's
    /// [`max_wait`](crate::ClientCredentialsBuilder::max_wait) (30 s unless set).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// Decides which responses mean "the token was refused". Default: status 401, or a
    /// `grpc-status: 16` (UNAUTHENTICATED) header. See
    /// [`BearerAuthLayer::unauthorized_if`](crate::BearerAuthLayer::unauthorized_if).
    pub fn unauthorized_if<F>(mut self, rule: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.config.unauthorized_if = Some(Arc::new(rule));
        self
    }
}

/// The replay policy is shown by its type name: a closure has no `Debug`.
impl<P> fmt::Debug for TokenSetLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSetLayer")
            .field("set", &self.set)
            .field("config", &self.config)
            .field("origins", &self.origins)
            .field("dpop_origin", &self.dpop_origin)
            .field("replay", &std::any::type_name::<P>())
            .finish()
    }
}

impl<S, P: Clone> Layer<S> for TokenSetLayer<P> {
    type Service = TokenSetAuth<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenSetAuth::from_parts(
            inner,
            self.set.clone(),
            self.config.clone(),
            self.origins.clone(),
            self.dpop_origin.clone(),
            self.replay.clone(),
        )
    }
}
