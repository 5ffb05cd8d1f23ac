//! The contract between the shared cache and the place it keeps the token: [`TokenStore`].
//!
//! The cache decides (adopt, lease, wait, fall back, seal values); a store only keeps bytes
//! under names, with expiry, and wakes the waiters of a name. Redis is the first store
//! ([`RedisStore`](super::RedisStore)); [`MemoryStore`](super::MemoryStore) is the second,
//! for one process and for tests.

use std::{borrow::Cow, fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};

/// Where the replicas keep their shared token: the few operations the
/// [shared cache](super) needs, each async and each failing with a [`StoreError`] that makes
/// the cache fall back to a token request of the replica's own.
///
/// The cache derives every name it passes from one token key `K`: the value lives under `K`,
/// the lease under `K:lease`, and publications go to the channel `K:published`. A store treats
/// names and values as opaque: values are the cache's sealed (or plain) records, which it
/// decodes itself, so a store never parses them.
///
/// # What each method must guarantee
///
/// - **Read your writes, per name.** Once [`store`](Self::store),
///   [`take_lease`](Self::take_lease), [`release_lease`](Self::release_lease) or
///   [`compare_and_delete`](Self::compare_and_delete) returned `Ok`, every later call from any
///   replica sees its effect.
/// - **Expiry.** A value or lease written with a time to live is gone once it has passed, and
///   [`read`](Self::read) reports what is left of it (the replicas' clocks may disagree; the
///   remaining time is what they share).
/// - **Atomic leases.** [`take_lease`](Self::take_lease) sets the lease only if it is absent,
///   with its expiry, in one step: of replicas racing for it, exactly one gets `true`.
///   Renewing and releasing compare the holder first and act in the same step (a holder whose
///   lease expired and was taken by another replica must not touch the new one).
/// - **Compare-and-delete.** [`compare_and_delete`](Self::compare_and_delete) deletes the value
///   only if it is still byte for byte the one given, in one step.
/// - **Publications may be lost.** A publication wakes the listeners of its channel at the
///   time, in this process and others, at most once each; one that is lost (a dropped
///   connection, a listener that was not yet listening) costs a waiting replica one
///   [`poll_interval`](super::SharedCache::poll_interval), because the cache also polls.
/// - **Bounded.** The cache bounds every call by its [`timeout`](super::SharedCache::timeout)
///   and drops the future past it; a store should bound its own connecting and retrying too,
///   and must tolerate its futures being dropped.
/// - **No values in errors.** A [`StoreError`] says what went wrong without quoting a value,
///   a name's token or a URL (which may hold a password): it is logged.
pub trait TokenStore: Send + Sync + 'static {
    /// The value under `key` and its remaining time to live (`None` if it has none: the cache
    /// then does not trust it), or `None` without a value. When the value is replaced between
    /// reading the two, the time to live reported must not be longer than the value's own.
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send;

    /// Sets `lease` to `holder`, expiring after `ttl`, only if `lease` is absent: whether it
    /// was set.
    fn take_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Makes `lease` expire `ttl` from now if it still holds `holder`: whether it did.
    fn renew_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes `lease` if it still holds `holder`, and then, if it did and `wake` names a
    /// channel, publishes on it (the holder gives up without a token: a waiter takes over).
    /// Whether it deleted the lease.
    fn release_lease(
        &self,
        lease: &str,
        holder: &str,
        wake: Option<&str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores `value` under `key`, expiring after `ttl`, then publishes on `channel`. A store
    /// whose publications can carry bytes sends `value` and `ttl` with it, so that a
    /// listener woken by the publication has the new value without reading it (see
    /// [`Listener::with_values`]); otherwise the listener reads it.
    fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes `key` if its value is still exactly `value`: whether it did.
    fn compare_and_delete(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A [`Listener`] of `channel` if this process already listens to it, without waiting:
    /// the cache asks before reading a value, so that no publication after that read is
    /// missed. Default: `None` (the cache then calls [`listen`](Self::listen) when it has
    /// to wait).
    fn listening(&self, channel: &str) -> Option<Listener> {
        let _ = channel;
        None
    }

    /// Starts listening to `channel` (connecting if needed) and a [`Listener`] of it.
    /// Publications before this returned may be missed: the cache reads once more after it.
    fn listen(&self, channel: &str) -> impl Future<Output = Result<Listener, StoreError>> + Send;
}

/// A value read from a [`TokenStore`] and its remaining time to live.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes stored, as the cache wrote them.
    pub value: Vec<u8>,
    /// What is left of its time to live; `None` if it has none.
    pub time_to_live: Option<Duration>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value may be a token in clear.
        f.debug_struct("Entry")
            .field("value", &format_args!("[{} bytes]", self.value.len()))
            .field("time_to_live", &self.time_to_live)
            .finish()
    }
}

/// Wakes one waiting replica when a value is published on a channel, or when the store stops
/// listening (the replica then reads, and listens again).
#[derive(Debug)]
pub struct Listener(Receiver);

#[derive(Debug)]
enum Receiver {
    Wakes(watch::Receiver<()>),
    Values(watch::Receiver<Option<Published>>),
}

impl Listener {
    /// A listener woken by every `send` on the sender of `receiver` after this call; dropping
    /// the sender ends it. Publications in between coalesce into one wake-up. The replica
    /// reads the value after each.
    pub fn new(mut receiver: watch::Receiver<()>) -> Self {
        receiver.mark_unchanged();
        Self(Receiver::Wakes(receiver))
    }

    /// A listener of publications that may carry the value just stored: each `send` on the
    /// sender of `receiver` after this call wakes it, and a replica adopts the value sent
    /// (`Some`) without reading it from the store; `None` wakes it without a value (a lease
    /// given up), and it reads. Dropping the sender ends it.
    pub fn with_values(mut receiver: watch::Receiver<Option<Published>>) -> Self {
        receiver.mark_unchanged();
        Self(Receiver::Values(receiver))
    }

    /// Waits for the next publication: `true`, or `false` when the store stopped listening
    /// (then it returns at once, every time).
    pub async fn published(&mut self) -> bool {
        match &mut self.0 {
            Receiver::Wakes(receiver) => receiver.changed().await.is_ok(),
            Receiver::Values(receiver) => receiver.changed().await.is_ok(),
        }
    }

    /// The value the latest publication carried, with what is left of its time to live now;
    /// `None` if it carried none. Meaningful after [`published`](Self::published) returned
    /// `true`.
    pub fn value(&self) -> Option<Entry> {
        match &self.0 {
            Receiver::Wakes(_) => None,
            Receiver::Values(receiver) => receiver.borrow().as_ref().map(Published::entry),
        }
    }
}

/// A value as a publication carried it: what [`TokenStore::store`] stored, and its time to
/// live when the publication was received, so that the time spent before a replica looks at
/// it is taken off.
#[derive(Clone)]
pub struct Published {
    entry: Entry,
    received: Instant,
}

impl Published {
    /// The value and time to live a publication carried, received now.
    pub fn new(entry: Entry) -> Self {
        Self {
            entry,
            received: Instant::now(),
        }
    }

    /// The value, with the time since it was received taken off its time to live.
    fn entry(&self) -> Entry {
        let elapsed = self.received.elapsed();
        Entry {
            value: self.entry.value.clone(),
            time_to_live: self
                .entry
                .time_to_live
                .map(|ttl| ttl.saturating_sub(elapsed)),
        }
    }
}

impl fmt::Debug for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Published")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// Why a [`TokenStore`] operation failed: the cache logs it (once per outage) and fetches the
/// token without the store. It never holds a value, a token or a URL.
#[derive(Clone)]
pub struct StoreError {
    reason: Cow<'static, str>,
}

impl StoreError {
    /// An error that says `reason`: what failed, in words that quote no value, token or URL.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// No answer within `after`.
    pub fn timeout(after: Duration) -> Self {
        Self::new(format!("no answer within {} ms", after.as_millis()))
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreError").field(&self.reason).finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for StoreError {}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`TokenStore`] with its futures boxed, so that a refresher holds any store behind one type.
/// One box per store call, a few per token lifetime.
pub(crate) trait DynStore: Send + Sync {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>>;
    fn take_lease<'a>(
        &'a self,
        lease: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn renew_lease<'a>(
        &'a self,
        lease: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn release_lease<'a>(
        &'a self,
        lease: &'a str,
        holder: &'a str,
        wake: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn store<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn compare_and_delete<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn listening(&self, channel: &str) -> Option<Listener>;
    fn listen<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Listener, StoreError>>;
}

impl<S: TokenStore> DynStore for S {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Box::pin(TokenStore::read(self, key))
    }
    fn take_lease<'a>(
        &'a self,
        lease: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(TokenStore::take_lease(self, lease, holder, ttl))
    }
    fn renew_lease<'a>(
        &'a self,
        lease: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(TokenStore::renew_lease(self, lease, holder, ttl))
    }
    fn release_lease<'a>(
        &'a self,
        lease: &'a str,
        holder: &'a str,
        wake: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(TokenStore::release_lease(self, lease, holder, wake))
    }
    fn store<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(TokenStore::store(self, key, value, ttl, channel))
    }
    fn compare_and_delete<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(TokenStore::compare_and_delete(self, key, value))
    }
    fn listening(&self, channel: &str) -> Option<Listener> {
        TokenStore::listening(self, channel)
    }
    fn listen<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Listener, StoreError>> {
        Box::pin(TokenStore::listen(self, channel))
    }
}

/// Any store, shared by the clones of a cache.
pub(crate) type AnyStore = Arc<dyn DynStore>;
