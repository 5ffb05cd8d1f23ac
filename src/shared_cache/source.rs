//! One refresh through the shared cache, for one refresher: adopt the shared token, or take the
//! lease and fetch it for everyone, or wait for the replica that has the lease; fall back to a
//! token request of our own when the store is away.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{
    cache::AnyCache,
    guard::Guarded,
    key::KeyMaterial,
    store::StoreError,
    value::{Codec, StoredToken},
};
use crate::{
    endpoint::{Fetched, TokenResponse},
    error::{ConfigError, TokenError},
    metrics,
    source::{Fetcher, Obtained},
    token::{self, expiry_margin},
};

/// The latest margin before expiry at which the refresher of a configuration refreshes, for a
/// token lifetime (`RefreshPolicy::latest_margin`, passed in so that this module does not
/// import the refresher's).
pub(crate) type LatestMargin = Arc<dyn Fn(Duration) -> Duration + Send + Sync>;

/// The shared cache as one refresher uses it: one token key of one store.
pub(crate) struct SharedSource {
    connection: Arc<Guarded>,
    codec: Codec,
    key: String,
    lease_key: String,
    /// Where the lease holder publishes, to wake the replicas waiting for its token.
    channel: String,
    lease_timeout: Duration,
    poll_interval: Duration,
    /// The latest a refresher of this configuration refreshes before expiry, for a lifetime.
    latest_margin: LatestMargin,
    /// The token type this replica's token requests get, `Bearer` or `DPoP`: a shared token of
    /// the other type is not adopted.
    scheme: &'static str,
    /// The stored value of the token this replica holds, if it came through the store: what a
    /// 401 compares before deleting.
    held: Mutex<Option<Zeroizing<Vec<u8>>>>,
    /// When the token this source last handed to the refresher stops being usable: a fetch
    /// without the store waits, with jitter, within what is left of it.
    usable_until: Mutex<Option<Instant>>,
}

/// How the wait for the lease or a shared token ended.
enum Acquired {
    /// A shared token valid for long enough.
    Token(Obtained),
    /// The lease: fetch the token for everyone. Holds the lease's random token.
    Lease(String),
}

/// Why a refresh did not go through the store.
enum Bypass {
    /// The store failed or timed out.
    Failed(StoreError, &'static str),
    /// The replica with the lease published nothing for too long.
    NothingPublished(Duration),
}

impl SharedSource {
    pub(crate) fn new(
        cache: &AnyCache,
        material: &KeyMaterial,
        latest_margin: LatestMargin,
        dpop: bool,
    ) -> Result<Self, ConfigError> {
        let connection = cache.prepare()?;
        let key = material.redis_key(&cache.prefix);
        Ok(Self {
            connection,
            codec: cache.codec.clone(),
            lease_key: format!("{key}:lease"),
            channel: format!("{key}:published"),
            key,
            lease_timeout: cache.lease_timeout,
            poll_interval: cache.effective_poll_interval(),
            latest_margin,
            scheme: if dpop { token::DPOP } else { token::BEARER },
            held: Mutex::new(None),
            usable_until: Mutex::new(None),
        })
    }

    /// A token for the refresher: the shared one, or one this replica fetched. `refused`: the
    /// token this replica holds was refused by an API (a 401), so it is deleted from the
    /// store first, if the store still holds that very token.
    pub(crate) async fn obtain(
        &self,
        endpoint: &Fetcher,
        refused: bool,
    ) -> Result<Obtained, TokenError> {
        let started = Instant::now();
        let result = self.obtain_once(endpoint, refused).await;
        if let Ok(obtained) = &result {
            let lifetime = obtained.fetched.lifetime;
            *lock(&self.usable_until) = obtained
                .issued_at
                .unwrap_or(started)
                .checked_add(lifetime - expiry_margin(lifetime));
        }
        result
    }

    async fn obtain_once(&self, endpoint: &Fetcher, refused: bool) -> Result<Obtained, TokenError> {
        // A refused token is replaced at once; any other may be kept while the store is away.
        if refused {
            *lock(&self.usable_until) = None;
        }
        let held = if refused { self.held().take() } else { None };
        if !self.connection.available() {
            tracing::debug!("shared token cache bypassed after a recent failure");
            return self.fetch_alone(endpoint).await;
        }
        if refused && let Some(value) = held {
            match self.connection.compare_and_delete(&self.key, &value).await {
                Ok(deleted) => {
                    metrics::shared_cache_invalidation(deleted);
                    tracing::debug!(
                        deleted,
                        "refused token {} the shared cache",
                        if deleted {
                            "deleted from"
                        } else {
                            "already replaced in"
                        }
                    );
                }
                Err(failure) => {
                    return self
                        .bypass(endpoint, Bypass::Failed(failure, "invalidate"))
                        .await;
                }
            }
        }
        match self.acquire(endpoint.timeout).await {
            Ok(Acquired::Token(obtained)) => Ok(obtained),
            Ok(Acquired::Lease(lease)) => self.fetch_for_all(endpoint, lease).await,
            Err(bypass) => self.bypass(endpoint, bypass).await,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Zeroizing<Vec<u8>>>> {
        lock(&self.held)
    }

    /// Adopts a shared token valid for long enough, or takes the lease, or waits for the
    /// replica that has it. `request_timeout` bounds the holder's token request.
    async fn acquire(&self, request_timeout: Duration) -> Result<Acquired, Bypass> {
        let started = Instant::now();
        // The holder renews its lease for as long as its token request runs; a crashed holder's
        // lease expires within the lease timeout, and then this replica takes it. Past this,
        // something is wrong with the holder. `None`: never (saturated).
        let give_up = started.checked_add(
            self.lease_timeout
                .saturating_mul(2)
                .saturating_add(request_timeout),
        );
        let mut waited = false;
        // When this process already listens, the wake-up is made before the first read, so
        // that no publication after that read is missed.
        let mut wakeup = self.connection.listening(&self.channel);
        let mut take_lease = true;
        loop {
            if let Some(obtained) = self.read().await? {
                return Ok(Acquired::Token(self.adopted(obtained, waited, started)));
            }
            if take_lease {
                let lease = lease_token();
                if self
                    .connection
                    .take_lease(&self.lease_key, &lease, self.lease_timeout)
                    .await
                    .map_err(|failure| Bypass::Failed(failure, "lease"))?
                {
                    // Between our read and the lease, the previous holder may have published
                    // and released: look again before fetching.
                    if let Some(obtained) = self.read().await? {
                        self.release(&lease, false).await;
                        return Ok(Acquired::Token(self.adopted(obtained, waited, started)));
                    }
                    metrics::shared_cache(metrics::SharedCacheOutcome::LeaseWon);
                    tracing::debug!("took the shared token lease; fetching for all replicas");
                    return Ok(Acquired::Lease(lease));
                }
            }
            take_lease = true;
            if give_up.is_some_and(|give_up| Instant::now() >= give_up) {
                return Err(Bypass::NothingPublished(started.elapsed()));
            }
            if !waited {
                tracing::debug!("another replica holds the shared token lease; waiting");
            }
            waited = true;
            if wakeup.is_none() {
                match self.connection.listen(&self.channel).await {
                    Ok(subscribed) => {
                        // A publication before the subscription was missed: read once more
                        // (without asking for the lease again) before waiting.
                        wakeup = Some(subscribed);
                        take_lease = false;
                        continue;
                    }
                    Err(failure) => tracing::debug!(
                        error = %failure,
                        "cannot listen for shared token publications; polling"
                    ),
                }
            }
            match &mut wakeup {
                // Woken by the holder's publication, or by the fallback poll.
                Some(listener) => {
                    match tokio::time::timeout(self.poll_interval, listener.published()).await {
                        // The publication carried the token: no need to read it.
                        Ok(true) => {
                            if let Some(obtained) = listener
                                .value()
                                .and_then(|entry| self.adopt(&entry.value, entry.time_to_live))
                            {
                                return Ok(Acquired::Token(self.adopted(obtained, true, started)));
                            }
                        }
                        // The store stopped listening (a lost connection): read, and listen
                        // again at the next turn rather than wake at once on every turn.
                        Ok(false) => wakeup = None,
                        Err(_poll) => {}
                    }
                }
                None => tokio::time::sleep(self.poll_interval).await,
            }
        }
    }

    /// The shared token, if there is one worth adopting.
    async fn read(&self) -> Result<Option<Obtained>, Bypass> {
        let read = self
            .connection
            .read(&self.key)
            .await
            .map_err(|failure| Bypass::Failed(failure, "read"))?;
        Ok(read.and_then(|entry| self.adopt(&entry.value, entry.time_to_live)))
    }

    fn adopted(&self, obtained: Obtained, waited: bool, started: Instant) -> Obtained {
        let outcome = if waited {
            metrics::SharedCacheOutcome::Waited
        } else {
            metrics::SharedCacheOutcome::Hit
        };
        metrics::shared_cache(outcome);
        tracing::debug!(
            waited_ms = started.elapsed().as_millis() as u64,
            "adopted the shared access token"
        );
        obtained
    }

    /// Releases the lease, waking the waiters when `wake` (nothing was stored: one of them
    /// takes the lease). A failure only marks the store down (the lease then expires by itself).
    async fn release(&self, lease: &str, wake: bool) {
        let channel = wake.then_some(self.channel.as_str());
        if let Err(failure) = self
            .connection
            .release_lease(&self.lease_key, lease, channel)
            .await
        {
            self.connection.mark_down(&failure, "release");
        }
    }

    /// The stored token, if it decodes and stays valid for longer than any refresh margin:
    /// adopting a token this replica would refresh at once would only loop.
    fn adopt(&self, value: &[u8], ttl: Option<Duration>) -> Option<Obtained> {
        let token = match self.codec.decode(&self.key, value) {
            Ok(token) => token,
            Err(error) => {
                metrics::shared_cache_invalid_value();
                tracing::warn!(
                    error = %error,
                    "unusable value in the shared token cache; treating it as a miss"
                );
                return None;
            }
        };
        if !token.token_type.eq_ignore_ascii_case(self.scheme) {
            metrics::shared_cache_invalid_value();
            tracing::warn!(
                token_type = %token.token_type,
                "shared token of another type; treating it as a miss"
            );
            return None;
        }
        // The token this replica is replacing is never taken back: a refresh is due only when
        // it has less left than any replica adopts, so finding it again means that a request
        // reported it refused while this refresh was under way.
        if self.held().as_deref().is_some_and(|held| held == value) {
            tracing::debug!("the shared token is the one being replaced; treating it as a miss");
            return None;
        }
        // Every key is written with a TTL; one without (set by hand) is not trusted.
        let remaining = ttl?.min(token.lifetime);
        let lifetime = token.lifetime;
        let floor = (self.latest_margin)(lifetime) + expiry_margin(lifetime);
        if remaining <= floor {
            return None;
        }
        // The token's lifetime started when the replica that fetched it asked for it.
        let now = Instant::now();
        let (lifetime, issued_at) = match now.checked_sub(lifetime - remaining) {
            Some(issued_at) => (lifetime, issued_at),
            None => (remaining, now),
        };
        *self.held() = Some(Zeroizing::new(value.to_vec()));
        Some(Obtained {
            fetched: Fetched {
                response: TokenResponse {
                    access_token: token.access_token,
                    expires_in: Some(lifetime),
                    scope: token.scope,
                    token_type: Some(token.token_type),
                },
                lifetime,
            },
            issued_at: Some(issued_at),
            requested: false,
        })
    }

    /// With the lease: fetches the token (renewing the lease meanwhile), publishes it with a
    /// TTL of its remaining lifetime, and releases the lease.
    async fn fetch_for_all(
        &self,
        endpoint: &Fetcher,
        lease: String,
    ) -> Result<Obtained, TokenError> {
        let started = Instant::now();
        let result = tokio::select! {
            result = endpoint.fetch() => result,
            never = self.keep_lease(&lease) => match never {},
        };
        let mut published = false;
        if let Ok(fetched) = &result {
            *self.held() = None;
            let remaining = fetched.lifetime.saturating_sub(started.elapsed());
            if !remaining.is_zero() {
                let stored = StoredToken {
                    access_token: Zeroizing::new(fetched.response.access_token.as_str().to_owned()),
                    token_type: if fetched.response.is_dpop() {
                        token::DPOP
                    } else {
                        token::BEARER
                    }
                    .to_owned(),
                    lifetime: fetched.lifetime,
                    expires_at_ms: unix_ms(SystemTime::now().checked_add(remaining)),
                    scope: fetched.response.scope.clone(),
                };
                let value = self.codec.encode(&self.key, &stored);
                match self
                    .connection
                    .store(&self.key, &value, remaining, &self.channel)
                    .await
                {
                    Ok(()) => {
                        published = true;
                        *self.held() = Some(value);
                        tracing::debug!(
                            ttl_ms = remaining.as_millis() as u64,
                            "published the access token to the shared cache"
                        );
                    }
                    Err(failure) => self.connection.mark_down(&failure, "publish"),
                }
            }
        }
        // Released on failure too, waking the waiters, so that another replica may try at
        // once.
        if self.connection.available() {
            self.release(&lease, !published).await;
        }
        // Its lifetime started with the request, as the value stored says.
        result.map(|fetched| Obtained {
            fetched,
            issued_at: Some(started),
            requested: true,
        })
    }

    /// Renews the lease every third of the lease timeout, so that a token request slower than
    /// the lease timeout does not let another replica take the lease and fetch as well. Never
    /// ends; it stops renewing once the lease is lost or the store fails, and the lease then
    /// expires by itself.
    async fn keep_lease(&self, lease: &str) -> Infallible {
        let every = (self.lease_timeout / 3).max(Duration::from_millis(1));
        loop {
            tokio::time::sleep(every).await;
            match self
                .connection
                .renew_lease(&self.lease_key, lease, self.lease_timeout)
                .await
            {
                Ok(true) => tracing::trace!("renewed the shared token lease"),
                Ok(false) => {
                    tracing::debug!("the shared token lease expired before it was renewed");
                    break;
                }
                Err(failure) => {
                    self.connection.mark_down(&failure, "renew");
                    break;
                }
            }
        }
        std::future::pending().await
    }

    async fn bypass(&self, endpoint: &Fetcher, bypass: Bypass) -> Result<Obtained, TokenError> {
        match bypass {
            Bypass::Failed(failure, during) => self.connection.mark_down(&failure, during),
            Bypass::NothingPublished(waited) => tracing::warn!(
                waited_ms = waited.as_millis() as u64,
                "no replica published a shared token in time; fetching without the shared cache"
            ),
        }
        self.fetch_alone(endpoint).await
    }

    /// A token request of this replica's own, without the store. While the token it holds is
    /// still usable, it first waits a random part (up to three quarters) of what is left of
    /// it: when the store goes away at a refresh point, the replicas that all held the same
    /// shared token spread their requests over its remaining margin instead of sending them
    /// at once. Requests meanwhile go on with the token held.
    async fn fetch_alone(&self, endpoint: &Fetcher) -> Result<Obtained, TokenError> {
        metrics::shared_cache(metrics::SharedCacheOutcome::Fallback);
        let usable_until = *lock(&self.usable_until);
        if let Some(left) =
            usable_until.map(|until| until.saturating_duration_since(Instant::now()))
            && !left.is_zero()
        {
            let spread = left.mul_f64(0.75 * fastrand::f64());
            tracing::debug!(
                in_ms = spread.as_millis() as u64,
                "fetching without the shared cache, after a random delay within the token's margin"
            );
            tokio::time::sleep(spread).await;
        }
        // The token's lifetime starts with its request, after the delay: the next refresh
        // point and the next spread count from here.
        let requested_at = Instant::now();
        let fetched = endpoint.fetch().await?;
        *self.held() = None;
        Ok(Obtained {
            fetched,
            issued_at: Some(requested_at),
            requested: true,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// 128 random bits in hex: only the lease holder knows them, so only it can release the lease.
fn lease_token() -> String {
    let mut bytes = [0_u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Without the system's random source, fastrand's: unguessable enough to tell lease
        // holders apart, which is all the token guards against (it is no credential).
        fastrand::fill(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the epoch; `u64::MAX` for a time past what `SystemTime` holds.
fn unix_ms(at: Option<SystemTime>) -> u64 {
    at.map_or(u64::MAX, |at| {
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{AuthMethod, Parameters};

    const KEY_URL: &str = "http://127.0.0.1/oauth/token";

    fn source() -> SharedSource {
        // Nothing is connected: `adopt` only decodes and decides.
        let cache = crate::RedisCache::new("redis://127.0.0.1:1/")
            .unwrap()
            .into_any();
        let material = KeyMaterial::new(
            &KEY_URL.parse().unwrap(),
            "client",
            AuthMethod::ClientSecretBasic,
            &Parameters::default(),
        );
        SharedSource::new(
            &cache,
            &material,
            {
                let policy = crate::refresh::RefreshPolicy::default();
                Arc::new(move |lifetime| policy.latest_margin(lifetime))
            },
            false,
        )
        .unwrap()
    }

    fn value(source: &SharedSource, token_type: &str, lifetime: Duration) -> Zeroizing<Vec<u8>> {
        source.codec.encode(
            &source.key,
            &StoredToken {
                access_token: Zeroizing::new("shared-token".into()),
                token_type: token_type.into(),
                lifetime,
                expires_at_ms: 0,
                scope: Some("orders:read".into()),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_with_time_left_is_adopted_with_its_remaining_lifetime() {
        let source = source();
        let lifetime = Duration::from_secs(2);
        let stored = value(&source, "Bearer", lifetime);
        let ttl = Duration::from_millis(1_900);
        let obtained = source.adopt(&stored, Some(ttl)).expect("adopted");
        assert!(!obtained.requested);
        assert_eq!(obtained.fetched.lifetime, lifetime);
        assert_eq!(
            obtained.fetched.response.access_token.as_str(),
            "shared-token"
        );
        assert_eq!(
            obtained.fetched.response.scope.as_deref(),
            Some("orders:read")
        );
        // Its lifetime started 100 ms ago, when another replica asked for it.
        assert_eq!(
            obtained.issued_at,
            Some(Instant::now() - Duration::from_millis(100))
        );
        assert_eq!(
            source.held().as_deref().map(Vec::as_slice),
            Some(&stored[..])
        );
        // The token being replaced is not taken back.
        assert!(source.adopt(&stored, Some(ttl)).is_none());
        // `bearer` in any case.
        assert!(
            source
                .adopt(&value(&source, "bearer", lifetime), Some(ttl))
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_due_for_refresh_is_a_miss() {
        let source = source();
        let lifetime = Duration::from_secs(2);
        let stored = value(&source, "Bearer", lifetime);
        // The latest refresh margin of a 2-second token is 0.44 s (20 % of the lifetime, 10 %
        // jitter), and the expiry margin 0.2 s: with 0.64 s or less left, every replica would
        // refresh at once.
        let floor = Duration::from_millis(640);
        assert!(source.adopt(&stored, Some(floor)).is_none());
        assert!(
            source
                .adopt(&stored, Some(floor + Duration::from_millis(5)))
                .is_some()
        );
        // A key without a TTL was not written by a replica.
        assert!(source.adopt(&stored, None).is_none());
        // A TTL longer than the lifetime counts as the lifetime.
        *source.held() = None;
        let obtained = source
            .adopt(&stored, Some(Duration::from_secs(3600)))
            .unwrap();
        assert_eq!(obtained.issued_at, Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn unusable_values_are_misses() {
        let source = source();
        let ttl = Some(Duration::from_secs(50));
        let dpop = value(&source, "DPoP", Duration::from_secs(60));
        assert!(source.adopt(&dpop, ttl).is_none());
        assert!(source.adopt(b"garbage", ttl).is_none());
        assert!(source.adopt(b"", ttl).is_none());
        assert!(source.held().is_none());
    }

    #[test]
    fn lease_tokens_are_random() {
        let a = lease_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, lease_token());
    }
}
