use std::{fmt, ops::RangeInclusive, sync::Arc, time::Duration};

use zeroize::Zeroizing;

use super::{
    connection::{Connection, SharedConnection, Target},
    value::{Codec, Sealing},
};
use crate::error::ConfigError;

/// The default key prefix.
const DEFAULT_PREFIX: &str = "tower-client-credentials:";

/// The longest lease timeout and outage backoff accepted.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A token cache in Redis, shared by every replica configured with the same Redis and prefix.
/// Give it to [`ClientCredentialsBuilder::shared_cache`](crate::ClientCredentialsBuilder::shared_cache).
///
/// Cloning is cheap: clones share one connection (a `redis` connection manager, which
/// reconnects by itself), made on first use. See the [module documentation](super) for what
/// happens on a refresh, and the security note.
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
pub struct RedisCache {
    target: Target,
    pub(super) prefix: String,
    pub(super) lease_timeout: Duration,
    /// `None`: the default, 1 s or the lease timeout if that is shorter.
    poll_interval: Option<Duration>,
    timeout: Duration,
    outage_backoff: Duration,
    pub(super) codec: Codec,
    /// Why the TLS options cannot be used, reported by `build()`.
    tls_error: Option<String>,
    /// Not connected until first used. Replaced by the options it depends on.
    connection: SharedConnection,
}

impl RedisCache {
    /// A cache in the Redis server at `url` (`redis://[:password@]host[:port][/db]`,
    /// `rediss://…` for TLS, or `redis+unix:///path`). Nothing is connected until the first
    /// refresh.
    ///
    /// `rediss://` verifies the server's certificate with rustls against the system's roots
    /// (or [`tls_root_certificates`](Self::tls_root_certificates)) and its name against the
    /// URL's host. A certificate that does not verify is a Redis failure like any other: the
    /// refresh logs a `warn` that names it (`TLS: invalid peer certificate: …`) and fetches
    /// the token without Redis. If the application installed no rustls `CryptoProvider`, the
    /// crate installs its own (aws-lc-rs) as the process default when the cache is built.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidParameter`] (named `redis_url`) when the URL cannot be parsed.
    /// The message never repeats the URL, which may hold a password.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url).map_err(|error| ConfigError::InvalidParameter {
            name: "redis_url".into(),
            reason: format!("not a usable Redis URL ({:?})", error.kind()),
        })?;
        Ok(Self::with_target(Target::Single(client)))
    }

    /// A cache in the Redis Cluster that these nodes belong to (`redis://` or `rediss://`
    /// URLs; one is enough, the others are found from it). Nothing is connected until the
    /// first refresh.
    ///
    /// A token key and its lease share a hash tag (`<prefix>{<sha256 hex>}` and
    /// `…}:lease`), so they live in one slot, and every script touches that one slot. The
    /// waiting replicas of a process listen for publications on one connection to the first
    /// node (a `PUBLISH` reaches every node); while that node is away they fall back to the
    /// [`poll_interval`](Self::poll_interval).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidParameter`] (named `redis_url`) when there is no node, or a URL
    /// cannot be parsed. The message never repeats a URL.
    pub fn cluster<'a>(nodes: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigError> {
        let refused = |reason: String| ConfigError::InvalidParameter {
            name: "redis_url".into(),
            reason,
        };
        let nodes: Vec<&str> = nodes.into_iter().collect();
        let first = nodes
            .first()
            .ok_or_else(|| refused("a Redis Cluster needs at least one node".into()))?;
        let unusable = |error: redis::RedisError| {
            refused(format!(
                "not a usable Redis Cluster URL ({:?})",
                error.kind()
            ))
        };
        let pubsub = redis::Client::open(*first).map_err(unusable)?;
        let client = redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .build()
            .map_err(unusable)?;
        Ok(Self::with_target(Target::Cluster(Box::new(client), pubsub)))
    }

    fn with_target(target: Target) -> Self {
        let timeout = Duration::from_millis(500);
        let outage_backoff = Duration::from_secs(5);
        Self {
            connection: Arc::new(Connection::new(target.clone(), timeout, outage_backoff)),
            target,
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_timeout: Duration::from_secs(10),
            poll_interval: None,
            timeout,
            outage_backoff,
            codec: Codec { sealing: None },
            tls_error: None,
        }
    }

    fn reconnect(mut self) -> Self {
        self.connection = Arc::new(Connection::new(
            self.target.clone(),
            self.timeout,
            self.outage_backoff,
        ));
        self
    }

    /// Trusts these CA certificates (PEM, one or more) for `rediss://` instead of the system's
    /// roots: for a Redis whose certificate your own CA signed. Default: the system's roots.
    /// `build()` fails with [`ConfigError::Tls`] (naming `shared_cache.tls_root_certificates`)
    /// when the PEM holds no usable certificate or the URL is not `rediss://`.
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};

        let pem = pem.into();
        // The `redis` crate accepts a PEM without any certificate (then nothing verifies).
        if !CertificateDer::pem_slice_iter(&pem).any(|certificate| certificate.is_ok()) {
            self.tls_error = Some("no certificate in the PEM".into());
            return self;
        }
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        let Target::Single(client) = &self.target else {
            self.tls_error = Some("not supported for a Redis Cluster yet".into());
            return self;
        };
        match redis::Client::build_with_tls(client.get_connection_info().clone(), certificates) {
            Ok(client) => {
                self.target = Target::Single(client);
                self.tls_error = None;
            }
            Err(error) => {
                // About the PEM or the URL's scheme; never quotes the URL.
                self.tls_error = Some(format!("unusable: {error}"));
            }
        }
        self.reconnect()
    }

    /// Prepended to every key this cache writes: the token keys (`<prefix>{<sha256 hex>}`) and
    /// their leases (`…}:lease`). Give each service, or each environment sharing a Redis, its
    /// own. Default: `tower-client-credentials:`.
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
    /// holder's publication (Redis pub/sub) and then reads the token once; it also looks for
    /// the token this often, in case a publication was lost (and to take over the lease of a
    /// holder that crashed). It waits at most twice the lease timeout plus the token request
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

    /// The longest one Redis command (or connecting) may take. After that the replica fetches
    /// its token on its own. Default: 500 ms; must not be zero, at most 1 minute.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.reconnect()
    }

    /// After Redis failed or timed out, refreshes skip it for this long, then try again.
    /// Default: 5 s; at most 1 day.
    pub fn outage_backoff(mut self, backoff: Duration) -> Self {
        self.outage_backoff = backoff;
        self.reconnect()
    }

    /// Checks the options against their documented ranges; the connection of this cache,
    /// shared by its clones.
    pub(crate) fn prepare(&self) -> Result<SharedConnection, ConfigError> {
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
        if let Some(reason) = &self.tls_error {
            return Err(ConfigError::Tls {
                reason: format!("shared_cache.tls_root_certificates: {reason}"),
            });
        }
        if matches!(
            self.target.pubsub_client().get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ) {
            super::connection::ensure_tls_provider();
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
        )?;
        Ok(Arc::clone(&self.connection))
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisCache")
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

    /// The option `cache` is refused for, or `None` when it is accepted.
    fn refused(cache: RedisCache) -> Option<&'static str> {
        crate::error::refused_option(cache.prepare())
    }

    #[test]
    fn options_are_accepted_at_their_limits_and_refused_past_them() {
        let cache = || RedisCache::new("redis://127.0.0.1:1/").unwrap();
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

        for pem in [
            &b""[..],
            b"not a certificate",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            let rediss = RedisCache::new("rediss://127.0.0.1:1/").unwrap();
            match rediss.tls_root_certificates(pem).prepare() {
                Err(ConfigError::Tls { reason }) => {
                    assert!(reason.starts_with("shared_cache.tls_root_certificates: "));
                }
                other => panic!("{pem:?}: {:?}", other.map(|_| ())),
            }
        }

        // A cluster needs a node; it takes no root certificates yet.
        assert!(RedisCache::cluster([]).is_err());
        let cluster = RedisCache::cluster(["redis://127.0.0.1:1/", "redis://127.0.0.1:2/"]);
        assert!(cluster.as_ref().is_ok_and(|c| c.prepare().is_ok()));
        let pem = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            cluster.unwrap().tls_root_certificates(pem).prepare(),
            Err(ConfigError::Tls { .. })
        ));

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
