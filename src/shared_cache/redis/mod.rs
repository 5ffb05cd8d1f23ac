//! The Redis store: one server (`redis://`, `rediss://`, `redis+unix://`) or a Redis Cluster.
//!
//! A read is `PTTL` then `GET` in one round trip; the lease is `SET NX PX`, renewed and
//! released by Lua scripts that compare the holder first; a store is `SET PX` then `PUBLISH`
//! of the value and its TTL in one round trip; compare-and-delete is a Lua script that compares the SHA-1 of the stored
//! value. The waiters of a process share one pub/sub connection.

mod connection;
mod failure;
pub(crate) mod publication;
mod subscription;

use std::{sync::Arc, time::Duration};

use self::connection::{Connection, Target};
use super::{Entry, Listener, SharedCache, StoreError, TokenStore};
use crate::error::ConfigError;

/// A token cache in Redis, shared by every replica configured with the same Redis and prefix:
/// a [`SharedCache`] over a [`RedisStore`], with the constructors below and the options of
/// every shared cache.
pub type RedisCache = SharedCache<RedisStore>;

/// The Redis [`TokenStore`]: a server or a cluster, and one connection (a `redis` connection
/// manager, or a cluster connection, which reconnect by themselves) made on first use and
/// shared by the clones. Made by [`RedisCache::new`] and [`RedisCache::cluster`].
#[derive(Clone)]
pub struct RedisStore {
    target: Target,
    connection: Arc<Connection>,
}

impl RedisStore {
    fn new(target: Target) -> Self {
        if target.tls() {
            connection::ensure_tls_provider();
        }
        Self {
            connection: Arc::new(Connection::new(target.clone())),
            target,
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn refused(reason: String) -> ConfigError {
    ConfigError::InvalidParameter {
        name: "redis_url".into(),
        reason,
    }
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
    /// crate installs its own (aws-lc-rs) as the process default when the cache is made.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidParameter`] (named `redis_url`) when the URL cannot be parsed.
    /// The message never repeats the URL, which may hold a password.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url)
            .map_err(|error| refused(format!("not a usable Redis URL ({:?})", error.kind())))?;
        Ok(SharedCache::with_store(RedisStore::new(Target::Single(
            Box::new(client),
        ))))
    }

    /// A cache in the Redis Cluster that these nodes belong to (`redis://` or `rediss://`
    /// URLs; one is enough, the others are found from it). Nothing is connected until the
    /// first refresh.
    ///
    /// A token key and its lease share a hash tag (`<prefix>{<sha256 hex>}` and
    /// `…}:lease`), so they live in one slot, and every script touches that one slot. The
    /// waiting replicas of a process listen for publications on one pub/sub connection to
    /// one of these nodes: a `PUBLISH` in a Redis Cluster reaches the subscribers of every
    /// node, so any node that answers will do. It is the first at first; when the node of
    /// the connection goes away, the waiters listen again on the next node given (and fall
    /// back to the [`poll_interval`](Self::poll_interval) meanwhile). With `rediss://`, every
    /// node is reached over TLS, verified as for [`new`](Self::new).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidParameter`] (named `redis_url`) when there is no node, or a URL
    /// cannot be parsed. The message never repeats a URL.
    pub fn cluster<'a>(nodes: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigError> {
        let unusable = |error: redis::RedisError| {
            refused(format!(
                "not a usable Redis Cluster URL ({:?})",
                error.kind()
            ))
        };
        let nodes = nodes
            .into_iter()
            .map(redis::Client::open)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unusable)?;
        if nodes.is_empty() {
            return Err(refused("a Redis Cluster needs at least one node".into()));
        }
        let target = cluster_target(&nodes, None).map_err(unusable)?;
        Ok(SharedCache::with_store(RedisStore::new(target)))
    }

    /// Trusts these CA certificates (PEM, one or more) for `rediss://` instead of the system's
    /// roots: for a Redis whose certificate your own CA signed. Default: the system's roots.
    /// `build()` fails with [`ConfigError::Tls`] (naming `shared_cache.tls_root_certificates`)
    /// when the PEM holds no usable certificate or the URL is not `rediss://`.
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};

        let tls_error = |reason: &str| {
            Some(ConfigError::Tls {
                reason: format!("shared_cache.tls_root_certificates: {reason}"),
            })
        };
        let pem = pem.into();
        // The `redis` crate accepts a PEM without any certificate (then nothing verifies).
        if !CertificateDer::pem_slice_iter(&pem).any(|certificate| certificate.is_ok()) {
            self.store_error = tls_error("no certificate in the PEM");
            return self;
        }
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        let target = match &self.store.target {
            Target::Single(client) => {
                redis::Client::build_with_tls(client.get_connection_info().clone(), certificates)
                    .map(|client| Target::Single(Box::new(client)))
            }
            Target::Cluster(..) if !self.store.target.tls() => {
                self.store_error = tls_error("the node URLs are not `rediss://`");
                return self;
            }
            Target::Cluster(_, nodes) => cluster_target(nodes, Some(certificates)),
        };
        match target {
            Ok(target) => {
                self.store = RedisStore::new(target);
                self.store_error = None;
            }
            Err(error) => {
                // About the PEM or the URL's scheme; never quotes the URL.
                self.store_error = tls_error(&format!("unusable: {error}"));
            }
        }
        self
    }
}

/// A cluster of these nodes, trusting `certificates` (for `rediss://`) if given: the cluster
/// client, and a client of each node for pub/sub.
fn cluster_target(
    nodes: &[redis::Client],
    certificates: Option<redis::TlsCertificates>,
) -> redis::RedisResult<Target> {
    let infos: Vec<redis::ConnectionInfo> = nodes
        .iter()
        .map(|node| node.get_connection_info().clone())
        .collect();
    let mut builder = redis::cluster::ClusterClient::builder(infos.clone());
    let pubsub = match certificates {
        Some(certificates) => {
            builder = builder.certs(certificates.clone());
            infos
                .into_iter()
                .map(|info| redis::Client::build_with_tls(info, certificates.clone()))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => nodes.to_vec(),
    };
    Ok(Target::Cluster(Box::new(builder.build()?), pubsub))
}

impl TokenStore for RedisStore {
    async fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let read = self.connection.get_with_ttl(key).await?;
        Ok(read.map(|(value, time_to_live)| Entry {
            value,
            time_to_live,
        }))
    }

    async fn take_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.connection.set_if_absent(lease, holder, ttl).await?)
    }

    async fn renew_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.connection.renew(lease, holder, ttl).await?)
    }

    async fn release_lease(
        &self,
        lease: &str,
        holder: &str,
        wake: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(self.connection.release(lease, holder, wake).await?)
    }

    async fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
    ) -> Result<(), StoreError> {
        Ok(self.connection.store(key, value, ttl, channel).await?)
    }

    async fn compare_and_delete(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let fingerprint = connection::fingerprint(value);
        Ok(self
            .connection
            .compare_and_delete(key, &fingerprint)
            .await?)
    }

    fn listening(&self, channel: &str) -> Option<Listener> {
        self.connection.subscriptions.listening(channel)
    }

    async fn listen(&self, channel: &str) -> Result<Listener, StoreError> {
        Ok(self.connection.subscriptions.subscribe(channel).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_checked_at_build() {
        for pem in [
            &b""[..],
            b"not a certificate",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            let rediss = RedisCache::new("rediss://127.0.0.1:1/").unwrap();
            match rediss.tls_root_certificates(pem).check() {
                Err(ConfigError::Tls { reason }) => {
                    assert!(reason.starts_with("shared_cache.tls_root_certificates: "));
                }
                other => panic!("{pem:?}: {:?}", other.map(|_| ())),
            }
        }

        // A cluster needs a node; it takes no root certificates yet.
        assert!(RedisCache::cluster([]).is_err());
        let cluster = RedisCache::cluster(["redis://127.0.0.1:1/", "redis://127.0.0.1:2/"]);
        assert!(cluster.as_ref().is_ok_and(|c| c.check().is_ok()));
        let pem = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            cluster.unwrap().tls_root_certificates(pem).check(),
            Err(ConfigError::Tls { .. })
        ));
    }
}
