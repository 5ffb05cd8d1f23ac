use std::{fmt, sync::Arc};

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
    crate::request_path::allow_origins_setter!();
    crate::request_path::dpop_origin_setter!();

    crate::request_path::config_setters!(config);
    crate::request_path::replay_limit_setter!(config);
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
