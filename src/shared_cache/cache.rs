use std::{fmt, ops::RangeInclusive, sync::Arc, time::Duration};

use zeroize::Zeroizing;

use super::{
    guard::{Guarded, Outage},
    store::{AnyStore, TokenStore},
    value::{Codec, Sealing},
};
use crate::error::ConfigError;

/// The default key prefix.
const DEFAULT_PREFIX: &str = "tower-client-credentials:";

/// The longest lease timeout and outage backoff accepted.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A token cache shared by every replica configured with the same store and prefix: the
/// store (`S`, a [`TokenStore`]) and the options of the cache itself. Give it to
/// [`ClientCredentialsBuilder::shared_cache`](crate::ClientCredentialsBuilder::shared_cache).
///
/// [`RedisCache`](super::RedisCache) is this cache over Redis; [`SharedCache::with_store`] takes any
/// other store. Cloning is cheap: clones share the store and its connection. See the
/// [module documentation](super) for what happens on a refresh, and the security note.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_client_credentials::{ClientCredentials, RedisCache};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let cache = RedisCache::new("redis://127.0.0.1:6379/0")?
///     .prefix("orders-service:tokens:")
///     .encryption_key(1, [0x42; 32]); // load a real key from your secret store
/// let tokens = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
///     .shared_cache(cache)
///     .build()?
///     .start()
///     .await?;
/// # let _ = tokens;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedCache<S> {
    pub(super) store: S,
    pub(super) prefix: String,
    pub(super) lease_timeout: Duration,
    /// `None`: the default, 1 s or the lease timeout if that is shorter.
    poll_interval: Option<Duration>,
    timeout: Duration,
    outage_backoff: Duration,
    pub(super) codec: Codec,
    /// Why the store's options cannot be used, reported by `build()`.
    pub(super) store_error: Option<ConfigError>,
    /// Until when the store is bypassed after a failure, shared by the clones.
    outage: Outage,
}

/// A cache whose store is boxed: what the builders keep.
pub(crate) type AnyCache = SharedCache<AnyStore>;

impl<S: TokenStore> SharedCache<S> {
    /// A cache in `store`, with the default options.
    pub fn with_store(store: S) -> Self {
        Self {
            store,
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_timeout: Duration::from_secs(10),
            poll_interval: None,
            timeout: Duration::from_millis(500),
            outage_backoff: Duration::from_secs(5),
            codec: Codec { sealing: None },
            store_error: None,
            outage: Outage::default(),
        }
    }

    /// The cache with its store boxed.
    pub(crate) fn into_any(self) -> AnyCache {
        SharedCache {
            store: Arc::new(self.store),
            prefix: self.prefix,
            lease_timeout: self.lease_timeout,
            poll_interval: self.poll_interval,
            timeout: self.timeout,
            outage_backoff: self.outage_backoff,
            codec: self.codec,
            store_error: self.store_error,
            outage: self.outage,
        }
    }
}

impl<S> SharedCache<S> {
    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Prepended to every name this cache writes: the token keys (`<prefix>{<sha256 hex>}`),
    /// their leases (`…}:lease`) and channels (`…}:published`). Give each service, or each
    /// environment sharing a store, its own. Default: `tower-client-credentials:`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Seals stored tokens with AES-256-GCM under this 256-bit key (a random nonce per value;
    /// the key's `id` is stored with each value). Every replica must have the same key and
    /// id; a value sealed with another key, or stored in clear, is treated as a miss. Default:
    /// none: tokens are stored in clear.
    ///
    /// To rotate the key, give the new key a new id: replicas with the new key ignore the old
    /// values (one extra token request) and overwrite them.
    pub fn encryption_key(mut self, id: u8, key: [u8; 32]) -> Self {
        let key = Zeroizing::new(key);
        self.codec = Codec {
            sealing: Some(Sealing::new(id, &key)),
        };
        self
    }

    /// How long the lease of the replica that fetches the token for all lasts unless renewed.
    /// The holder renews it every third of this while its token request runs, so a slow
    /// token endpoint does not make a second replica fetch too; if the holder crashes,
    /// another replica fetches once this has passed. Default: 10 s; must not be zero, at
    /// most 1 day.
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }

    /// The fallback poll of a replica that did not get the lease. It is woken by the lease
    /// holder's publication and then reads the token once; it also looks for the token this
    /// often, in case a publication was lost (and to take over the lease of a holder that
    /// crashed). It waits at most twice the lease timeout plus the token request
    /// [`timeout`](crate::ClientCredentialsBuilder::timeout), then fetches on its own.
    /// Default: 1 s, or the lease timeout if that is shorter; must not be zero, at most the
    /// lease timeout.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }

    /// The fallback poll in effect: the one set, or the default.
    pub(super) fn effective_poll_interval(&self) -> Duration {
        self.poll_interval
            .unwrap_or(Duration::from_secs(1).min(self.lease_timeout))
    }

    /// The longest one store operation (connecting included) may take. After that the
    /// replica fetches its token on its own. Default: 500 ms; must not be zero, at most 1
    /// minute.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After the store failed or timed out, refreshes skip it for this long, then try again.
    /// Default: 5 s; at most 1 day.
    pub fn outage_backoff(mut self, backoff: Duration) -> Self {
        self.outage_backoff = backoff;
        self
    }

    /// Checks the options against their documented ranges.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let check = |name, value: Duration, allowed: RangeInclusive<Duration>, range: &str| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::InvalidTiming {
                    name,
                    reason: format!("must be {range}, not {value:?}"),
                })
            }
        };
        if let Some(error) = &self.store_error {
            return Err(error.clone());
        }
        let nonzero = Duration::from_nanos(1);
        check(
            "shared_cache.lease_timeout",
            self.lease_timeout,
            nonzero..=DAY,
            "greater than zero and at most 1 day",
        )?;
        check(
            "shared_cache.poll_interval",
            self.effective_poll_interval(),
            nonzero..=self.lease_timeout,
            "greater than zero and at most the lease timeout",
        )?;
        check(
            "shared_cache.timeout",
            self.timeout,
            nonzero..=Duration::from_secs(60),
            "greater than zero and at most 1 minute",
        )?;
        check(
            "shared_cache.outage_backoff",
            self.outage_backoff,
            Duration::ZERO..=DAY,
            "at most 1 day",
        )
    }
}

impl AnyCache {
    /// Checks the options; the store as a refresher uses it, shared with the clones.
    pub(crate) fn prepare(&self) -> Result<Arc<Guarded>, ConfigError> {
        self.check()?;
        Ok(Arc::new(Guarded::new(
            Arc::clone(&self.store),
            self.timeout,
            self.outage_backoff,
            Arc::clone(&self.outage),
        )))
    }
}

impl<S> fmt::Debug for SharedCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the store: a URL may hold a password.
        f.debug_struct("SharedCache")
            .field("prefix", &self.prefix)
            .field("encrypted", &self.codec.sealing.is_some())
            .field(
                "key_id",
                &self.codec.sealing.as_ref().map(|sealing| sealing.id()),
            )
            .field("lease_timeout", &self.lease_timeout)
            .field("poll_interval", &self.effective_poll_interval())
            .field("timeout", &self.timeout)
            .field("outage_backoff", &self.outage_backoff)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::shared_cache::MemoryStore;

    /// The option `cache` is refused for, or `None` when it is accepted.
    fn refused(cache: SharedCache<MemoryStore>) -> Option<&'static str> {
        crate::error::refused_option(cache.check())
    }

    #[test]
    fn options_are_accepted_at_their_limits_and_refused_past_them() {
        let cache = || SharedCache::with_store(MemoryStore::new());
        let nanos = Duration::from_nanos;
        let minute = Duration::from_secs(60);
        assert_eq!(refused(cache()), None);

        let lease = "shared_cache.lease_timeout";
        let short = cache().lease_timeout(nanos(1)).poll_interval(nanos(1));
        assert_eq!(refused(short), None);
        assert_eq!(refused(cache().lease_timeout(DAY).poll_interval(DAY)), None);
        for value in [Duration::ZERO, DAY + nanos(1), Duration::MAX] {
            assert_eq!(
                refused(cache().lease_timeout(value)),
                Some(lease),
                "{value:?}"
            );
        }

        let poll = "shared_cache.poll_interval";
        let lease_timeout = Duration::from_secs(10);
        let at_lease = cache()
            .lease_timeout(lease_timeout)
            .poll_interval(lease_timeout);
        assert_eq!(refused(at_lease), None);
        for value in [Duration::ZERO, lease_timeout + nanos(1), Duration::MAX] {
            let past = cache().lease_timeout(lease_timeout).poll_interval(value);
            assert_eq!(refused(past), Some(poll), "{value:?}");
        }

        let timeout = "shared_cache.timeout";
        assert_eq!(refused(cache().timeout(nanos(1))), None);
        assert_eq!(refused(cache().timeout(minute)), None);
        for value in [Duration::ZERO, minute + nanos(1), Duration::MAX] {
            assert_eq!(refused(cache().timeout(value)), Some(timeout), "{value:?}");
        }

        let backoff = "shared_cache.outage_backoff";
        assert_eq!(refused(cache().outage_backoff(Duration::ZERO)), None);
        assert_eq!(refused(cache().outage_backoff(DAY)), None);
        for value in [DAY + nanos(1), Duration::MAX] {
            assert_eq!(
                refused(cache().outage_backoff(value)),
                Some(backoff),
                "{value:?}"
            );
        }
    }
}
