use std::{
    fmt,
    future::{Future, IntoFuture},
    pin::{Pin, pin},
    sync::{Arc, Weak, atomic::Ordering},
    task::{Context, Wake, Waker},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use tracing::Instrument;

use super::{Outcome, RefreshPolicy, Shared};
use crate::{
    error::TokenError,
    metrics,
    source::{Fetcher, Obtained},
    token::{self, Token},
};

/// How often the refresher compares the monotonic clock with the wall clock, to notice a
/// machine that was suspended (the monotonic clock stops while it sleeps; tokens do not).
const WALL_CHECK: Duration = Duration::from_secs(30);

/// The least time between the starts of two token requests after a success.
const MIN_FETCH_INTERVAL: Duration = Duration::from_millis(250);

/// How far the two clocks may disagree before the wall clock is believed.
const WALL_TOLERANCE: Duration = Duration::from_secs(10);

/// The background task that keeps a [`TokenHandle`](super::TokenHandle)'s token fresh.
///
/// [`ClientCredentials::start`](crate::ClientCredentials::start) spawns it on tokio for you.
/// [`ClientCredentials::into_parts`](crate::ClientCredentials::into_parts) hands it to you
/// instead, to run on an executor of your choice: `.await` it, or spawn `refresher.into_future()`.
/// It finishes when the last handle is dropped or on
/// [`TokenHandle::shutdown`](super::TokenHandle::shutdown). Dropping it without running it
/// makes every request fail with [`TokenUnavailable::Shutdown`](crate::TokenUnavailable).
pub struct Refresher {
    task: Option<Task>,
}

struct Task {
    shared: Arc<Shared>,
    source: Fetcher,
    policy: RefreshPolicy,
    /// Refreshes go through this shared cache, when there is one.
    #[cfg(feature = "redis")]
    shared_cache: Option<crate::shared_cache::SharedSource>,
}

impl Refresher {
    pub(crate) fn new(shared: Arc<Shared>, source: Fetcher, policy: RefreshPolicy) -> Self {
        Self {
            task: Some(Task {
                shared,
                source,
                policy,
                #[cfg(feature = "redis")]
                shared_cache: None,
            }),
        }
    }

    /// Makes the refreshes go through a shared cache.
    #[cfg(feature = "redis")]
    pub(crate) fn with_shared_cache(
        mut self,
        source: Option<crate::shared_cache::SharedSource>,
    ) -> Self {
        if let Some(task) = &mut self.task {
            task.shared_cache = source;
        }
        self
    }
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher").finish_non_exhaustive()
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            Stopped(task.shared).mark();
        }
    }
}

impl IntoFuture for Refresher {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(mut self) -> Self::IntoFuture {
        match self.task.take() {
            Some(task) => Box::pin(task.run()),
            None => Box::pin(std::future::ready(())),
        }
    }
}

/// Marks the store stopped when the refresher's future ends or is dropped (its runtime shut
/// down, its task aborted), so waiting requests fail instead of hanging.
struct Stopped(Arc<Shared>);

impl Stopped {
    fn mark(&self) {
        let shared = &self.0;
        shared.state().stopped = true;
        shared.current.store(None);
        shared.outcome.send_replace(Outcome::Stopped);
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.mark();
        tracing::debug!("token refresher stopped");
    }
}

impl Task {
    async fn run(self) {
        let shared = Arc::clone(&self.shared);
        let _stopped = Stopped(Arc::clone(&shared));
        let mut generation = 0_u64;
        let mut refresh_at: Option<Instant> = None;
        let mut failures = 0_u32;
        let mut backoff_until: Option<Instant> = None;
        // The timer that marks the current token expired at its usable end (see `arm`).
        let mut _alarm: Option<Pin<Box<tokio::time::Sleep>>> = None;

        // A lazy store: nothing is fetched until a request needs a token.
        while !shared.demanded.load(Ordering::Acquire) {
            let mut closed = pin!(shared.close.notified());
            closed.as_mut().enable();
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            tokio::select! {
                biased;
                () = &mut closed => return,
                () = shared.wake.notified() => {}
            }
        }

        loop {
            let mut closed = pin!(shared.close.notified());
            closed.as_mut().enable();
            if shared.closed.load(Ordering::Acquire) {
                return;
            }

            let now = Instant::now();
            // A refused token whose replacement was deferred is replaced when that is due.
            let deferred = shared.deferred_due(now);
            let token = self.current_token(now);
            let next_fetch = match &token {
                Some(token) => {
                    let due = refresh_at.unwrap_or(now).max(backoff_until.unwrap_or(now));
                    let due = due.min(token.withdraw_at(now, WALL_TOLERANCE));
                    deferred.map_or(due, |deferred| due.min(deferred))
                }
                None => backoff_until.unwrap_or(now),
            };

            if next_fetch <= now {
                // The token last obtained was refused by an API: a shared cache must learn it.
                let refused = {
                    let mut state = shared.state();
                    state.fetching = true;
                    generation > 0 && state.invalidated >= generation
                };
                let started = Instant::now();
                let span = tracing::info_span!(
                    "token_fetch",
                    attempt = failures + 1,
                    outcome = tracing::field::Empty,
                    duration_ms = tracing::field::Empty,
                );
                span.in_scope(|| tracing::debug!("fetching access token"));
                let mut fetch = pin!(self.obtain(refused).instrument(span.clone()));
                let result = loop {
                    // A slow fetch must not keep a token past its time in the store.
                    let withdraw_at = self
                        .current_token(Instant::now())
                        .map(|token| token.withdraw_at(Instant::now(), WALL_TOLERANCE));
                    tokio::select! {
                        biased;
                        () = &mut closed => return,
                        result = &mut fetch => break result,
                        () = sleep_until_some(withdraw_at) => {}
                    }
                };
                let now = Instant::now();
                let elapsed = now.duration_since(started);
                span.record("duration_ms", elapsed.as_millis() as u64);
                let _entered = span.enter();
                let mut requested = true;
                let mut issued_at = started;
                match result.and_then(|obtained| {
                    let fetched = obtained.fetched;
                    requested = obtained.requested;
                    issued_at = obtained.issued_at.unwrap_or(started);
                    generation += 1;
                    Token::new(
                        if fetched.response.is_dpop() {
                            token::DPOP
                        } else {
                            token::BEARER
                        },
                        &fetched.response.access_token,
                        generation,
                        fetched.lifetime,
                        fetched.response.scope.clone(),
                        issued_at,
                    )
                    .map_err(|_| {
                        // The endpoint's parser only admits visible ASCII, which is always a
                        // valid header; another source may not.
                        TokenError::permanent("the access token is not a valid header value")
                    })
                }) {
                    Ok(token) => {
                        let lifetime = token.lifetime;
                        refresh_at =
                            Some(issued_at + self.policy.refresh_after(lifetime, fastrand::f64()));
                        failures = 0;
                        // However short the token's life, the next fetch waits a little: a
                        // server issuing tokens that are dead on arrival gets a few requests a
                        // second, not a loop.
                        backoff_until = Some(started + MIN_FETCH_INTERVAL);
                        span.record("outcome", "success");
                        if requested {
                            metrics::fetch(metrics::Outcome::Success, elapsed);
                        }
                        metrics::expires_in(token.expires_at.saturating_duration_since(now));
                        tracing::info!(
                            generation,
                            lifetime_secs = lifetime.as_secs_f64(),
                            scope = token.scope().unwrap_or(""),
                            shared = !requested,
                            "access token obtained"
                        );
                        let token = Arc::new(token);
                        _alarm = Some(arm(&token));
                        shared.current.store(Some(token));
                        {
                            let mut state = shared.state();
                            state.fetching = false;
                            state.last_error = None;
                            state.last_success = Some(SystemTime::now());
                            state.next_attempt = refresh_at;
                        }
                        shared.outcome.send_replace(Outcome::Fetched);
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let mut delay = self.policy.retry_delay(failures, &error, fastrand::f64());
                        // Never sleep past the expiry of the token still being served.
                        if let Some(token) = self.current_token(now) {
                            delay = delay.min(token.usable_until.saturating_duration_since(now));
                        }
                        let next = now + delay;
                        backoff_until = Some(next);
                        let outcome = if error.is_transient() {
                            metrics::Outcome::TransientError
                        } else {
                            metrics::Outcome::PermanentError
                        };
                        span.record("outcome", error.kind());
                        metrics::fetch(outcome, elapsed);
                        tracing::warn!(
                            error = %crate::error::Chain(&error),
                            kind = error.kind(),
                            transient = error.is_transient(),
                            status = error.status().map(|s| s.as_u16()),
                            oauth_error = error.oauth_error(),
                            failures,
                            retry_in_ms = delay.as_millis() as u64,
                            "access token request failed"
                        );
                        {
                            let mut state = shared.state();
                            state.fetching = false;
                            state.last_error = Some((error.clone(), SystemTime::now()));
                            state.next_attempt = Some(next);
                        }
                        shared.outcome.send_replace(Outcome::Failed(error));
                    }
                }
                continue;
            }

            metrics::expires_in(token.as_ref().map_or(Duration::ZERO, |t| {
                t.expires_at.saturating_duration_since(now)
            }));
            tracing::trace!(
                generation = token.as_ref().map(|t| t.generation),
                next_fetch_in_ms = next_fetch.duration_since(now).as_millis() as u64,
                "refresher waiting"
            );
            shared.state().next_attempt = Some(next_fetch);
            // Wake at the next fetch, at the token's expiry (to withdraw it), on a wake-up
            // (an invalidation), and now and then to compare clocks.
            let mut wake_at = next_fetch.min(now + WALL_CHECK);
            if let Some(token) = &token {
                wake_at = wake_at.min(token.withdraw_at(now, WALL_TOLERANCE));
            }
            tokio::select! {
                biased;
                () = &mut closed => return,
                () = shared.wake.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Asks the shared cache for a token when there is one, else the source.
    async fn obtain(&self, refused: bool) -> Result<Obtained, TokenError> {
        #[cfg(feature = "redis")]
        if let Some(cache) = &self.shared_cache {
            return cache.obtain(&self.source, refused).await;
        }
        let _ = refused;
        self.source.fetch().await.map(|fetched| Obtained {
            fetched,
            issued_at: None,
            requested: true,
        })
    }

    /// The current token, after withdrawing it if it has expired or a request reported it
    /// refused. This task is the only writer of the store.
    fn current_token(&self, now: Instant) -> Option<Arc<Token>> {
        let shared = &self.shared;
        let token = shared.current.load_full()?;
        let invalidated = shared.state().invalidated;
        let expired = token.withdraw_at(now, WALL_TOLERANCE) <= now;
        if token.generation <= invalidated || expired {
            tracing::debug!(
                generation = token.generation,
                expired,
                "withdrawing access token"
            );
            shared.current.store(None);
            return None;
        }
        Some(token)
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Marks `token` expired when its usable end comes, from the timer driver itself: the waker of
/// a `Sleep` polled once here is called by the driver when the deadline passes, whether or not
/// this task is then polled. The request path reads the mark (one relaxed load), so a starved
/// refresher cannot let an expired token out, at no clock read per request. The returned
/// `Sleep` must be kept: dropping it cancels the timer.
fn arm(token: &Arc<Token>) -> Pin<Box<tokio::time::Sleep>> {
    struct Alarm(Weak<Token>);

    impl Wake for Alarm {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            if let Some(token) = self.0.upgrade() {
                token.mark_expired();
            }
        }
    }

    let mut sleep = Box::pin(tokio::time::sleep_until(token.usable_until));
    let waker = Waker::from(Arc::new(Alarm(Arc::downgrade(token))));
    if sleep
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_ready()
    {
        token.mark_expired();
    }
    sleep
}
