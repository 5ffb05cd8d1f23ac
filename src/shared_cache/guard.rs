//! A store as a refresher uses it: every call bounded by the cache's timeout, and the store
//! bypassed for the outage backoff after a failure (the next refresh after that tries again).

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use super::store::{AnyStore, Entry, Listener, StoreError};

/// Until when the store is bypassed after a failure; shared by the clones of a cache.
pub(crate) type Outage = Arc<Mutex<Option<Instant>>>;

/// The store of one cache with its timeout and outage state.
pub(crate) struct Guarded {
    store: AnyStore,
    timeout: Duration,
    outage_backoff: Duration,
    down_until: Outage,
}

impl Guarded {
    pub(crate) fn new(
        store: AnyStore,
        timeout: Duration,
        outage_backoff: Duration,
        down_until: Outage,
    ) -> Self {
        Self {
            store,
            timeout,
            outage_backoff,
            down_until,
        }
    }

    /// Whether the store is worth asking: it did not fail within the outage backoff.
    pub(crate) fn available(&self) -> bool {
        lock(&self.down_until).is_none_or(|until| Instant::now() >= until)
    }

    /// Bypasses the store for the outage backoff. Logs the first failure of an outage at
    /// `warn`.
    pub(crate) fn mark_down(&self, failure: &StoreError, during: &'static str) {
        let mut down = lock(&self.down_until);
        let first = down.is_none();
        *down = Some(Instant::now() + self.outage_backoff);
        drop(down);
        if first {
            tracing::warn!(
                error = %failure,
                during,
                retry_in_ms = self.outage_backoff.as_millis() as u64,
                "shared token cache unavailable; fetching tokens without it"
            );
        } else {
            tracing::debug!(error = %failure, during, "shared token cache still unavailable");
        }
    }

    fn mark_up(&self) {
        if lock(&self.down_until).take().is_some() {
            tracing::info!("shared token cache reachable again");
        }
    }

    /// `operation` within the timeout; records that the store answered.
    async fn run<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => {
                self.mark_up();
                Ok(value)
            }
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(StoreError::timeout(self.timeout)),
        }
    }

    pub(crate) async fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.run(self.store.read(key)).await
    }

    pub(crate) async fn take_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.run(self.store.take_lease(lease, holder, ttl)).await
    }

    pub(crate) async fn renew_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.run(self.store.renew_lease(lease, holder, ttl)).await
    }

    pub(crate) async fn release_lease(
        &self,
        lease: &str,
        holder: &str,
        wake: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.run(self.store.release_lease(lease, holder, wake))
            .await
    }

    pub(crate) async fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
    ) -> Result<(), StoreError> {
        self.run(self.store.store(key, value, ttl, channel)).await
    }

    pub(crate) async fn compare_and_delete(
        &self,
        key: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.run(self.store.compare_and_delete(key, value)).await
    }

    pub(crate) fn listening(&self, channel: &str) -> Option<Listener> {
        self.store.listening(channel)
    }

    /// Listening is not an answer about the values: it does not end an outage.
    pub(crate) async fn listen(&self, channel: &str) -> Result<Listener, StoreError> {
        tokio::time::timeout(self.timeout, self.store.listen(channel))
            .await
            .unwrap_or_else(|_| Err(StoreError::timeout(self.timeout)))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
