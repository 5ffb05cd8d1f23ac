use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::{BearerAuth, Config, Origin, ReplayBodies};
use crate::refresh::TokenHandle;

/// Applies [`BearerAuth`] to a service. See the [`layer` module documentation](crate::layer) for what it does.
///
/// `P` is the [replay policy](super::ReplayPolicy) for request bodies, set with
/// [`replay_policy`](Self::replay_policy).
#[derive(Clone)]
pub struct BearerAuthLayer<P = ReplayBodies> {
    handle: TokenHandle,
    config: Config,
    origins: Option<Arc<[Origin]>>,
    dpop_origin: Option<Arc<Origin>>,
    replay: P,
}

impl BearerAuthLayer {
    /// A layer that authorizes requests with `handle`'s token.
    pub fn new(handle: TokenHandle) -> Self {
        let config = Config::new(&handle);
        Self {
            handle,
            config,
            origins: None,
            dpop_origin: None,
            replay: ReplayBodies,
        }
    }
}

impl<P> BearerAuthLayer<P> {
    crate::request_path::allow_origins_setter!();
    crate::request_path::dpop_origin_setter!();

    crate::request_path::config_setters!(config);
    crate::request_path::replay_limit_setter!(config);
    /// How request bodies are kept for the retry after a refusal. Default:
    /// [`ReplayBodies`], which replays the body types the crate knows and sends others once.
    /// [`NoReplay`](super::NoReplay) never retries; `MyBody::into_replay` uses a body type's
    /// own [`ReplayBody`](super::ReplayBody) implementation; a closure
    /// `Fn(B, usize) -> (B, Replay<B>)` decides for a body type of your own choosing. See
    /// [`ReplayPolicy`](super::ReplayPolicy).
    pub fn replay_policy<Q>(self, policy: Q) -> BearerAuthLayer<Q> {
        BearerAuthLayer {
            handle: self.handle,
            config: self.config,
            origins: self.origins,
            dpop_origin: self.dpop_origin,
            replay: policy,
        }
    }
}

/// The replay policy is shown by its type name: a closure has no `Debug`.
impl<P> fmt::Debug for BearerAuthLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("handle", &self.handle)
            .field("config", &self.config)
            .field("origins", &self.origins)
            .field("dpop_origin", &self.dpop_origin)
            .field("replay", &std::any::type_name::<P>())
            .finish()
    }
}

impl<S, P: Clone> Layer<S> for BearerAuthLayer<P> {
    type Service = BearerAuth<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth::from_parts(
            inner,
            self.handle.clone(),
            self.config.clone(),
            self.origins.clone(),
            self.dpop_origin.clone(),
            self.replay.clone(),
            super::retry::RetryService::new(),
        )
    }
}
