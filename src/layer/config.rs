//! The layer's settings and its default rule for "unauthorized".

use std::{fmt, time::Duration};

use http::{HeaderMap, HeaderName, StatusCode};

use crate::refresh::TokenHandle;

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
