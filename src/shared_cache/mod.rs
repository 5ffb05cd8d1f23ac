//! One token for the whole fleet: a token cache shared through Redis (or another
//! [`TokenStore`]) by the replicas of a service (feature `redis`).
//!
//! When a service runs as 50 replicas and each fetches its own token, the authorization server
//! sees 50 times the token requests, and providers meter them (Auth0 bills and throttles
//! machine-to-machine tokens; others answer 429). With a [`RedisCache`], the replicas share one
//! token:
//!
//! ```no_run
//! use tower_client_credentials::{ClientCredentials, RedisCache};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tokens = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
//!     .scopes(["orders:read"])
//!     .shared_cache(RedisCache::new("redis://127.0.0.1:6379")?.prefix("orders-service:"))
//!     .build()?
//!     .start()
//!     .await?;
//! # let _ = tokens;
//! # Ok(())
//! # }
//! ```
//!
//! # What changes, and what does not
//!
//! Requests do not touch Redis. Each replica still serves every request from its own token
//! store (an `ArcSwap`, no lock), exactly as without the cache. Only a refresh, which happens
//! once per token lifetime, goes through Redis:
//!
//! 1. **Read** the shared token and its remaining time to live (`PTTL`, then `GET`, in one
//!    round trip: a value replaced in between gets the older, shorter TTL, never a longer one).
//!    If it stays valid for longer than the refresh margin, **adopt** it with its remaining
//!    lifetime: its expiry counts from when the replica that fetched it asked for it, and the
//!    remaining time is the key's TTL, so no clock skew between replicas matters.
//! 2. Otherwise take a short **lease** (`SET <key>:lease <random> NX PX <lease_timeout>`). The
//!    replica that gets it requests a token from the authorization server, **publishes** it
//!    (`SET <key> <value> PX <remaining lifetime>`, then `PUBLISH`), and releases the lease with a Lua script
//!    that deletes it only if it still holds the replica's random value. While its token
//!    request runs, it **renews** the lease every third of the lease timeout (`PEXPIRE`, by a
//!    Lua script with the same check), so a token endpoint slower than the lease timeout does
//!    not make a second replica fetch.
//! 3. Replicas that did not get the lease **wait** for the publication instead of requesting a
//!    token: the holder `PUBLISH`es on the key's channel (`<key>:published`) when it stores
//!    the token, or when it releases the lease without one, and every waiter of the process
//!    wakes on one shared pub/sub connection (made when the process first waits). The
//!    publication carries the value just stored and its time to live, so a waiter adopts it
//!    without reading the key again (a publication without a value, a lease given up, makes
//!    it read and try for the lease). A waiting replica thus sends three commands per refresh
//!    whatever the token endpoint's latency (read, lease; a read is `PTTL` and `GET`). In
//!    case a publication is lost, waiters also look every
//!    [`poll_interval`](RedisCache::poll_interval) (1 s). If the lease holder crashes, its
//!    lease is no longer renewed and expires after the lease timeout, and another replica
//!    takes it. A replica that sees nothing published within twice the lease timeout plus
//!    the token request
//!    [`timeout`](crate::ClientCredentialsBuilder::timeout) requests its own.
//!
//! So 20 replicas starting at once make one token request, and 20 replicas running for an
//! hour make about one token request per token lifetime instead of twenty (BENCHMARKS.md).
//!
//! # When Redis is down or slow
//!
//! Every Redis command is bounded by [`timeout`](RedisCache::timeout) (500 ms). When one fails
//! or times out, the replica logs a `warn` (once per outage; no values, no URL), requests its
//! token on its own, and skips Redis for [`outage_backoff`](RedisCache::outage_backoff) (5 s).
//! The refresh after that tries Redis again; the connection reconnects by itself. Requests
//! never wait for Redis. A replica that still holds a usable token (Redis went away at its
//! refresh point) keeps serving it and first waits a random part, up to three quarters, of
//! what is left of it: the replicas that held the same shared token then spread their own
//! token requests over its margin instead of sending them all at once. A token refused with
//! 401, or none at all, is fetched at once.
//!
//! # TLS
//!
//! A `rediss://` URL (one server, or every node of a cluster) connects with rustls and
//! verifies the server's certificate (system roots, or
//! [`tls_root_certificates`](RedisCache::tls_root_certificates)) and name. A certificate that
//! does not verify is a failure like the above: a `warn` that names it, and the token is
//! fetched without Redis.
//!
//! # A token refused with 401
//!
//! When an API refuses a shared token, the replica that saw the 401 deletes it from Redis, but
//! only if Redis still holds that very token: a Lua script compares the SHA-1 of the stored
//! value with that of the value the replica adopted or published. A replica with a stale view
//! therefore never deletes a token another replica has just fetched; it adopts that one. All
//! replicas that saw the 401 end up with the one new token. A refresh never adopts the token it
//! is replacing (a refresh is due only when that token has less left than any replica adopts,
//! so meeting it again means a 401 raced with the refresh): it fetches a new one instead.
//!
//! The refresher learns which token was refused without the request path changing: a 401
//! withdraws the token's generation as before, and the refresher, seeing that its latest token
//! was withdrawn, hands the shared cache the fingerprint of the value that token came from.
//!
//! # The key
//!
//! The key is the [prefix](RedisCache::prefix) followed by the SHA-256, in hex and in braces
//! (a Redis Cluster hash tag: the lease and the channel share it, so one slot holds them), of
//! everything
//! that makes one token different from another: the token endpoint, client id, authentication
//! method, scopes, audience, resources and extra parameters. Never the client secret or key.
//! Clients configured alike share one token; any difference gives another key. Each key of a
//! [`TokenSet`](crate::TokenSet) has its own.
//!
//! # Security
//!
//! **Whoever can read the Redis key can use the token** until it expires: it is a bearer
//! token. Only the access token is stored, with its type, lifetime, expiry and scope; never a
//! client secret or key. The same value goes out on the key's pub/sub channel when it is
//! stored: whoever may `SUBSCRIBE` to it can read it there too. Restrict access to Redis (ACLs, a private network, TLS where it
//! leaves the host) as you would the tokens themselves. For defence in depth, set an
//! [`encryption_key`](RedisCache::encryption_key): values are then sealed with AES-256-GCM (a
//! random nonce per value, the key name as associated data), and a reader of Redis without the
//! key learns nothing. A value sealed with another key, tampered with, or malformed is a miss
//! with a `warn`, never a panic; the replica then fetches a token and overwrites it.
//!
//! # Other stores
//!
//! The cache's logic (adopt, lease, wait, fall back with jitter, seal values) is written once,
//! over the [`TokenStore`] trait: read a value with its remaining lifetime, take, renew and
//! release a lease, store and publish, compare-and-delete, listen for publications. Redis
//! ([`RedisStore`], behind [`RedisCache`]) is one implementation; [`MemoryStore`] is another,
//! for the handles of one process and for tests. A store for PostgreSQL or memcached is one
//! type that implements the trait, given to [`SharedCache::with_store`]; the trait's
//! documentation says what each method must guarantee.
//!
//! ```
//! use tower_client_credentials::{
//!     ClientCredentials,
//!     shared_cache::{MemoryStore, SharedCache},
//! };
//!
//! # fn run() -> Result<(), tower_client_credentials::ConfigError> {
//! let cache = SharedCache::with_store(MemoryStore::new());
//! let tokens = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
//!     .shared_cache(cache)
//!     .build()?;
//! # let _ = tokens;
//! # Ok(())
//! # }
//! ```
//!
//! # Observability
//!
//! `debug` events tell each adoption, lease and wait; a `warn` tells each outage and each
//! unusable value. With the `metrics` feature, `tower_client_credentials_shared_cache_refreshes_total`
//! counts refreshes by `outcome` (`hit`, `waited`, `lease_won`, `fallback`), and two more
//! counters the invalidations and the unusable values (see the README).

mod cache;
mod guard;
mod key;
mod memory;
mod redis;
mod source;
mod store;
mod value;

pub(crate) use self::cache::AnyCache;
pub use self::{
    cache::SharedCache,
    memory::MemoryStore,
    redis::{RedisCache, RedisStore},
    store::{Entry, Listener, Published, StoreError, TokenStore},
};
pub(crate) use self::{key::KeyMaterial, source::SharedSource};
#[cfg(fuzzing)]
pub(crate) use self::{
    redis::publication,
    value::{Codec, Sealing, StoredToken},
};
