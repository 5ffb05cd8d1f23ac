//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, with the `metrics` feature.
//! Without it these functions compile to nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `tower_client_credentials_token_fetches_total` | counter | `outcome`: `success`, `transient_error`, `permanent_error` | token requests |
//! | `tower_client_credentials_token_fetch_duration_seconds` | histogram | `outcome` | how long each token request took |
//! | `tower_client_credentials_token_wait_seconds` | histogram | | how long requests waited for a token (only those that waited) |
//! | `tower_client_credentials_unauthorized_retries_total` | counter | | requests retried after a 401 / `UNAUTHENTICATED` |
//! | `tower_client_credentials_token_expires_in_seconds` | gauge | | seconds until the current token expires; 0 without one (updated at least every 30 s) |

use std::time::Duration;

/// The `outcome` label of a fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Success,
    TransientError,
    PermanentError,
}

impl Outcome {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::TransientError => "transient_error",
            Self::PermanentError => "permanent_error",
        }
    }
}

/// A token request finished.
#[inline]
pub(crate) fn fetch(outcome: Outcome, duration: Duration) {
    #[cfg(feature = "metrics")]
    {
        let labels = [("outcome", outcome.label())];
        metrics::counter!("tower_client_credentials_token_fetches_total", &labels).increment(1);
        metrics::histogram!(
            "tower_client_credentials_token_fetch_duration_seconds",
            &labels
        )
        .record(duration.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (outcome, duration);
}

/// A request waited `duration` for a token.
#[inline]
pub(crate) fn waited(duration: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("tower_client_credentials_token_wait_seconds")
        .record(duration.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = duration;
}

/// A request is retried after an unauthorized response.
#[inline]
pub(crate) fn retried() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_client_credentials_unauthorized_retries_total").increment(1);
}

/// The current token expires in `remaining` (zero: no token).
#[inline]
pub(crate) fn expires_in(remaining: Duration) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tower_client_credentials_token_expires_in_seconds")
        .set(remaining.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = remaining;
}
