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
//! | `tower_client_credentials_shared_cache_refreshes_total` | counter | `outcome`: `hit`, `waited`, `lease_won`, `fallback` | refreshes through the shared cache (feature `redis`) |
//! | `tower_client_credentials_shared_cache_invalidations_total` | counter | `result`: `deleted`, `kept` | refused tokens deleted from the shared cache, or kept because it already held a newer one |
//! | `tower_client_credentials_shared_cache_invalid_values_total` | counter | | values in the shared cache that could not be used (malformed, wrong key) |

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

/// How a refresh through the shared cache went.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy)]
pub(crate) enum SharedCacheOutcome {
    /// A valid shared token was adopted at once.
    Hit,
    /// A shared token was adopted after waiting for the replica holding the lease.
    Waited,
    /// This replica took the lease and requested the token for all.
    LeaseWon,
    /// Redis was unavailable (or nothing was published in time): the replica requested its own
    /// token.
    Fallback,
}

/// A refresh went through the shared cache.
#[cfg(feature = "redis")]
#[inline]
pub(crate) fn shared_cache(outcome: SharedCacheOutcome) {
    #[cfg(feature = "metrics")]
    {
        let label = match outcome {
            SharedCacheOutcome::Hit => "hit",
            SharedCacheOutcome::Waited => "waited",
            SharedCacheOutcome::LeaseWon => "lease_won",
            SharedCacheOutcome::Fallback => "fallback",
        };
        metrics::counter!(
            "tower_client_credentials_shared_cache_refreshes_total",
            "outcome" => label
        )
        .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// A refused token was deleted from the shared cache, or kept there because it was no longer
/// the stored one.
#[cfg(feature = "redis")]
#[inline]
pub(crate) fn shared_cache_invalidation(deleted: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "tower_client_credentials_shared_cache_invalidations_total",
        "result" => if deleted { "deleted" } else { "kept" }
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = deleted;
}

/// A value in the shared cache could not be used.
#[cfg(feature = "redis")]
#[inline]
pub(crate) fn shared_cache_invalid_value() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_client_credentials_shared_cache_invalid_values_total").increment(1);
}
