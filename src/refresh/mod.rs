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
//! - After a failure it backs off (exponentially, with jitter, honouring `Retry-After`) and
//!   keeps serving the current token while it is valid. It never gives up and never dies on an
//!   error.
//! - It stops when the last [`TokenHandle`] is dropped, or on [`TokenHandle::shutdown`].

mod handle;
mod policy;
mod refresher;

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

pub(crate) use self::policy::RefreshPolicy;
#[cfg(feature = "redis")]
pub(crate) use self::refresher::Obtained;
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
    /// When a 401 last made us discard a token.
    last_invalidation: Option<Instant>,
    stopped: bool,
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
    pub(crate) max_wait: Duration,
    invalidation_cooldown: Duration,
    /// With DPoP: makes the proofs of the requests that carry this store's tokens.
    pub(crate) dpop: Option<Arc<Prover>>,
}

impl Shared {
    pub(crate) fn new(
        max_wait: Duration,
        invalidation_cooldown: Duration,
        dpop: Option<Arc<Prover>>,
    ) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            state: Mutex::default(),
            outcome: watch::Sender::new(Outcome::None),
            wake: Notify::new(),
            close: Notify::new(),
            closed: AtomicBool::new(false),
            max_wait,
            invalidation_cooldown,
            dpop,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state holds no invariant a panic could break halfway; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current token if it is newer than `generation` and not expired.
    fn usable(&self, newer_than: u64) -> Option<Arc<Token>> {
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
        let deadline = Instant::now() + max_wait;
        // Subscribe before looking, so a fetch that finishes in between is not missed.
        let mut outcomes = self.outcome.subscribe();
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

    /// A request that carried the token of `generation` was refused. Returns a newer token to
    /// retry with, waiting for one for at most `max_wait`, or `None` when no retry is worth it.
    pub(crate) async fn after_unauthorized(
        &self,
        generation: u64,
        max_wait: Duration,
    ) -> Option<Arc<Token>> {
        if let Some(token) = self.usable(generation) {
            // A sibling already brought a newer token.
            return Some(token);
        }
        if !self.invalidate(generation) {
            return None;
        }
        self.wait_for(generation, max_wait).await.ok()
    }

    /// Asks the refresher to discard the token of `generation` (if it is still current) and
    /// fetch a new one. Returns `false` when a 401 already made us discard a token within the
    /// cooldown: a second one so soon means the API rejects fresh tokens too, and fetching again
    /// would only load the authorization server.
    pub(crate) fn invalidate(&self, generation: u64) -> bool {
        if self.usable(generation).is_some() {
            // A newer token is already held; nothing to discard.
            return true;
        }
        {
            let mut state = self.state();
            if generation <= state.invalidated {
                // Already asked for; wait for the same fetch.
                return true;
            }
            let now = Instant::now();
            if state
                .last_invalidation
                .is_some_and(|at| now.duration_since(at) < self.invalidation_cooldown)
            {
                tracing::debug!(
                    generation,
                    "token refused again within the invalidation cooldown; not refreshing"
                );
                return false;
            }
            state.invalidated = generation;
            state.last_invalidation = Some(now);
        }
        // Withdraw the refused token now rather than when the refresher next runs, so the very
        // next request waits for the new token instead of meeting the same refusal. The
        // compare-and-swap never removes a newer token the refresher has just published.
        let current = self.current.load();
        if current.as_ref().is_some_and(|t| t.generation <= generation) {
            self.current.compare_and_swap(&*current, None);
        }
        tracing::debug!(generation, "token refused by the API; refreshing");
        self.wake.notify_one();
        true
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close.notify_waiters();
        // In case the refresher is between checking the flag and waiting.
        self.close.notify_one();
    }
}
