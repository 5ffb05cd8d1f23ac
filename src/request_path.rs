//! The request path's rules, shared by the two adapters that carry requests: the tower layer
//! ([`crate::layer`], and the token set's service built on it) and the reqwest middleware. One
//! place decides whether a request gets the token, puts the token (and a DPoP proof) on it,
//! reads what a response says about the token, and decides what a refusal leads to; the
//! adapters only move requests and responses.
//!
//! The decision after a refusal follows the store's rule (see the [refresh
//! module](crate::refresh)): a newer token already held is used at once; a refused token that
//! an API accepted before is replaced at once and the request waits for the new one; a fresh
//! token refused while the API refuses every fresh token leaves the refusal to the caller. A
//! refused DPoP proof or a missing nonce is about the proof, not the token: the same token goes
//! again with a new proof.

use std::{fmt, sync::Arc, time::Duration};

use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header::AUTHORIZATION,
};
use tokio::time::Instant;

use crate::{
    dpop::{self, Challenge, DpopError},
    error::TokenUnavailable,
    origin::Origin,
    refresh::{Refusal, Shared, TokenHandle},
    token::Token,
    www_authenticate,
};

/// A user's rule for "the token was refused".
pub(crate) type UnauthorizedFn = dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync;

/// The setters of the request-path options, written once for every type that holds them: the
/// tower layers and services ([`BearerAuthLayer`](crate::BearerAuthLayer),
/// [`BearerAuth`](crate::BearerAuth), [`TokenSetLayer`](crate::TokenSetLayer),
/// [`TokenSetAuth`](crate::TokenSetAuth)) and the reqwest middlewares. `config` is the path of
/// the type's [`Config`] field.
macro_rules! config_setters {
    ($($config:ident).+) => {
        /// Whether a refused request (401, or gRPC `UNAUTHENTICATED`) is retried once with a
        /// new token. Default: `true`. Off, the request path copies nothing per request, the
        /// refused token is still replaced, and a request with a DPoP-bound token still has its
        /// response read for a nonce.
        pub fn retry_unauthorized(mut self, retry: bool) -> Self {
            self.$($config).+.retry = retry;
            self
        }

        /// How long a request waits for a token when none is valid, and for the new token
        /// after a refusal; past it the request fails with
        /// [`TokenUnavailable`](crate::TokenUnavailable). Default: the `max_wait` of the
        /// handle or set this was made from
        /// ([`ClientCredentialsBuilder::max_wait`](crate::ClientCredentialsBuilder::max_wait),
        /// 30 s unless set).
        pub fn max_wait(mut self, wait: std::time::Duration) -> Self {
            self.$($config).+.max_wait = wait;
            self
        }

        /// Decides which responses mean "the token was refused", from their status and
        /// headers. Default: [`default_unauthorized`](crate::layer::default_unauthorized),
        /// status 401 or a `grpc-status: 16` (UNAUTHENTICATED) header.
        ///
        /// `rule` may capture what it needs (a per-API rule, a metrics handle): it is put
        /// behind an `Arc` once, here, and shared by every clone and request. A plain `fn`
        /// works too.
        ///
        /// ```
        /// # fn f(tokens: tower_client_credentials::TokenHandle) {
        /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
        /// use http::StatusCode;
        /// use tower_client_credentials::BearerAuthLayer;
        ///
        /// let refusals = Arc::new(AtomicU64::new(0));
        /// let counted = Arc::clone(&refusals);
        /// let layer = BearerAuthLayer::new(tokens).unauthorized_if(move |status, _| {
        ///     let refused = status == StatusCode::UNAUTHORIZED;
        ///     if refused {
        ///         counted.fetch_add(1, Ordering::Relaxed);
        ///     }
        ///     refused
        /// });
        /// # }
        /// ```
        pub fn unauthorized_if<F>(mut self, rule: F) -> Self
        where
            F: Fn(http::StatusCode, &http::HeaderMap) -> bool + Send + Sync + 'static,
        {
            self.$($config).+.unauthorized_if = Some(std::sync::Arc::new(rule));
            self
        }
    };
}
pub(crate) use config_setters;

/// [`config_setters`]' companion for the types that replay request bodies themselves (the
/// tower ones; reqwest clones its requests).
macro_rules! replay_limit_setter {
    ($($config:ident).+) => {
        /// The most request-body bytes kept for a retry; a larger body is sent once and its
        /// refusal returned (the token is still replaced). Default: 64 KiB.
        pub fn replay_limit(mut self, bytes: usize) -> Self {
            self.$($config).+.replay_limit = bytes;
            self
        }
    };
}
pub(crate) use replay_limit_setter;

/// The setter of where the token may go, written once like [`config_setters`]: `holder` is the
/// path (from `self`) of the struct with the `origins` field, empty for `self` itself.
macro_rules! allow_origins_setter {
    ($($holder:ident).*) => {
        /// Sends the token only to these origins (scheme, host, port). Requests to any other
        /// origin go out untouched: no token, and any `Authorization` header they carry is
        /// left alone. Default: every origin, as a client dedicated to one API expects; set
        /// this when the client can reach other hosts or follows redirects.
        ///
        /// ```
        /// # fn f(tokens: tower_client_credentials::TokenHandle) -> Result<(), tower_client_credentials::ConfigError> {
        /// use tower_client_credentials::{BearerAuthLayer, Origin};
        ///
        /// let layer = BearerAuthLayer::new(tokens).allow_origins([
        ///     "https://api.example.com".parse::<Origin>()?,
        ///     "https://files.example.com:8443".parse()?,
        /// ]);
        /// # Ok(()) }
        /// ```
        pub fn allow_origins(
            mut self,
            origins: impl IntoIterator<Item = crate::Origin>,
        ) -> Self {
            self$(.$holder)*.origins = Some(origins.into_iter().collect());
            self
        }
    };
}
pub(crate) use allow_origins_setter;

/// The DPoP origin setter of the tower types, whose requests may have a relative URI; `holder`
/// as for [`allow_origins_setter`].
macro_rules! dpop_origin_setter {
    ($($holder:ident).*) => {
        /// The origin in the `htu` of the DPoP proofs of requests whose URI is relative (a
        /// tonic channel's requests carry only the path; the channel adds its origin below
        /// this layer). Absolute URIs use their own origin. Default: none, and a relative
        /// request with a DPoP-bound token fails with
        /// [`DpopError::RelativeUri`](crate::DpopError::RelativeUri). Not needed for bearer
        /// tokens.
        pub fn dpop_origin(mut self, origin: crate::Origin) -> Self {
            self$(.$holder)*.dpop_origin = Some(std::sync::Arc::new(origin));
            self
        }
    };
}
pub(crate) use dpop_origin_setter;

/// Per-layer settings, cloned into every service (and into a request's retry state).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) retry: bool,
    pub(crate) replay_limit: usize,
    pub(crate) max_wait: Duration,
    /// `None` is [`default_unauthorized`]: no reference count to bump when the config is
    /// cloned per request. A user's rule is boxed once, when it is set.
    pub(crate) unauthorized_if: Option<Arc<UnauthorizedFn>>,
}

impl Config {
    pub(crate) fn new(handle: &TokenHandle) -> Self {
        Self::with_max_wait(handle.shared().max_wait)
    }

    /// The defaults, waiting at most `max_wait` for a token.
    pub(crate) fn with_max_wait(max_wait: Duration) -> Self {
        Self {
            retry: true,
            replay_limit: 64 * 1024,
            max_wait,
            unauthorized_if: None,
        }
    }

    /// Whether a response with this status and these headers refuses the token. Inline, as
    /// [`inspect`].
    #[inline]
    pub(crate) fn is_unauthorized(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        match &self.unauthorized_if {
            None => default_unauthorized(status, headers),
            Some(rule) => rule(status, headers),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("retry", &self.retry)
            .field("replay_limit", &self.replay_limit)
            .field("max_wait", &self.max_wait)
            .field("custom_unauthorized_if", &self.unauthorized_if.is_some())
            .finish()
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The layer's default rule for "the token was refused": status 401, or a gRPC response with
/// `grpc-status: 16` (UNAUTHENTICATED) in its headers, as a server's auth interceptor sends it
/// (a trailers-only response). For a rule of your own that extends it:
///
/// ```
/// # fn f(tokens: tower_client_credentials::TokenHandle) {
/// use http::StatusCode;
/// use tower_client_credentials::{BearerAuthLayer, layer::default_unauthorized};
///
/// // This API answers 403 to an expired token.
/// let layer = BearerAuthLayer::new(tokens).unauthorized_if(|status, headers| {
///     status == StatusCode::FORBIDDEN || default_unauthorized(status, headers)
/// });
/// # }
/// ```
#[inline]
pub fn default_unauthorized(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        || headers
            .get(GRPC_STATUS)
            .is_some_and(|value| value.as_bytes() == b"16")
}

/// Whether the token may go with a request to `uri`: always without an allowlist, and always
/// to a relative URI (it goes to the inner client's fixed origin, as a tonic channel's does).
/// Inlined: without an allowlist (the default) it is one comparison on every request.
#[inline]
pub(crate) fn authorizes(origins: Option<&[Origin]>, uri: &Uri) -> bool {
    match origins {
        None => true,
        Some(_) if uri.host().is_none() => true,
        Some(origins) => origins.iter().any(|origin| origin.matches(uri)),
    }
}

/// Logs a request that goes out without the token because its origin is not allowed.
pub(crate) fn not_authorized(uri: &Uri) {
    tracing::debug!(
        origin = ?Origin::from_uri(uri),
        "request to an origin not allowed for the token; sending it without"
    );
}

/// Waits for a token when the store holds none that is valid: for the fetch in flight (there
/// is at most one), at most `max_wait`.
pub(crate) async fn wait_for_token(
    shared: &Shared,
    max_wait: Duration,
) -> Result<Arc<Token>, TokenUnavailable> {
    let started = Instant::now();
    let waited = shared.wait_for(0, max_wait).await;
    crate::metrics::waited(started.elapsed());
    match waited {
        Ok(token) => {
            tracing::trace!(
                waited_ms = started.elapsed().as_millis() as u64,
                "request waited for an access token"
            );
            Ok(token)
        }
        Err(error) => {
            tracing::debug!(
                waited_ms = started.elapsed().as_millis() as u64,
                error = %error,
                "request failed waiting for an access token"
            );
            Err(error)
        }
    }
}

/// Puts `token` in `request`: its `Authorization` header (a reference-count increment) and,
/// for a DPoP-bound token, a fresh proof. Inlined into the request path; the proof is not.
#[inline(always)]
pub(crate) fn authorize<B>(
    shared: &Shared,
    request: &mut Request<B>,
    token: &Token,
    dpop_base: Option<&Origin>,
) -> Result<(), DpopError> {
    request
        .headers_mut()
        .insert(AUTHORIZATION, token.header_value().clone());
    match &token.ath {
        None => Ok(()),
        Some(ath) => add_proof(shared, request, ath, dpop_base),
    }
}

/// The DPoP proof of a request with a DPoP-bound token (`ath`: the token's hash), out of line.
#[inline(never)]
fn add_proof<B>(
    shared: &Shared,
    request: &mut Request<B>,
    ath: &str,
    dpop_base: Option<&Origin>,
) -> Result<(), DpopError> {
    let proof = api_proof(shared, request.method(), request.uri(), dpop_base, ath)?;
    request.headers_mut().insert(dpop::DPOP, proof);
    Ok(())
}

/// The DPoP proof of a request with a token whose `ath` is `ath`.
pub(crate) fn api_proof(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    dpop_base: Option<&Origin>,
    ath: &str,
) -> Result<HeaderValue, DpopError> {
    // A token is DPoP-bound only when the handle has a prover.
    let prover = shared.dpop.as_ref().ok_or(DpopError::RelativeUri)?;
    prover.api_proof(method, uri, dpop_base, ath)
}

/// How a request that carried a DPoP proof finds the origin of a relative URI.
#[derive(Clone, Debug, Default)]
pub(crate) enum DpopBase {
    /// The request carried no proof.
    #[default]
    None,
    /// It carried one; relative URIs take this origin, if any.
    Proof(Option<Arc<Origin>>),
}

impl DpopBase {
    pub(crate) fn origin(&self) -> Option<&Origin> {
        match self {
            Self::None => None,
            Self::Proof(origin) => origin.as_deref(),
        }
    }
}

/// Learns a DPoP nonce from a response to a request to `uri` that carried a proof, and reports
/// the token of `generation` accepted when the response is neither a refusal nor a server
/// error. Returns whether it is a refusal. `uri` is read only for a request with a proof.
/// Inline: called for every response with retries on, from the caller's instantiation of the
/// response future.
#[inline]
pub(crate) fn inspect(
    shared: &Shared,
    uri: &Uri,
    dpop: &DpopBase,
    generation: u64,
    config: &Config,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    if let (DpopBase::Proof(base), Some(prover)) = (dpop, &shared.dpop) {
        prover.learn_api_nonce(uri, base.as_deref(), headers);
    }
    let refused = config.is_unauthorized(status, headers);
    if !refused && !status.is_server_error() {
        shared.accepted(generation);
    }
    refused
}

/// Whether a refusal of a request that carried a DPoP proof is about the proof (a nonce to
/// use, a proof refused), not the token.
pub(crate) fn is_proof_challenge(dpop: &DpopBase, headers: &HeaderMap) -> bool {
    matches!(dpop, DpopBase::Proof(_))
        && matches!(
            dpop::challenge(headers),
            Some(Challenge::UseNonce | Challenge::InvalidProof)
        )
}

/// What a refused request is retried with.
#[derive(Debug)]
pub(crate) enum RetryWith {
    /// The same token with a new proof: the refusal was about the DPoP proof.
    NewProof(Arc<Token>),
    /// A newer token that a sibling already brought.
    Newer(Arc<Token>),
    /// The token that replaces the refused one, once it is fetched.
    Next,
}

/// Decides what the refusal (`status`, `headers`) of a request that carried the token of
/// `generation` leads to: the retry's token, or `None` to return the refusal as it is (the
/// body cannot be sent again, or the API refuses every fresh token). Tells the store.
pub(crate) fn on_refusal(
    shared: &Shared,
    generation: u64,
    dpop: &DpopBase,
    status: StatusCode,
    headers: &HeaderMap,
    replayable: bool,
) -> Option<RetryWith> {
    tracing::debug!(
        status = status.as_u16(),
        challenge_error = www_authenticate::challenge_error(headers).as_deref(),
        generation,
        "request unauthorized"
    );
    let proof_only = is_proof_challenge(dpop, headers);
    if !replayable {
        if proof_only {
            tracing::debug!("request body cannot be replayed; not retrying with a new proof");
        } else {
            // The body cannot be sent again; still make sure the next request gets a new
            // token.
            shared.refused(generation);
            tracing::debug!("request body cannot be replayed; not retrying");
        }
        return None;
    }
    if proof_only {
        match shared.current.load_full() {
            Some(token) => Some(RetryWith::NewProof(token)),
            None => {
                tracing::debug!("no access token for a new proof; returning the refusal");
                None
            }
        }
    } else if let Some(token) = shared.usable(generation) {
        Some(RetryWith::Newer(token))
    } else {
        match shared.refused(generation) {
            Refusal::Replace => Some(RetryWith::Next),
            Refusal::BackingOff => None,
        }
    }
}

impl RetryWith {
    /// The retry's token: at hand, or the next one, waited for at most `max_wait`. Counts and
    /// logs the retry once the token is there.
    pub(crate) async fn token(
        self,
        shared: &Shared,
        generation: u64,
        max_wait: Duration,
    ) -> Result<Arc<Token>, TokenUnavailable> {
        let (token, proof_only) = match self {
            Self::NewProof(token) => (token, true),
            Self::Newer(token) => (token, false),
            Self::Next => (
                shared
                    .wait_for(generation, max_wait)
                    .await
                    .inspect_err(|error| {
                        tracing::debug!(%error, "no new access token for the retry");
                    })?,
                false,
            ),
        };
        tracing::debug!(
            generation = token.generation,
            new_proof_only = proof_only,
            "retrying request"
        );
        crate::metrics::retried();
        Ok(token)
    }
}

/// Reads the retry's answer: it teaches what the first one would have (a nonce, and whether
/// the token of `generation` is accepted, or refused too, which the refusal backoff counts).
pub(crate) fn after_retry(
    shared: &Shared,
    uri: &Uri,
    dpop: &DpopBase,
    generation: u64,
    config: &Config,
    status: StatusCode,
    headers: &HeaderMap,
) {
    if inspect(shared, uri, dpop, generation, config, status, headers)
        && !is_proof_challenge(dpop, headers)
    {
        shared.refused(generation);
    }
}
