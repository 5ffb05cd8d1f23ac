//! The token store and its refresher.
//!
//! The current token lives in an [`ArcSwapOption`]. Requests read it without taking a lock.
//! The [`Refresher`] is the only task that publishes tokens; the one other write is the
//! withdrawal of a token an API refused (a compare-and-swap that cannot remove a newer token).
//! Everything else goes through the refresher:
//!
//! - It fetches a new token before the current one expires (see
//!   [`refresh_before`](crate::ClientCredentialsBuilder::refresh_before)), and withdraws a token
//!   the moment it expires, so a request never goes out with a token known to be expired.
//! - Requests that find no valid token wait for the fetch in flight. There is only ever one
//!   fetch at a time, whether the timer, a cold start or a 401 asked for it.
//! - A token an API refused is replaced according to what the handle has learned (see
//!   [Refused tokens](#refused-tokens) below).
//! - After a failure it backs off (exponentially, with jitter, honouring `Retry-After`) and
//!   keeps serving the current token while it is valid. It never gives up and never dies on an
//!   error.
//! - It stops when the last [`TokenHandle`] is dropped, or on [`TokenHandle::shutdown`].
//!
//! # Refused tokens
//!
//! The store keeps the highest generation an API has *accepted* (answered with anything but
//! 401 or a server error). When a request's token is refused:
//!
//! - If the token, or a later one, was accepted before, the API accepts our tokens and this one
//!   has expired or been revoked: it is withdrawn at once, whatever happened before, and every
//!   request that carried it waits for the one new token.
//! - If no request has succeeded with it, the API may be refusing every token we bring (a wrong
//!   audience, a misconfigured API). The first such refusal still replaces the token at once
//!   (it may have been revoked before its first use). After that, each further fresh token
//!   refused before any acceptance defers its replacement, exponentially: the
//!   [`refused_token_backoff`](crate::ClientCredentialsBuilder::refused_token_backoff), first
//!   delay doubling up to its cap. Meanwhile the refused token stays and the 401s go back to the
//!   callers: the authorization server sees about a dozen token requests an hour, not one per
//!   401. Any acceptance ends the backoff. [`TokenStatus`] reports it.

mod handle;
mod policy;
mod refresher;

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

pub(crate) use self::policy::RefreshPolicy;
pub use self::{
    handle::{TokenHandle, TokenStatus},
    refresher::Refresher,
};
use crate::{
    dpop::Prover,
    error::{TokenError, TokenUnavailable},
    token::Token,
};

/// What the last fetch did. Waiters look at it when it changes.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// No fetch has finished yet.
    None,
    /// A new token was published.
    Fetched,
    /// The fetch failed.
    Failed(TokenError),
    /// The refresher has stopped.
    Stopped,
}

/// Bookkeeping of the slow paths, behind a mutex that the request path never takes while a
/// valid token is held.
#[derive(Debug, Default)]
struct State {
    fetching: bool,
    next_attempt: Option<Instant>,
    last_error: Option<(TokenError, SystemTime)>,
    last_success: Option<SystemTime>,
    /// Tokens up to this generation are to be discarded (a request got 401 with them).
    invalidated: u64,
    /// Fresh tokens refused in a row, none accepted since: drives the refusal backoff.
    refusals: u32,
    /// A refused fresh token whose replacement waits for the refusal backoff: its generation
    /// and when the refresher replaces it.
    deferred: Option<(u64, Instant)>,
    stopped: bool,
}

/// What a refusal of a token by an API leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The token is being replaced: wait for the new one.
    Replace,
    /// The API refuses fresh tokens: the replacement is deferred; return the refusal.
    BackingOff,
}

/// The store shared by the handles and the refresher.
pub(crate) struct Shared {
    pub(crate) current: ArcSwapOption<Token>,
    state: Mutex<State>,
    outcome: watch::Sender<Outcome>,
    /// Wakes the refresher to look at the state again (an invalidation).
    wake: Notify,
    /// Wakes the refresher to stop.
    close: Notify,
    closed: AtomicBool,
    /// The highest generation an API has accepted.
    accepted: AtomicU64,
    /// Whether a token has been asked for: the refresher of a lazy store waits for it before
    /// its first fetch.
    demanded: AtomicBool,
    pub(crate) max_wait: Duration,
    /// First delay and cap of the refusal backoff.
    refusal_backoff: (Duration, Duration),
    /// With DPoP: makes the proofs of the requests that carry this store's tokens.
    pub(crate) dpop: Option<Arc<Prover>>,
}

impl Shared {
    pub(crate) fn new(
        max_wait: Duration,
        policy: &RefreshPolicy,
        dpop: Option<Arc<Prover>>,
    ) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            state: Mutex::default(),
            outcome: watch::Sender::new(Outcome::None),
            wake: Notify::new(),
            close: Notify::new(),
            closed: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            demanded: AtomicBool::new(true),
            max_wait,
            refusal_backoff: (policy.refusal_backoff, policy.refusal_backoff_max),
            dpop,
        }
    }

    /// Makes the store lazy: no token is fetched until a request [demands](Self::demand) one.
    pub(crate) fn lazy(self) -> Self {
        self.demanded.store(false, Ordering::Relaxed);
        self
    }

    /// A request needs a token: wakes a lazy store's refresher for its first fetch. One
    /// relaxed load once that has happened.
    fn demand(&self) {
        if !self.demanded.load(Ordering::Relaxed) && !self.demanded.swap(true, Ordering::AcqRel) {
            tracing::debug!("first token demanded; the lazy refresher starts");
            self.wake.notify_one();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state holds no invariant a panic could break halfway; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current token if it is newer than `generation` and not expired.
    pub(crate) fn usable(&self, newer_than: u64) -> Option<Arc<Token>> {
        let token = self.current.load_full()?;
        (token.generation > newer_than && token.is_usable_at(Instant::now())).then_some(token)
    }

    /// Waits for a valid token newer than `newer_than`, for at most `max_wait`.
    ///
    /// Fails at once with the last error when the refresher is backing off past the deadline,
    /// and as soon as the fetch it waited for fails.
    pub(crate) async fn wait_for(
        &self,
        newer_than: u64,
        max_wait: Duration,
    ) -> Result<Arc<Token>, TokenUnavailable> {
        let deadline = deadline_after(max_wait);
        // Subscribe before looking, so a fetch that finishes in between is not missed.
        let mut outcomes = self.outcome.subscribe();
        self.demand();
        loop {
            if let Some(token) = self.usable(newer_than) {
                return Ok(token);
            }
            {
                let state = self.state();
                if state.stopped || self.closed.load(Ordering::Acquire) {
                    return Err(TokenUnavailable::Shutdown);
                }
                if !state.fetching
                    && let Some((error, _)) = &state.last_error
                    && state.next_attempt.is_none_or(|next| next > deadline)
                {
                    return Err(TokenUnavailable::FetchFailed(error.clone()));
                }
            }
            match tokio::time::timeout_at(deadline, outcomes.changed()).await {
                Ok(Ok(())) => match &*outcomes.borrow_and_update() {
                    Outcome::Failed(error) => {
                        return Err(TokenUnavailable::FetchFailed(error.clone()));
                    }
                    Outcome::Stopped => return Err(TokenUnavailable::Shutdown),
                    Outcome::Fetched | Outcome::None => {}
                },
                Ok(Err(_)) => return Err(TokenUnavailable::Shutdown),
                Err(_) => {
                    return Err(TokenUnavailable::TimedOut {
                        waited: max_wait,
                        last_error: self.state().last_error.as_ref().map(|(e, _)| e.clone()),
                    });
                }
            }
        }
    }

    /// Subscribes to fetch outcomes from now on.
    pub(crate) fn outcomes(&self) -> watch::Receiver<Outcome> {
        self.outcome.subscribe()
    }

    /// The first fetch outcome seen by `outcomes` (subscribed before the refresher started):
    /// the first token request's own result, not a later one's.
    pub(crate) async fn first_outcome(
        mut outcomes: watch::Receiver<Outcome>,
    ) -> Result<(), TokenError> {
        loop {
            if outcomes.changed().await.is_err() {
                break;
            }
            match &*outcomes.borrow_and_update() {
                Outcome::Fetched => return Ok(()),
                Outcome::Failed(error) => return Err(error.clone()),
                Outcome::Stopped => break,
                Outcome::None => {}
            }
        }
        Err(TokenError::transport(
            "the token refresher stopped before the first token arrived".into(),
        ))
    }

    /// An API answered a request that carried the token of `generation` with anything but a
    /// refusal. Costs one atomic load once the generation is known to be accepted.
    #[inline]
    pub(crate) fn accepted(&self, generation: u64) {
        if self.accepted.load(Ordering::Relaxed) < generation {
            self.newly_accepted(generation);
        }
    }

    /// [`accepted`](Self::accepted) the first time for `generation`: out of line, so that the
    /// check above inlines into every response's inspection.
    #[cold]
    #[inline(never)]
    fn newly_accepted(&self, generation: u64) {
        self.accepted.fetch_max(generation, Ordering::Relaxed);
        let mut state = self.state();
        if state.refusals > 1 {
            tracing::info!(generation, "a token was accepted; refusal backoff over");
        }
        state.refusals = 0;
        if state
            .deferred
            .is_some_and(|(deferred, _)| deferred <= generation)
        {
            state.deferred = None;
        }
    }

    /// The token of `generation` was refused by an API: replaces it, at once or after the
    /// refusal backoff (see the [module documentation](self)).
    pub(crate) fn refused(&self, generation: u64) -> Refusal {
        if self.usable(generation).is_some() {
            // A newer token is already held; nothing to discard.
            return Refusal::Replace;
        }
        let accepted = self.accepted.load(Ordering::Relaxed) >= generation;
        {
            let mut state = self.state();
            if generation <= state.invalidated {
                // Already asked for; wait for the same fetch.
                return Refusal::Replace;
            }
            if state
                .deferred
                .is_some_and(|(deferred, _)| deferred >= generation)
            {
                return Refusal::BackingOff;
            }
            if !accepted {
                state.refusals = state.refusals.saturating_add(1);
                if state.refusals > 1 {
                    let (first, max) = self.refusal_backoff;
                    let exponent = (state.refusals - 2).min(20);
                    let delay = first.saturating_mul(1 << exponent).min(max);
                    state.deferred = Some((generation, deadline_after(delay)));
                    tracing::warn!(
                        generation,
                        refused_in_a_row = state.refusals,
                        replace_in_ms = delay.as_millis() as u64,
                        "an API refused a fresh access token before accepting any; backing off"
                    );
                    drop(state);
                    // The refresher wakes at the deferred replacement.
                    self.wake.notify_one();
                    return Refusal::BackingOff;
                }
            }
            state.invalidated = generation;
        }
        // Withdraw the refused token now rather than when the refresher next runs, so the very
        // next request waits for the new token instead of meeting the same refusal. The
        // compare-and-swap never removes a newer token the refresher has just published.
        let current = self.current.load();
        if current.as_ref().is_some_and(|t| t.generation <= generation) {
            self.current.compare_and_swap(&*current, None);
        }
        tracing::debug!(
            generation,
            accepted,
            "token refused by the API; replacing it"
        );
        self.wake.notify_one();
        Refusal::Replace
    }

    /// Turns a deferred replacement that is due into an invalidation; returns when the one
    /// still pending is due.
    fn deferred_due(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        let (generation, at) = state.deferred?;
        if at > now {
            return Some(at);
        }
        state.deferred = None;
        state.invalidated = state.invalidated.max(generation);
        None
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close.notify_waiters();
        // In case the refresher is between checking the flag and waiting.
        self.close.notify_one();
    }
}

/// The furthest deadline the store sets: what tokio's own far-future sleeps use. Longer waits
/// (`Duration::MAX`, meaning "forever") are this long.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `wait` from now, saturating at [`FAR_FUTURE`]: no configured wait can overflow the clock.
pub(crate) fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(FAR_FUTURE)).unwrap_or(now)
}
