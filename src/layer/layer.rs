use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderMap, StatusCode};
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
    /// How request bodies are kept for the retry after a refusal. Default:
    /// [`ReplayBodies`], which asks the body type ([`ReplayBody`](super::ReplayBody)).
    /// [`NoReplay`](super::NoReplay) takes any body type and never retries; a closure
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

    /// Sends the token only to these origins (scheme, host, port). Requests to any other
    /// origin go out untouched: no token, and any `Authorization` header they carry is left
    /// alone. Default: every origin, as a client dedicated to one API expects; set this when
    /// the inner client can reach other hosts or follows redirects.
    ///
    /// ```
    /// # fn f(tokens: tower_client_credentials::TokenHandle) -> Result<(), tower_client_credentials::ConfigError> {
    /// use tower_client_credentials::{BearerAuthLayer, Origin};
    ///
    /// let layer = BearerAuthLayer::new(tokens).allow_origins([
    ///     "https://api.example.com".parse::<Origin>()?,
    ///     "https://files.example.com:8443".parse()?,
    /// ]);
    /// # Ok(()) }
    /// ```
    pub fn allow_origins(mut self, origins: impl IntoIterator<Item = Origin>) -> Self {
        self.origins = Some(origins.into_iter().collect());
        self
    }

    /// The origin in the `htu` of the DPoP proofs of requests whose URI is relative (a tonic
    /// channel's requests carry only the path; the channel adds its origin below this layer).
    /// Absolute URIs use their own origin. Default: none, and a relative request with a
    /// DPoP-bound token fails with [`DpopError::RelativeUri`](crate::DpopError::RelativeUri).
    /// Not needed for bearer tokens.
    pub fn dpop_origin(mut self, origin: Origin) -> Self {
        self.dpop_origin = Some(Arc::new(origin));
        self
    }

    /// Whether an unauthorized response is retried once with a new token. Default: `true`.
    ///
    /// Off, the request path copies nothing per request.
    pub fn retry_unauthorized(mut self, retry: bool) -> Self {
        self.config.retry = retry;
        self
    }

    /// The most request-body bytes kept for a retry; a larger body is sent once and its 401
    /// returned (the token is still refreshed). Default: 64 KiB.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.config.replay_limit = bytes;
        self
    }

    /// How long a request waits for a token when none is valid, and for the new token after a
    /// 401. Default: the handle's
    /// [`max_wait`](crate::ClientCredentialsBuilder::max_wait) (30 s unless set).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// Decides which responses mean "the token was refused", from their status and headers.
    /// Default: [`default_unauthorized`](super::default_unauthorized), status 401 or a
    /// `grpc-status: 16` (UNAUTHENTICATED) header.
    ///
    /// `rule` may capture what it needs (a per-API rule, a metrics handle): it is put behind
    /// an `Arc` once, here, and shared by every service and request of the layer. A plain `fn`
    /// works as before.
    ///
    /// ```
    /// # fn f(tokens: tower_client_credentials::TokenHandle) {
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// use http::StatusCode;
    /// use tower_client_credentials::BearerAuthLayer;
    ///
    /// let refusals = Arc::new(AtomicU64::new(0));
    /// let counted = Arc::clone(&refusals);
    /// let layer = BearerAuthLayer::new(tokens).unauthorized_if(move |status, _| {
    ///     let refused = status == StatusCode::UNAUTHORIZED;
    ///     if refused {
    ///         counted.fetch_add(1, Ordering::Relaxed);
    ///     }
    ///     refused
    /// });
    /// # }
    /// ```
    pub fn unauthorized_if<F>(mut self, rule: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.config.unauthorized_if = Some(Arc::new(rule));
        self
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
        )
    }
}
