//! The layer's settings and its default rule for "unauthorized".

use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, StatusCode};

use crate::refresh::TokenHandle;

/// A user's rule for "the token was refused".
pub(crate) type UnauthorizedFn = dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync;

/// Per-layer settings, cloned into every service (and into a request's retry state).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) retry: bool,
    pub(crate) replay_limit: usize,
    pub(crate) max_wait: Duration,
    /// `None` is [`default_unauthorized`]: no reference count to bump when the config is
    /// cloned per request. A user's rule is boxed once, when it is set.
    pub(crate) unauthorized_if: Option<Arc<UnauthorizedFn>>,
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
            unauthorized_if: None,
        }
    }

    /// Whether a response with this status and these headers refuses the token.
    pub(crate) fn is_unauthorized(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        match &self.unauthorized_if {
            None => default_unauthorized(status, headers),
            Some(rule) => rule(status, headers),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("retry", &self.retry)
            .field("replay_limit", &self.replay_limit)
            .field("max_wait", &self.max_wait)
            .field("custom_unauthorized_if", &self.unauthorized_if.is_some())
            .finish()
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The layer's default rule for "the token was refused": status 401, or a gRPC response with
/// `grpc-status: 16` (UNAUTHENTICATED) in its headers, as a server's auth interceptor sends it
/// (a trailers-only response). For a rule of your own that extends it:
///
/// ```
/// # fn f(tokens: tower_client_credentials::TokenHandle) {
/// use http::StatusCode;
/// use tower_client_credentials::{BearerAuthLayer, layer::default_unauthorized};
///
/// // This API answers 403 to an expired token.
/// let layer = BearerAuthLayer::new(tokens).unauthorized_if(|status, headers| {
///     status == StatusCode::FORBIDDEN || default_unauthorized(status, headers)
/// });
/// # }
/// ```
pub fn default_unauthorized(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        || headers
            .get(GRPC_STATUS)
            .is_some_and(|value| value.as_bytes() == b"16")
}
