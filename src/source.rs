//! Where tokens come from: the [`TokenSource`] trait.
//!
//! The refresher, [`TokenHandle`](crate::TokenHandle), [`BearerAuthLayer`](crate::BearerAuthLayer)
//! and the shared cache do not care how a token is obtained. The built-in client-credentials
//! request ([`ClientCredentials::builder`](crate::ClientCredentials::builder)) is one source;
//! [`ClientCredentials::from_source`](crate::ClientCredentials::from_source) puts any other
//! behind the same refresh schedule, single flight, 401 retry and backoff: a token exchange, a
//! cloud metadata endpoint, a vault, or a closure in a test.
//!
//! # Testing code that uses the layer
//!
//! A closure source ([`source_fn`]) stands in for the authorization server, so a unit test of
//! your own client needs no server and no network. On tokio's paused clock the refresh
//! schedule runs in no time:
//!
//! ```
//! use std::{
//!     sync::{Arc, atomic::{AtomicU32, Ordering}},
//!     time::Duration,
//! };
//! use tower_client_credentials::{ClientCredentials, IssuedToken, source_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let fetches = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&fetches);
//! let tokens = ClientCredentials::from_source(source_fn(move || {
//!     let n = counter.fetch_add(1, Ordering::Relaxed);
//!     async move { Ok(IssuedToken::bearer(format!("test-token-{n}"), Duration::from_secs(300))) }
//! }))
//! .build()?
//! .start()
//! .await?;
//! assert_eq!(tokens.current().unwrap().access_token(), "test-token-0");
//! // Give `tokens` to a `BearerAuthLayer` around a `tower::service_fn` that plays your API.
//! # Ok(())
//! # }
//! ```
//!
//! Failures are [`TokenError::transient`] (retried with backoff while the current token is
//! served) or [`TokenError::permanent`] (retried slowly; requests waiting for a token get it).

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use zeroize::Zeroizing;

use crate::{error::TokenError, token};

/// Obtains access tokens: the one thing the refresher asks of where tokens come from.
///
/// Implement it for a token source of your own, and hand it to
/// [`ClientCredentials::from_source`](crate::ClientCredentials::from_source); or make one from
/// a closure with [`source_fn`]. The refresher calls [`fetch`](Self::fetch) once at a time,
/// before the current token expires, after a failure (with backoff), and when an API refuses
/// the token, within the configured
/// [`timeout`](crate::TokenSourceBuilder::timeout).
///
/// # Example
///
/// A source that reads a token another process keeps fresh in a file:
///
/// ```
/// use std::{path::PathBuf, time::Duration};
/// use tower_client_credentials::{IssuedToken, TokenError, TokenSource};
///
/// struct FileToken {
///     path: PathBuf,
/// }
///
/// impl TokenSource for FileToken {
///     async fn fetch(&self) -> Result<IssuedToken, TokenError> {
///         let text = std::fs::read_to_string(&self.path)
///             // Missing or unreadable: perhaps being rewritten; try again soon.
///             .map_err(|error| TokenError::transient(format!("token file: {}", error.kind())))?;
///         Ok(IssuedToken::bearer(text.trim(), Duration::from_secs(60)))
///     }
/// }
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// Obtains a new token, or says why not and whether trying again soon may help
    /// ([`TokenError::is_transient`]).
    fn fetch(&self) -> impl Future<Output = Result<IssuedToken, TokenError>> + Send;
}

/// A token source made from a closure that returns a future. Made by [`source_fn`].
#[derive(Clone)]
pub struct SourceFn<F> {
    f: F,
}

/// Makes a [`TokenSource`] of `f`: each fetch calls it and awaits the future it returns. The
/// way to test code that uses the layer without an authorization server (see the
/// [module documentation](self)).
pub fn source_fn<F, Fut>(f: F) -> SourceFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<IssuedToken, TokenError>> + Send,
{
    SourceFn { f }
}

impl<F, Fut> TokenSource for SourceFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<IssuedToken, TokenError>> + Send,
{
    fn fetch(&self) -> impl Future<Output = Result<IssuedToken, TokenError>> + Send {
        (self.f)()
    }
}

impl<F> fmt::Debug for SourceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFn").finish_non_exhaustive()
    }
}

/// A token obtained by a [`TokenSource`]: the access token, its lifetime and its scope.
///
/// `Debug` never shows the token.
#[derive(Clone)]
pub struct IssuedToken {
    pub(crate) response: TokenResponse,
    /// How long the token lives, counted from when the fetch started.
    pub(crate) lifetime: Duration,
}

impl IssuedToken {
    /// A bearer token that lives for `lifetime` from when the fetch started. Lifetimes above
    /// 365 days are taken as 365 days.
    ///
    /// The token must be visible ASCII (what RFC 6750 allows), or the fetch fails with a
    /// permanent error when the refresher takes it.
    pub fn bearer(access_token: impl Into<String>, lifetime: Duration) -> Self {
        let lifetime = lifetime.min(token::MAX_LIFETIME);
        Self {
            response: TokenResponse {
                access_token: Zeroizing::new(access_token.into()),
                expires_in: Some(lifetime),
                scope: None,
                token_type: Some(token::BEARER.to_owned()),
            },
            lifetime,
        }
    }

    /// The scope the token was granted, as the server would write it (space-separated).
    /// Default: none.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.response.scope = Some(scope.into());
        self
    }

    /// How long the token lives, counted from when its fetch started.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The granted scope, if known.
    pub fn scope(&self) -> Option<&str> {
        self.response.scope.as_deref()
    }

    /// The `Authorization` scheme the token goes out with: `Bearer`, or `DPoP` for the
    /// built-in source with a [DPoP key](crate::ClientCredentialsBuilder::dpop).
    pub fn token_type(&self) -> &str {
        if self.response.is_dpop() {
            token::DPOP
        } else {
            token::BEARER
        }
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type())
            .field("lifetime", &self.lifetime)
            .field("scope", &self.response.scope)
            .finish()
    }
}

/// A successful token response, checked.
#[derive(Clone, PartialEq)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: Zeroizing<String>,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) scope: Option<String>,
    /// The `token_type`, when the server sent one: `Bearer` or `DPoP`, as spelled by the
    /// server.
    pub(crate) token_type: Option<String>,
}

impl TokenResponse {
    /// Whether the token is DPoP-bound (`token_type` `DPoP`, in any case).
    pub(crate) fn is_dpop(&self) -> bool {
        self.token_type
            .as_deref()
            .is_some_and(|kind| kind.eq_ignore_ascii_case("dpop"))
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// A boxed fetch, borrowing its source.
pub(crate) type BoxFetch<'a> =
    Pin<Box<dyn Future<Output = Result<IssuedToken, TokenError>> + Send + 'a>>;

/// [`TokenSource`] made object-safe: what the refresher holds. The built-in token endpoint
/// implements it directly (it may issue DPoP tokens); other sources through [`Adapter`].
pub(crate) trait DynSource: Send + Sync {
    fn fetch_boxed(&self) -> BoxFetch<'_>;
}

/// A user's source behind [`DynSource`]: only bearer tokens (a DPoP token needs the built-in
/// source's proofs).
struct Adapter<S>(S);

impl<S: TokenSource> DynSource for Adapter<S> {
    fn fetch_boxed(&self) -> BoxFetch<'_> {
        Box::pin(async move {
            let mut issued = self.0.fetch().await?;
            let access_token = issued.response.access_token.as_str();
            // RFC 6750's b64token is visible ASCII; anything else cannot go into a header.
            if access_token.is_empty() || !access_token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenError::permanent(
                    "the token source issued an empty access token or one that is not visible \
                     ASCII",
                ));
            }
            issued.response.token_type = Some(token::BEARER.to_owned());
            Ok(issued)
        })
    }
}

/// The source a refresher fetches from, with the timeout of one fetch. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Fetcher {
    source: Arc<dyn DynSource>,
    /// The longest one fetch may take.
    pub(crate) timeout: Duration,
}

impl Fetcher {
    pub(crate) fn new(source: Arc<dyn DynSource>, timeout: Duration) -> Self {
        Self { source, timeout }
    }

    /// A fetcher of a user's source.
    pub(crate) fn of<S: TokenSource>(source: S, timeout: Duration) -> Self {
        Self::new(Arc::new(Adapter(source)), timeout)
    }

    /// Fetches one token, within the timeout.
    pub(crate) async fn fetch(&self) -> Result<IssuedToken, TokenError> {
        match tokio::time::timeout(self.timeout, self.source.fetch_boxed()).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Timeout {
                after: self.timeout,
            }),
        }
    }
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A token for the refresher to publish, from the source itself or from the shared cache.
pub(crate) struct Obtained {
    pub(crate) fetched: IssuedToken,
    /// When the token's lifetime started, if not when this refresh began: a token adopted from
    /// the shared cache was requested earlier, by another replica.
    pub(crate) issued_at: Option<tokio::time::Instant>,
    /// Whether this refresh made a token request (not so for a token from the shared cache).
    pub(crate) requested: bool,
}
