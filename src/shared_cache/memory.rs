//! The in-memory store: a map behind a mutex, with a watch channel per publication channel
//! that carries the value published. For the handles of one process (several clients or token
//! sets built alike share one token), and for tests: it follows tokio's clock, so a paused
//! clock expires its values.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use super::{Entry, Listener, Published, StoreError, TokenStore};

/// A [`TokenStore`] in this process's memory: the handles of one process that share a clone
/// of it share their tokens, as replicas do through Redis. Nothing leaves the process, and
/// nothing fails.
///
/// ```
/// use tower_client_credentials::shared_cache::{MemoryStore, SharedCache};
///
/// let cache = SharedCache::with_store(MemoryStore::new()).prefix("orders-service:");
/// # let _ = cache;
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each name's value and when it expires.
    values: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    /// Each channel someone listened to, and the value its latest publication carried.
    channels: Mutex<HashMap<String, watch::Sender<Option<Published>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The names that hold a value now: for tests.
    pub fn names(&self) -> Vec<String> {
        let now = Instant::now();
        let mut names: Vec<String> = self
            .values()
            .iter()
            .filter(|(_, (_, expires))| *expires > now)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    fn values(&self) -> MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>> {
        lock(&self.inner.values)
    }

    fn publish(&self, channel: &str, entry: Option<Entry>) {
        if let Some(sender) = lock(&self.inner.channels).get(channel) {
            sender.send_replace(entry.map(Published::new));
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the values: tokens.
        f.debug_struct("MemoryStore")
            .field("names", &self.values().len())
            .finish()
    }
}

/// When a value written now with `ttl` expires; far in the future past what `Instant` holds.
fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 60 * 60))
}

/// The live value of `name` (an expired one is removed).
fn live<'a>(
    values: &'a mut HashMap<String, (Vec<u8>, Instant)>,
    name: &str,
    now: Instant,
) -> Option<&'a mut (Vec<u8>, Instant)> {
    if values.get(name).is_some_and(|(_, expires)| *expires <= now) {
        values.remove(name);
    }
    values.get_mut(name)
}

impl TokenStore for MemoryStore {
    async fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let now = Instant::now();
        Ok(
            live(&mut self.values(), key, now).map(|(value, expires)| Entry {
                value: value.clone(),
                time_to_live: Some(expires.saturating_duration_since(now)),
            }),
        )
    }

    async fn take_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        if live(&mut values, lease, now).is_some() {
            return Ok(false);
        }
        values.insert(
            lease.to_owned(),
            (holder.as_bytes().to_vec(), expiry(now, ttl)),
        );
        Ok(true)
    }

    async fn renew_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        match live(&mut self.values(), lease, now) {
            Some((value, expires)) if value == holder.as_bytes() => {
                *expires = expiry(now, ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lease(
        &self,
        lease: &str,
        holder: &str,
        wake: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        let held =
            live(&mut values, lease, now).is_some_and(|(value, _)| value == holder.as_bytes());
        if held {
            values.remove(lease);
        }
        drop(values);
        if let (true, Some(channel)) = (held, wake) {
            self.publish(channel, None);
        }
        Ok(held)
    }

    async fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        self.values()
            .insert(key.to_owned(), (value.to_vec(), expiry(now, ttl)));
        let entry = Entry {
            value: value.to_vec(),
            time_to_live: Some(ttl),
        };
        self.publish(channel, Some(entry));
        Ok(())
    }

    async fn compare_and_delete(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        let same = live(&mut values, key, now).is_some_and(|(stored, _)| stored == value);
        if same {
            values.remove(key);
        }
        Ok(same)
    }

    fn listening(&self, channel: &str) -> Option<Listener> {
        lock(&self.inner.channels)
            .get(channel)
            .map(|sender| Listener::with_values(sender.subscribe()))
    }

    async fn listen(&self, channel: &str) -> Result<Listener, StoreError> {
        let mut channels = lock(&self.inner.channels);
        let sender = channels
            .entry(channel.to_owned())
            .or_insert_with(|| watch::channel(None).0);
        Ok(Listener::with_values(sender.subscribe()))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
