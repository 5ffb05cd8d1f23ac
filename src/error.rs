//! Errors: configuration mistakes, token-endpoint failures, and what a request sees when no
//! token can be had.
//!
//! - [`ConfigError`] comes out of [`ClientCredentialsBuilder::build`] and names the option that
//!   is wrong. Nothing is sent before the configuration is known to be usable.
//! - [`TokenError`] describes one failed token request. Every variant says whether it is
//!   [transient](TokenError::is_transient) (worth retrying soon: network, timeout, 5xx, 429) or
//!   permanent (bad credentials, bad scope, a response that is not a usable token).
//! - [`TokenUnavailable`] is what [`BearerAuth`] returns, as
//!   [`BearerAuthError::TokenUnavailable`](crate::BearerAuthError::TokenUnavailable), when a
//!   request could not get a token; a [`BoxError`] made from that error downcasts to it.
//!
//! No error carries a secret: neither the client secret nor any access token appears in their
//! `Display` or `Debug` output. Response excerpts are shortened and long token-like runs are
//! redacted.
//!
//! [`ClientCredentialsBuilder::build`]: crate::ClientCredentialsBuilder::build
//! [`BearerAuth`]: crate::BearerAuth

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use http::StatusCode;

/// A type-erased error, as accepted from user-supplied HTTP clients; a
/// [`BearerAuthError`](crate::BearerAuthError) converts into one.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A configuration that cannot work, reported by
/// [`ClientCredentialsBuilder::build`](crate::ClientCredentialsBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The token endpoint is not an absolute `http` or `https` URL.
    InvalidTokenUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The token endpoint uses plain `http` on a host that is not loopback, and
    /// [`allow_insecure_http`](crate::ClientCredentialsBuilder::allow_insecure_http) was not set.
    InsecureTokenUrl {
        /// The endpoint's host.
        host: String,
    },
    /// The token endpoint is `https` but the crate was built without a TLS transport (the
    /// `rustls` feature) and no HTTP client was supplied.
    NoTlsTransport,
    /// TLS could not be set up, for the token endpoint's built-in transport (for instance, no
    /// root certificates were found) or the shared cache's Redis connection.
    Tls {
        /// What went wrong.
        reason: String,
    },
    /// A request parameter is unusable (empty client id, a parameter name we set ourselves, …).
    InvalidParameter {
        /// The parameter's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A client key for `private_key_jwt` cannot be used (unparsable, unsupported algorithm,
    /// public part not matching). The message never contains key material.
    InvalidClientKey {
        /// What is wrong with the key.
        reason: String,
    },
    /// A timing or size option is outside its accepted range, which the option's
    /// documentation states.
    InvalidTiming {
        /// The option's name, such as `max_response_size` or `shared_cache.lease_timeout`.
        name: &'static str,
        /// The accepted range and the value given.
        reason: String,
    },
    /// A proxy of the built-in transport is unusable: from `HTTPS_PROXY` or another variable
    /// (see [`Proxies::from_env`](crate::Proxies::from_env)), or set with
    /// [`Proxies`](crate::Proxies). The message names the setting, never its value, which may
    /// hold a password.
    InvalidProxy {
        /// The variable (`HTTPS_PROXY`, `https_proxy`, …) or the `Proxies` method.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// For the range tests of the builders: the option a `build()` result refused, or `None` when
/// it built. Panics unless the refusal is a timing error whose message names the option and
/// says what it must be.
#[cfg(test)]
pub(crate) fn refused_option<T>(result: Result<T, ConfigError>) -> Option<&'static str> {
    match result {
        Ok(_) => None,
        Err(error @ ConfigError::InvalidTiming { name, .. }) => {
            let text = error.to_string();
            assert!(text.contains(name) && text.contains("must be"), "{text}");
            Some(name)
        }
        Err(other) => panic!("not a timing error: {other}"),
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTokenUrl { reason } => write!(f, "invalid token endpoint URL: {reason}"),
            Self::InsecureTokenUrl { host } => write!(
                f,
                "token endpoint uses plain http on non-loopback host `{host}`; use https or \
                 opt in with `allow_insecure_http(true)`"
            ),
            Self::NoTlsTransport => f.write_str(
                "token endpoint is https but the `rustls` feature is disabled and no HTTP \
                 client was supplied",
            ),
            // The reason names the connection: the token endpoint's transport or the shared
            // cache's Redis.
            Self::Tls { reason } => write!(f, "cannot set up TLS: {reason}"),
            Self::InvalidParameter { name, reason } => {
                write!(f, "invalid token request parameter `{name}`: {reason}")
            }
            Self::InvalidClientKey { reason } => write!(f, "invalid client key: {reason}"),
            Self::InvalidTiming { name, reason } => write!(f, "invalid `{name}`: {reason}"),
            Self::InvalidProxy { setting, reason } => {
                write!(f, "invalid proxy in `{setting}`: {reason}")
            }
        }
    }
}

impl StdError for ConfigError {}

/// Why a token request failed.
///
/// Cloning is cheap enough for the error path: one failed fetch is handed to every request
/// that was waiting for it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TokenError {
    /// The authorization server answered with an RFC 6749 §5.2 error response.
    OAuth {
        /// The HTTP status of the response.
        status: StatusCode,
        /// The `error` code, such as `invalid_client` or `invalid_scope`.
        error: String,
        /// The `error_description`, if any (shortened).
        description: Option<String>,
        /// The `error_uri`, if any.
        uri: Option<String>,
        /// The `Retry-After` delay, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// The server answered with an error status and a body that is not an OAuth error.
    Http {
        /// The HTTP status of the response.
        status: StatusCode,
        /// The `Content-Type` of the response, if any.
        content_type: Option<String>,
        /// A short, redacted excerpt of the body.
        excerpt: String,
        /// The `Retry-After` delay, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// The server answered with a success status but the body is not a usable token response.
    InvalidResponse {
        /// The HTTP status of the response.
        status: StatusCode,
        /// The `Content-Type` of the response, if any.
        content_type: Option<String>,
        /// What is wrong with the body.
        reason: String,
        /// A short, redacted excerpt or outline of the body.
        excerpt: String,
    },
    /// The server issued a token of a type this client cannot use (`mac`, …), or a `DPoP`
    /// token to a client without a [DPoP key](crate::ClientCredentialsBuilder::dpop).
    UnsupportedTokenType {
        /// The `token_type` the server sent.
        token_type: String,
    },
    /// A DPoP-bound token was asked for, but the server issued another kind (usually
    /// `Bearer`: the server, or this client's registration there, does not do DPoP). The token
    /// is not used: sent as a bearer token it would lose the protection DPoP was turned on for.
    NotDpopBound {
        /// The `token_type` the server sent (empty when it sent none).
        token_type: String,
    },
    /// The server answered with a redirect. Token requests never follow redirects.
    Redirect {
        /// The HTTP status of the response.
        status: StatusCode,
        /// The origin (scheme, host, port) the server pointed to, if it gave a usable location.
        location: Option<String>,
    },
    /// The response body was larger than the configured limit.
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request or the response body did not complete within the configured timeout.
    Timeout {
        /// The configured timeout.
        after: Duration,
    },
    /// The client assertion (`private_key_jwt`, `client_secret_jwt`) could not be signed.
    /// Not expected with a key that was checked when the configuration was built.
    ClientAssertion {
        /// Why signing failed.
        reason: String,
    },
    /// The request could not be sent or the response not read: connection refused or reset,
    /// DNS failure, TLS failure, a broken body stream.
    Transport {
        /// The underlying error.
        source: Arc<dyn StdError + Send + Sync>,
    },
    /// A [`TokenSource`](crate::TokenSource) of your own, or a client assertion read from
    /// outside, failed. Made by [`TokenError::transient`] and [`TokenError::permanent`].
    Source {
        /// Whether trying again soon may help.
        transient: bool,
        /// What went wrong.
        source: Arc<dyn StdError + Send + Sync>,
    },
}

impl TokenError {
    /// Whether retrying soon may succeed: network errors, timeouts, 5xx, 408 and 429, and
    /// `temporarily_unavailable` and `use_dpop_nonce` errors.
    ///
    /// Permanent errors (bad credentials, bad scope, a malformed response) are retried too,
    /// but slowly, since credentials get rotated and fixed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::OAuth { status, error, .. } => {
                // `use_dpop_nonce`: the next attempt carries the nonce (RFC 9449 §8).
                status_is_transient(*status)
                    || error == "temporarily_unavailable"
                    || error == "use_dpop_nonce"
            }
            Self::Http { status, .. } => status_is_transient(*status),
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Source { transient, .. } => *transient,
            Self::InvalidResponse { .. }
            | Self::UnsupportedTokenType { .. }
            | Self::NotDpopBound { .. }
            | Self::Redirect { .. }
            | Self::BodyTooLarge { .. }
            | Self::ClientAssertion { .. } => false,
        }
    }

    /// The delay the server asked for in `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::OAuth { retry_after, .. } | Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of the response, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::OAuth { status, .. }
            | Self::Http { status, .. }
            | Self::InvalidResponse { status, .. }
            | Self::Redirect { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The OAuth `error` code (`invalid_client`, `invalid_scope`, …), when the server sent one.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            Self::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A short label of the variant, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OAuth { .. } => "oauth",
            Self::Http { .. } => "http_status",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::UnsupportedTokenType { .. } => "unsupported_token_type",
            Self::NotDpopBound { .. } => "not_dpop_bound",
            Self::Redirect { .. } => "redirect",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::ClientAssertion { .. } => "client_assertion",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
            Self::Source { .. } => "source",
        }
    }

    /// A failure of a [`TokenSource`](crate::TokenSource) that trying again soon may cure (a
    /// network error, an overloaded service): the refresher retries with backoff and keeps
    /// serving the current token meanwhile. Its message must not contain a secret.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Source {
            transient: true,
            source: Arc::from(error.into()),
        }
    }

    /// A failure of a [`TokenSource`](crate::TokenSource) that needs a fix (bad credentials,
    /// a misconfiguration): the refresher retries slowly
    /// ([`permanent_retry`](crate::ClientCredentialsBuilder::permanent_retry)), and requests
    /// waiting for a token fail with it at once. Its message must not contain a secret.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Source {
            transient: false,
            source: Arc::from(error.into()),
        }
    }

    pub(crate) fn transport(error: BoxError) -> Self {
        Self::Transport {
            source: Arc::from(error),
        }
    }
}

/// An error and its causes, `: `-separated, as `anyhow`'s `{:#}` prints them: what the crate
/// logs, since an error's own `Display` leaves its cause to `source()`.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        // Bounded: a cyclic or absurdly deep chain is cut off.
        for _ in 0..16 {
            let Some(next) = cause else { break };
            write!(f, ": {next}")?;
            cause = next.source();
        }
        Ok(())
    }
}

fn status_is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OAuth {
                status,
                error,
                description,
                ..
            } => {
                write!(f, "token endpoint returned `{error}` (HTTP {status})")?;
                if let Some(description) = description {
                    write!(f, ": {description}")?;
                }
                Ok(())
            }
            Self::Http {
                status,
                content_type,
                excerpt,
                ..
            } => {
                write!(f, "token endpoint returned HTTP {status}")?;
                write_body_outline(f, content_type.as_deref(), excerpt)
            }
            Self::InvalidResponse {
                status,
                content_type,
                reason,
                excerpt,
            } => {
                write!(f, "invalid token response (HTTP {status}): {reason}")?;
                write_body_outline(f, content_type.as_deref(), excerpt)
            }
            Self::UnsupportedTokenType { token_type }
                if token_type.eq_ignore_ascii_case("dpop") =>
            {
                f.write_str(
                    "token endpoint issued a DPoP-bound token, but this client has no DPoP key; \
                     configure one with `ClientCredentialsBuilder::dpop`",
                )
            }
            Self::UnsupportedTokenType { token_type } => write!(
                f,
                "token endpoint issued a `{token_type}` token; only `Bearer` and `DPoP` tokens are \
                 supported"
            ),
            Self::NotDpopBound { token_type } => write!(
                f,
                "a DPoP-bound token was requested, but the token endpoint issued {}; the \
                 server (or this client's registration) does not do DPoP",
                if token_type.is_empty() {
                    "a token without `token_type` (a bearer token)".to_owned()
                } else {
                    format!("a `{token_type}` token")
                }
            ),
            Self::Redirect { status, location } => {
                write!(f, "token endpoint answered with redirect HTTP {status}")?;
                match location {
                    Some(origin) => write!(f, " to {origin}")?,
                    None => f.write_str(" without a usable location")?,
                }
                f.write_str("; token requests do not follow redirects")
            }
            Self::BodyTooLarge { limit } => {
                write!(f, "token response body exceeds the limit of {limit} bytes")
            }
            Self::Timeout { after } => {
                write!(f, "token request did not complete within {after:?}")
            }
            Self::ClientAssertion { reason } => {
                write!(f, "cannot sign the client assertion: {reason}")
            }
            // The cause is `source()`'s alone: printing it here too would print it twice in
            // every report that walks the chain (`anyhow`'s `{:#}`, `tracing` with `Chain`).
            Self::Transport { .. } => f.write_str(
                "token request failed: the token endpoint could not be reached or its response \
                 not read",
            ),
            Self::Source { transient, .. } => f.write_str(if *transient {
                "the token source failed (transient)"
            } else {
                "the token source failed (permanent)"
            }),
        }
    }
}

fn write_body_outline(
    f: &mut fmt::Formatter<'_>,
    content_type: Option<&str>,
    excerpt: &str,
) -> fmt::Result {
    match content_type {
        Some(content_type) => write!(f, " with content type `{content_type}`")?,
        None => f.write_str(" with no content type")?,
    }
    if excerpt.is_empty() {
        f.write_str(" and an empty body")
    } else {
        write!(f, ", body: {excerpt}")
    }
}

impl StdError for TokenError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Transport { source } | Self::Source { source, .. } => {
                Some(&**source as &(dyn StdError + 'static))
            }
            _ => None,
        }
    }
}

/// A request could not be given a token. Returned by [`BearerAuth`](crate::BearerAuth) (as
/// [`BearerAuthError::TokenUnavailable`](crate::BearerAuthError::TokenUnavailable)) instead of
/// sending the request without one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TokenUnavailable {
    /// The token request this request waited for failed.
    FetchFailed(TokenError),
    /// No token arrived within the configured wait.
    TimedOut {
        /// How long the request waited.
        waited: Duration,
        /// The most recent token request failure, if any.
        last_error: Option<TokenError>,
    },
    /// The token handle was shut down.
    Shutdown,
}

impl TokenUnavailable {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::FetchFailed(error) => error.is_transient(),
            Self::TimedOut { last_error, .. } => {
                last_error.as_ref().is_none_or(TokenError::is_transient)
            }
            Self::Shutdown => false,
        }
    }

    /// The token request failure behind this error, if any.
    pub fn token_error(&self) -> Option<&TokenError> {
        match self {
            Self::FetchFailed(error) => Some(error),
            Self::TimedOut { last_error, .. } => last_error.as_ref(),
            Self::Shutdown => None,
        }
    }
}

impl fmt::Display for TokenUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FetchFailed(_) => f.write_str("no access token: the token request failed"),
            Self::TimedOut { waited, .. } => {
                write!(f, "no access token arrived within {waited:?}")
            }
            Self::Shutdown => f.write_str("no access token: the token handle was shut down"),
        }
    }
}

impl StdError for TokenUnavailable {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.token_error().map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let oauth = |status: u16, code: &str| TokenError::OAuth {
            status: StatusCode::from_u16(status).unwrap(),
            error: code.into(),
            description: None,
            uri: None,
            retry_after: None,
        };
        assert!(!oauth(401, "invalid_client").is_transient());
        assert!(!oauth(400, "invalid_scope").is_transient());
        assert!(oauth(503, "temporarily_unavailable").is_transient());
        assert!(oauth(400, "temporarily_unavailable").is_transient());
        assert!(oauth(400, "use_dpop_nonce").is_transient());
        assert!(!oauth(400, "invalid_dpop_proof").is_transient());
        assert!(oauth(429, "slow_down").is_transient());
        assert!(
            TokenError::Timeout {
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(!TokenError::BodyTooLarge { limit: 1 }.is_transient());
        assert!(
            TokenUnavailable::TimedOut {
                waited: Duration::ZERO,
                last_error: None
            }
            .is_transient()
        );
        assert!(!TokenUnavailable::Shutdown.is_transient());
    }

    #[test]
    fn display_names_the_cause() {
        let e = TokenError::OAuth {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client".into(),
            description: Some("bad secret".into()),
            uri: None,
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "token endpoint returned `invalid_client` (HTTP 401 Unauthorized): bad secret"
        );
        let e = TokenError::Http {
            status: StatusCode::BAD_GATEWAY,
            content_type: Some("text/html".into()),
            excerpt: "<html>Bad gateway</html>".into(),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "token endpoint returned HTTP 502 Bad Gateway with content type `text/html`, body: \
             <html>Bad gateway</html>"
        );
        let wrapped = TokenUnavailable::FetchFailed(e);
        assert!(wrapped.source().unwrap().to_string().contains("502"));
    }

    /// The API guidelines' rule: a cause is printed by whoever walks `source()`, not by the
    /// error's own `Display`, so `anyhow`'s `{:#}` (here `Chain`) names it exactly once.
    #[test]
    fn transport_cause_is_printed_once_in_a_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
        let error = TokenError::transport(Box::new(io));
        assert!(!error.to_string().contains("refused by peer"), "{error}");
        assert_eq!(error.source().unwrap().to_string(), "refused by peer");
        let chain = Chain(&error).to_string();
        assert_eq!(chain.matches("refused by peer").count(), 1, "{chain}");
        let wrapped = TokenUnavailable::FetchFailed(error);
        let chain = Chain(&wrapped).to_string();
        assert_eq!(
            chain,
            "no access token: the token request failed: token request failed: the token \
             endpoint could not be reached or its response not read: refused by peer"
        );
    }
}
