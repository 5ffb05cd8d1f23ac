//! When to refresh and how long to back off: pure functions of the configuration, a token and
//! a random draw, so they can be tested without a clock.

use std::time::Duration;

use crate::error::TokenError;

/// The longest the refresher waits between two attempts, whatever `Retry-After` says.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Timing knobs of the refresher. Defaults are documented on the builder.
#[derive(Debug, Clone)]
pub(crate) struct RefreshPolicy {
    /// Refresh at most this long before expiry …
    pub(crate) refresh_before: Duration,
    /// … or once this fraction of the lifetime has passed, whichever comes later.
    pub(crate) refresh_ratio: f64,
    /// The refresh margin is stretched by up to this fraction, at random.
    pub(crate) jitter: f64,
    /// First delay after a transient failure; doubles with each further failure.
    pub(crate) backoff_base: Duration,
    /// Cap of the transient backoff.
    pub(crate) backoff_max: Duration,
    /// Delay after a permanent failure.
    pub(crate) permanent_retry: Duration,
    /// First delay of the refusal backoff: how long the replacement of the second fresh token
    /// refused in a row (none accepted) waits; doubles with each further one.
    pub(crate) refusal_backoff: Duration,
    /// Cap of the refusal backoff.
    pub(crate) refusal_backoff_max: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_before: Duration::from_secs(60),
            refresh_ratio: 0.8,
            jitter: 0.1,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            permanent_retry: Duration::from_secs(60),
            refusal_backoff: Duration::from_secs(5),
            refusal_backoff_max: Duration::from_secs(300),
        }
    }
}

impl RefreshPolicy {
    /// How long after receipt a token of `lifetime` is refreshed. `draw` is uniform in `[0, 1)`.
    ///
    /// The margin before expiry is the smaller of `refresh_before` and `(1 - refresh_ratio)` of
    /// the lifetime, so a 5-second token is refreshed at about 4 s and a 24-hour one about a
    /// minute early; jitter makes the margin up to `jitter` larger.
    pub(crate) fn refresh_after(&self, lifetime: Duration, draw: f64) -> Duration {
        let margin = self
            .refresh_before
            .min(lifetime.mul_f64(1.0 - self.refresh_ratio));
        let margin = margin.mul_f64(1.0 + self.jitter * draw);
        lifetime.saturating_sub(margin)
    }

    /// [`latest_margin`](Self::latest_margin) as a shareable function, for the shared cache.
    #[cfg(feature = "redis")]
    pub(crate) fn latest_margin_fn(
        &self,
    ) -> std::sync::Arc<dyn Fn(Duration) -> Duration + Send + Sync> {
        let policy = self.clone();
        std::sync::Arc::new(move |lifetime| policy.latest_margin(lifetime))
    }

    /// The largest refresh margin a token of `lifetime` gets, jitter included: a token with
    /// less left than this is due for refresh on every replica.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn latest_margin(&self, lifetime: Duration) -> Duration {
        lifetime.saturating_sub(self.refresh_after(lifetime, 1.0))
    }

    /// The delay before the next attempt after `failures` consecutive failures, the last being
    /// `error`. `draw` is uniform in `[0, 1)`.
    pub(crate) fn retry_delay(&self, failures: u32, error: &TokenError, draw: f64) -> Duration {
        let base = if error.is_transient() {
            let exponent = failures.saturating_sub(1).min(20);
            let full = self
                .backoff_base
                .saturating_mul(1 << exponent)
                .min(self.backoff_max);
            // "Equal jitter": between half and all of the exponential delay.
            full.mul_f64(0.5 + 0.5 * draw)
        } else {
            self.permanent_retry.mul_f64(1.0 - 0.2 * draw)
        };
        base.max(error.retry_after().unwrap_or_default())
            .min(MAX_RETRY_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn http(status: u16, retry_after: Option<u64>) -> TokenError {
        TokenError::Http {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: None,
            excerpt: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn refresh_points() {
        let policy = RefreshPolicy::default();
        let secs = Duration::from_secs;
        assert_eq!(policy.refresh_after(secs(5), 0.0), secs(4));
        assert_eq!(policy.refresh_after(secs(86_400), 0.0), secs(86_340));
        assert_eq!(policy.refresh_after(secs(3600), 0.0), secs(3540));
        // Jitter only ever makes the refresh earlier, by at most 10 % of the margin.
        let jittered = policy.refresh_after(secs(5), 0.999);
        assert!(
            jittered < secs(4) && jittered >= Duration::from_millis(3_890),
            "{jittered:?}"
        );
        let jittered = policy.refresh_after(secs(86_400), 0.999);
        assert!(jittered >= secs(86_334), "{jittered:?}");
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let policy = RefreshPolicy::default();
        let error = http(503, None);
        let delays: Vec<_> = (1..=8)
            .map(|n| policy.retry_delay(n, &error, 0.999))
            .collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert!(delays[0] <= Duration::from_millis(500));
        assert_eq!(policy.retry_delay(30, &error, 0.0), Duration::from_secs(15));
        assert!(policy.retry_delay(30, &error, 0.999) <= Duration::from_secs(30));
        assert_eq!(
            policy.retry_delay(1, &http(503, Some(2)), 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.retry_delay(1, &http(429, Some(7200)), 0.0),
            MAX_RETRY_DELAY
        );
        // Permanent failures are retried slowly.
        let permanent = TokenError::BodyTooLarge { limit: 1 };
        assert!(policy.retry_delay(1, &permanent, 0.5) >= Duration::from_secs(48));
    }
}
