//! Why a Redis operation failed, in words that never quote a value read from Redis: shared by
//! the connection and the pub/sub subscriptions, and handed to the cache as a
//! [`StoreError`].

use std::{fmt, sync::Arc};

use crate::shared_cache::StoreError;

/// Why a Redis operation failed. Never holds a value read from Redis.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The client or the server reported an error.
    Redis {
        /// The error's kind and class, without its details (which may quote values).
        kind: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis { kind } => f.write_str(kind),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        StoreError::new(failure.to_string())
    }
}

impl From<redis::RedisError> for Failure {
    fn from(error: redis::RedisError) -> Self {
        // A TLS failure (an untrusted certificate, a name mismatch) says which: rustls's
        // errors name the problem, never a value read from Redis.
        if let Some(tls) = tls_error(&error) {
            return Self::Redis {
                kind: format!("TLS: {tls}"),
            };
        }
        let class = if error.is_timeout() {
            "timeout"
        } else if error.is_connection_refusal() {
            "connection refused"
        } else if error.is_connection_dropped() {
            "connection dropped"
        } else if error.is_io_error() {
            "i/o error"
        } else {
            "error"
        };
        Self::Redis {
            kind: format!("{class} ({:?})", error.kind()),
        }
    }
}

/// The rustls error under `error`, if it is one. The `redis` crate keeps the I/O error of a
/// failed handshake as an `Arc<dyn Error>`, and an I/O error's `source()` skips the error it
/// wraps: each is unwrapped by hand.
fn tls_error(error: &redis::RedisError) -> Option<&rustls::Error> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(mut current) = source {
        if let Some(shared) = current.downcast_ref::<Shared>() {
            current = &**shared;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            current = inner;
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        source = current.source();
    }
    None
}
