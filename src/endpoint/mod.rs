//! The token-endpoint client: builds the token request (with a signed client assertion when
//! the client authenticates with one), sends it through the configured HTTP client with a
//! timeout and a body-size limit, and turns the answer into a token or a [`TokenError`]. Also
//! discovery of the token endpoint from the authorization server's metadata.

mod assertion;
mod discovery;
mod federated;
mod proxy;
mod request;
mod response;
mod transport;

use std::{sync::Arc, time::Duration};

use http_body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;
use zeroize::Zeroizing;

#[cfg(feature = "reqwest")]
pub use self::transport::ReqwestTransport;
pub(crate) use self::{
    assertion::DEFAULT_ASSERTION_LIFETIME,
    discovery::{check_issuer, choose_auth_method, discover},
    request::{AssertionOptions, Credential},
    transport::TlsOptions,
};
pub use self::{
    assertion::{AssertionAudience, ClientKey, SigningAlgorithm},
    discovery::DiscoveryError,
    federated::ClientAssertion,
    proxy::Proxies,
    request::{AuthMethod, RequestFormat},
};
#[cfg(fuzzing)]
pub(crate) use self::{discovery::parse as parse_discovery, response::retry_after};
pub(crate) use self::{
    request::{Parameters, PreparedRequest},
    transport::{HttpClient, boxed, default_client},
};
/// A token response and the lifetime worked out for it: what every source issues.
pub(crate) use crate::source::IssuedToken as Fetched;
#[cfg(feature = "redis")]
pub(crate) use crate::source::TokenResponse;
use crate::{
    dpop::{DPOP, Prover},
    error::TokenError,
    source::{BoxFetch, DynSource},
    token::{self, ExpirySource},
};

/// Sends token requests: the built-in [`TokenSource`](crate::TokenSource). Cheap to clone. The
/// timeout of a request is applied by the [`Fetcher`](crate::source::Fetcher) that holds it.
#[derive(Clone)]
pub(crate) struct TokenEndpoint {
    pub(crate) request: PreparedRequest,
    pub(crate) expiry: ExpirySource,
    pub(crate) default_lifetime: Duration,
    pub(crate) client: HttpClient,
    pub(crate) max_body: usize,
    /// With DPoP: the prover and the token endpoint's `htu`.
    pub(crate) dpop: Option<(Arc<Prover>, Arc<str>)>,
}

impl DynSource for TokenEndpoint {
    fn fetch_boxed(&self) -> BoxFetch<'_> {
        Box::pin(self.exchange())
    }
}

impl TokenEndpoint {
    /// Requests a token once.
    async fn exchange(&self) -> Result<Fetched, TokenError> {
        let mut nonce_retry = false;
        loop {
            let mut request = self.request.to_request().await?;
            if let Some((prover, htu)) = &self.dpop {
                request
                    .headers_mut()
                    .insert(DPOP, prover.token_request_proof(htu));
            }
            let sent = tokio::time::Instant::now();
            let response = self
                .client
                .clone()
                .oneshot(request)
                .await
                .map_err(TokenError::transport)?;
            let (parts, body) = response.into_parts();
            let got_nonce = self
                .dpop
                .as_ref()
                .is_some_and(|(prover, _)| prover.learn_server_nonce(&parts.headers));
            let body = read_limited(body, self.max_body).await?;
            let response = match response::parse(parts.status, &parts.headers, &body) {
                // RFC 9449 §8: send the request again with the nonce just received, once.
                Err(error)
                    if error.oauth_error() == Some("use_dpop_nonce")
                        && got_nonce
                        && !nonce_retry =>
                {
                    tracing::debug!("token endpoint asked for a DPoP nonce; sending again");
                    nonce_retry = true;
                    continue;
                }
                result => result?,
            };
            match (&self.dpop, response.is_dpop()) {
                (Some(_), false) => {
                    return Err(TokenError::NotDpopBound {
                        token_type: response.token_type.clone().unwrap_or_default(),
                    });
                }
                (None, true) => {
                    return Err(TokenError::UnsupportedTokenType {
                        token_type: response.token_type.clone().unwrap_or_default(),
                    });
                }
                _ => {}
            }
            let lifetime = token::lifetime(
                self.expiry,
                response.expires_in,
                &response.access_token,
                self.default_lifetime,
                std::time::SystemTime::now(),
                sent.elapsed(),
            )
            .map_err(|reason| {
                response::invalid_response(parts.status, &parts.headers, &body, reason)
            })?;
            if let Some(skew) = lifetime.skew {
                warn_skew_once(skew);
            }
            return Ok(Fetched {
                response,
                lifetime: lifetime.duration,
            });
        }
    }
}

/// Logs, once per process, that a JWT's `exp` and `expires_in` disagree by more than clock
/// skew and rounding explain, so `expires_in` is used.
fn warn_skew_once(skew: f64) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            exp_minus_expires_in_secs = skew,
            "the access token's `exp` disagrees with `expires_in` by more than clock skew \
             and rounding explain; using `expires_in` (is this machine's clock off?)"
        );
    }
}

/// Reads the whole body, failing as soon as it passes `limit` bytes.
///
/// (Not `http_body_util::Limited`: its generic `Into<BoxError>` bound makes this future fail
/// the `Send` check, rust-lang/rust#102211.)
///
/// The copy is zeroed when dropped: a token response holds the access token.
async fn read_limited(
    mut body: transport::ResponseBody,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(TokenError::BodyTooLarge { limit });
    }
    // Reserved up front (bounded by the limit) so that growing never leaves copies behind.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let mut buffer = Zeroizing::new(Vec::with_capacity(expected.min(limit)));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(TokenError::transport)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(TokenError::BodyTooLarge { limit });
            }
            if buffer.capacity() < buffer.len() + data.len() {
                // Grow into a new zeroing buffer rather than let `Vec` reallocate and free the
                // old one unzeroed.
                let mut grown = Zeroizing::new(Vec::with_capacity(
                    (buffer.len() + data.len())
                        .max(buffer.capacity().saturating_mul(2))
                        .min(limit),
                ));
                grown.extend_from_slice(&buffer);
                buffer = grown;
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer)
}

/// Whether `host` (a URI's host, IPv6 literals in brackets) is this machine: `localhost` or a
/// loopback address, where plain `http` is allowed.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
