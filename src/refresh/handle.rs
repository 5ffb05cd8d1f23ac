use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use super::Shared;
use crate::{
    error::{TokenError, TokenUnavailable},
    token::Token,
};

/// A handle to a token kept fresh by a [`Refresher`](super::Refresher).
///
/// Cheap to clone; every clone sees the same token. Give one to each
/// [`BearerAuthLayer`](crate::BearerAuthLayer). When the last clone is dropped the refresher
/// stops.
#[derive(Clone)]
pub struct TokenHandle {
    inner: Arc<Inner>,
}

/// Closes the store when the last handle goes away.
struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl TokenHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            inner: Arc::new(Inner { shared }),
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub(crate) fn shared_arc(&self) -> Arc<Shared> {
        Arc::clone(&self.inner.shared)
    }

    /// The current token, if one is held and not expired. Never waits.
    pub fn current(&self) -> Option<Arc<Token>> {
        self.shared().usable(0)
    }

    /// A valid token: the current one, or the next one fetched, waiting at most the configured
    /// [`max_wait`](crate::ClientCredentialsBuilder::max_wait).
    pub async fn token(&self) -> Result<Arc<Token>, TokenUnavailable> {
        self.shared().wait_for(0, self.shared().max_wait).await
    }

    /// Reports that `token` was refused by an API (for callers that handle 401s themselves).
    ///
    /// The rule is the one [`BearerAuth`](crate::BearerAuth) follows (see
    /// [`ClientCredentialsBuilder::refused_token_backoff`](crate::ClientCredentialsBuilder::refused_token_backoff)):
    /// a token that an API [accepted](Self::accepted) before is replaced at once; a fresh one
    /// refused before any acceptance is replaced at once the first time, then after a growing
    /// delay. Returns `true` when a new token is on its way (wait for it with
    /// [`token`](Self::token)), `false` when `token` is not this handle's current token (a
    /// newer one is already held, or it came from another handle) or its replacement is
    /// deferred.
    pub fn invalidate(&self, token: &Token) -> bool {
        self.holds(token) && self.shared().refused(token.generation) == super::Refusal::Replace
    }

    /// Reports that an API accepted `token` (for callers that handle 401s themselves): a later
    /// refusal of it then means that it expired or was revoked, and it is replaced at once.
    /// Tokens of other handles are ignored.
    pub fn accepted(&self, token: &Token) {
        if self.holds(token) {
            self.shared().accepted(token.generation);
        }
    }

    /// Whether `token` is the very token this handle holds now (not an equal one of another
    /// handle's).
    fn holds(&self, token: &Token) -> bool {
        self.shared()
            .current
            .load()
            .as_deref()
            .is_some_and(|held| std::ptr::eq(held, token))
    }

    /// Stops the refresher. Requests waiting for a token fail with
    /// [`TokenUnavailable::Shutdown`], and later ones too.
    pub fn shutdown(&self) {
        self.shared().close();
    }

    /// The DPoP key the tokens are bound to, when [DPoP](crate::dpop) is on. Its
    /// [`thumbprint`](crate::DpopKey::thumbprint) is the `jkt` the server binds tokens to.
    pub fn dpop_key(&self) -> Option<&crate::DpopKey> {
        self.shared().dpop.as_deref().map(|prover| prover.key())
    }

    /// A snapshot for health checks and diagnostics.
    pub fn status(&self) -> TokenStatus {
        let token = self.current();
        let state = self.shared().state();
        let now = Instant::now();
        TokenStatus {
            valid: token.is_some(),
            generation: token.as_ref().map(|t| t.generation),
            expires_in: token
                .as_ref()
                .map(|t| t.expires_at.saturating_duration_since(now)),
            last_success: state.last_success,
            last_error: state.last_error.clone(),
            next_attempt_in: state
                .next_attempt
                .map(|at| at.saturating_duration_since(now)),
            refused_in_a_row: state.refusals,
            replacement_deferred_for: state
                .deferred
                .map(|(_, at)| at.saturating_duration_since(now)),
            running: !state.stopped
                && !self
                    .shared()
                    .closed
                    .load(std::sync::atomic::Ordering::Acquire),
        }
    }
}

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHandle")
            .field("status", &self.status())
            .finish()
    }
}

/// The state of a [`TokenHandle`], for health checks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenStatus {
    /// Whether a valid token is held right now.
    pub valid: bool,
    /// The generation of the held token.
    pub generation: Option<u64>,
    /// How long the held token remains valid.
    pub expires_in: Option<Duration>,
    /// When a token was last obtained.
    pub last_success: Option<SystemTime>,
    /// The last failed token request and when it happened. Cleared by the next success.
    pub last_error: Option<(TokenError, SystemTime)>,
    /// When the refresher will next ask for a token, if it has scheduled that.
    pub next_attempt_in: Option<Duration>,
    /// How many fresh tokens in a row an API refused before accepting any; 0 once one is
    /// accepted. Above 1, the refused token's replacement is deferred (refusal backoff).
    pub refused_in_a_row: u32,
    /// When the refusal backoff defers the replacement of a refused token: how long until it
    /// is replaced.
    pub replacement_deferred_for: Option<Duration>,
    /// Whether the refresher is still running.
    pub running: bool,
}
