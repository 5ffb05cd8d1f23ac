//! The connection to Redis and the few commands the shared cache sends. The cache bounds each
//! by its timeout and decides what a failure means.

use std::{future::Future, time::Duration};

use super::{failure::Failure, publication, subscription::Subscriptions};
use redis::{
    Cmd, Pipeline, RedisFuture, Script, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster_async::ClusterConnection,
};

/// Deletes the lease only if it still holds the caller's random token, and then, when
/// `ARGV[2]` names a channel, wakes the replicas waiting on it (the holder gives up without
/// having stored a token: one of them takes the lease).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    if ARGV[2] ~= '' then
        redis.call('PUBLISH', ARGV[2], '')
    end
    return 1
end
return 0
";

/// Extends the lease by `ARGV[2]` milliseconds only if it still holds the caller's random
/// token: a holder whose lease expired and was taken by another replica does not take it back.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the shared token only if the stored value is still the one whose SHA-1 the caller
/// holds, so that a replica with a stale view never deletes a newer token.
const COMPARE_AND_DELETE: &str = r"
local value = redis.call('GET', KEYS[1])
if value and redis.sha1hex(value) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// Installs the crate's rustls provider as the process default when the application installed
/// none: the `redis` crate builds its TLS configuration with the process default, and rustls
/// cannot pick one by itself when several are compiled in.
pub(crate) fn ensure_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one first; either is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// Where a cache's Redis is.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server.
    Single(Box<redis::Client>),
    /// A Redis Cluster, and a plain client of each node given, for pub/sub: a `PUBLISH` on any
    /// node reaches the subscribers of every node, so one subscription on any node that
    /// answers is enough.
    Cluster(Box<redis::cluster::ClusterClient>, Vec<redis::Client>),
}

impl Target {
    /// The clients pub/sub may use, in the order to try them: the server, or every node.
    pub(crate) fn pubsub_clients(&self) -> Vec<redis::Client> {
        match self {
            Self::Single(client) => vec![(**client).clone()],
            Self::Cluster(_, nodes) => nodes.clone(),
        }
    }

    /// Whether the connections use TLS (`rediss://`).
    pub(crate) fn tls(&self) -> bool {
        self.pubsub_clients().iter().any(|client| {
            matches!(
                client.get_connection_info().addr(),
                redis::ConnectionAddr::TcpTls { .. }
            )
        })
    }
}

/// A connection to the server or the cluster; cloning shares it.
#[derive(Clone)]
enum Link {
    /// Reconnects by itself.
    Single(ConnectionManager),
    /// Follows the cluster's slots and reconnects to its nodes by itself.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The connection shared by the clones of one [`RedisStore`](super::RedisStore).
pub(crate) struct Connection {
    target: Target,
    /// Made on first use, from within the runtime (it spawns tasks); it reconnects by itself.
    link: tokio::sync::OnceCell<Link>,
    release: Script,
    renew: Script,
    compare_and_delete: Script,
    /// The pub/sub connection that wakes the waiters of this process.
    pub(crate) subscriptions: Subscriptions,
}

/// How long connecting to a node may take; the cache bounds every command by its own timeout.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

impl Connection {
    pub(crate) fn new(target: Target) -> Self {
        Self {
            subscriptions: Subscriptions::new(target.pubsub_clients()),
            target,
            link: tokio::sync::OnceCell::new(),
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
        }
    }

    /// The connection, made on first use. A cluster connection that cannot be made (no node
    /// answers) is tried again on the next use.
    async fn link(&self) -> Result<Link, Failure> {
        if let Some(link) = self.link.get() {
            return Ok(link.clone());
        }
        let link = match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECTION_TIMEOUT))
                    .set_response_timeout(Some(CONNECTION_TIMEOUT))
                    // The cache's outage backoff decides when to try again; the manager
                    // reconnects on the next command after a failure.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                Link::Single(ConnectionManager::new_lazy_with_config(
                    (**client).clone(),
                    config,
                )?)
            }
            Target::Cluster(client, _) => Link::Cluster(client.get_async_connection().await?),
        };
        Ok(self.link.get_or_init(|| async { link }).await.clone())
    }

    /// Runs `operation` on the connection (connecting first if needed).
    async fn run<T, F, Fut>(&self, operation: F) -> Result<T, Failure>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let link = self.link().await?;
        operation(link).await.map_err(Failure::from)
    }

    /// The value under `key` and its remaining time to live (`None` without a TTL), in one
    /// round trip of two commands. The TTL is read first: a value written in between is
    /// given the older, shorter TTL (or none), never a longer one than its own.
    pub(crate) async fn get_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<Duration>)>, Failure> {
        let (pttl, value): (i64, Option<Vec<u8>>) = self
            .run(|mut connection| async move {
                redis::pipe()
                    .cmd("PTTL")
                    .arg(key)
                    .cmd("GET")
                    .arg(key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        // PTTL: -1 no expiry, -2 no key.
        let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
        Ok(value.map(|value| (value, ttl)))
    }

    /// `SET key value NX PX ttl`: whether the key was set.
    pub(crate) async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Failure> {
        let reply: Option<String> = self
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(reply.is_some())
    }

    /// `SET key value PX ttl`, then `PUBLISH` of the value and its TTL on `channel` to wake
    /// the replicas waiting for it, in one round trip.
    pub(crate) async fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
    ) -> Result<(), Failure> {
        let message = publication::encode(value, ttl);
        let message = message.as_slice();
        self.run(|mut connection| async move {
            redis::pipe()
                .cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(millis(ttl))
                .ignore()
                .cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .ignore()
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    /// Deletes the lease `key` if it still holds `token`, then publishes on `wake` if given.
    /// Whether it did.
    pub(crate) async fn release(
        &self,
        key: &str,
        token: &str,
        wake: Option<&str>,
    ) -> Result<bool, Failure> {
        let script = &self.release;
        let deleted: i64 = self
            .run(|mut connection| async move {
                script
                    .key(key)
                    .arg(token)
                    .arg(wake.unwrap_or(""))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(deleted == 1)
    }

    /// Sets the TTL of the lease `key` to `ttl` if it still holds `token`. Whether it did.
    pub(crate) async fn renew(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, Failure> {
        let script = &self.renew;
        let renewed: i64 = self
            .run(|mut connection| async move {
                script
                    .key(key)
                    .arg(token)
                    .arg(millis(ttl))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    /// Deletes `key` if the SHA-1 of its value is `fingerprint`. Whether it did.
    pub(crate) async fn compare_and_delete(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<bool, Failure> {
        let script = &self.compare_and_delete;
        let deleted: i64 = self
            .run(|mut connection| async move {
                script
                    .key(key)
                    .arg(fingerprint)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(deleted == 1)
    }
}

/// A TTL in whole milliseconds, at least one (Redis refuses `PX 0`).
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The fingerprint `COMPARE_AND_DELETE` compares: the SHA-1 of a stored value, in hex, as Lua's
/// `redis.sha1hex` computes it. It identifies a value; it protects nothing.
pub(crate) fn fingerprint(value: &[u8]) -> String {
    sha1_smol::Sha1::from(value).digest().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_lua() {
        // `redis.sha1hex("abc")`.
        assert_eq!(
            fingerprint(b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
