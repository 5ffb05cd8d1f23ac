//! The retry after a refusal: what a request keeps for it, and what a refusal leads to.
//!
//! The decision follows the store's rule (see the [refresh module](crate::refresh)): a newer
//! token already held is used at once; a refused token that an API accepted before is
//! replaced at once and the request waits for the new one; a fresh token refused while the
//! API refuses every fresh token leaves the refusal to the caller. The first response is
//! released (body and connection) before any wait.

use std::{future::Future, pin::Pin, sync::Arc};

use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version,
    header::AUTHORIZATION,
};
use tower::ServiceExt;
use tower_service::Service;

use super::{Error, Origin, Replay, config::Config};
use crate::{
    dpop::{self, Challenge, DpopError},
    refresh::{Refusal, Shared, TokenHandle},
    token::Token,
    www_authenticate,
};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The boxed future of a rare path (waiting for a token, retrying): the response, or the error.
pub(crate) type BoxResponseFuture<R, E> = BoxFuture<Result<R, Error<E>>>;

/// Puts `token` in `request`: its `Authorization` header (a reference-count increment) and,
/// for a DPoP-bound token, a fresh proof.
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
fn add_proof<B>(
    shared: &Shared,
    request: &mut Request<B>,
    ath: &str,
    dpop_base: Option<&Origin>,
) -> Result<(), DpopError> {
    // A token is DPoP-bound only when the handle has a prover.
    let prover = shared.dpop.as_ref().ok_or(DpopError::RelativeUri)?;
    let proof = prover.api_proof(request.method(), request.uri(), dpop_base, ath)?;
    request.headers_mut().insert(dpop::DPOP, proof);
    Ok(())
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
    fn origin(&self) -> Option<&Origin> {
        match self {
            Self::None => None,
            Self::Proof(origin) => origin.as_deref(),
        }
    }
}

/// The headers of a request as a list, inline for the usual handful: copying a `HeaderMap`
/// allocates its index table and its entries on every request, this copy allocates nothing up
/// to [`INLINE_HEADERS`] headers (names and values are reference-counted). The map is rebuilt
/// only for a retry.
const INLINE_HEADERS: usize = 8;

type Header = (HeaderName, HeaderValue);

/// The list: the first [`INLINE_HEADERS`] headers inline, the rest (rare) in a `Vec`. Every
/// slot starts as `None` (one store each), so the retry state is written straight into its box;
/// an inline vector with uninitialized slots (`SmallVec`) was built on the stack and copied in
/// whole, 592 bytes, twice.
struct HeaderList {
    inline: [Option<Header>; INLINE_HEADERS],
    len: usize,
    spilled: Vec<Header>,
}

impl HeaderList {
    fn new() -> Self {
        Self {
            inline: [const { None }; INLINE_HEADERS],
            len: 0,
            spilled: Vec::new(),
        }
    }

    fn push(&mut self, header: Header) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(header);
                self.len += 1;
            }
            None => self.spilled.push(header),
        }
    }

    /// The headers in the order they were pushed.
    fn into_headers(self) -> impl Iterator<Item = Header> {
        self.inline.into_iter().flatten().chain(self.spilled)
    }

    fn len(&self) -> usize {
        self.len + self.spilled.len()
    }
}

/// What a retry needs: a copy of the request's head, the body replay, a clone of the inner
/// service (driven to readiness only if the retry happens, as `tower::retry` does), and the
/// generation of the token the first attempt carried. For a request with a DPoP-bound token it
/// is kept even without retries, to learn the server's nonce.
pub(crate) struct Retry<S, B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderList,
    extensions: Extensions,
    replay: Replay<B>,
    service: S,
    handle: TokenHandle,
    generation: u64,
    pub(crate) config: Config,
    dpop: DpopBase,
}

impl<S, B> Retry<S, B> {
    /// The retry state of `request`, taken before the token goes in (the retry puts its own):
    /// one allocation, filled in place, so that the large inline header list is never moved.
    /// The body's replay is set by the caller once the body has been split.
    pub(crate) fn new(
        request: &Request<B>,
        service: S,
        handle: TokenHandle,
        generation: u64,
        config: Config,
        dpop: DpopBase,
    ) -> Box<Self> {
        // Allocated first and written in place: built on the stack and then boxed, the
        // retry state (mostly its inline header list) was copied twice.
        let mut retry = Box::write(
            Box::new_uninit(),
            Self {
                method: request.method().clone(),
                uri: request.uri().clone(),
                version: request.version(),
                headers: HeaderList::new(),
                extensions: request.extensions().clone(),
                replay: Replay::none(),
                service,
                handle,
                generation,
                config,
                dpop,
            },
        );
        for (name, value) in request.headers() {
            retry.headers.push((name.clone(), value.clone()));
        }
        retry
    }

    /// How the body is sent again.
    pub(crate) fn set_replay(&mut self, replay: Replay<B>) {
        self.replay = replay;
    }

    /// Looks at the response to the first attempt: keeps its DPoP nonce, and tells the store
    /// whether the token was accepted. Returns whether the response is a refusal to retry.
    pub(crate) fn inspect<ResBody>(&self, response: &Response<ResBody>) -> bool {
        inspect(
            self.handle.shared(),
            &self.uri,
            &self.dpop,
            self.generation,
            &self.config,
            response,
        )
    }

    /// The retry of a request whose `first` response was a refusal, or that response back
    /// when the request is not to be retried.
    pub(crate) fn into_retry<ResBody>(
        self,
        first: Response<ResBody>,
    ) -> Result<BoxResponseFuture<Response<ResBody>, S::Error>, Response<ResBody>>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        B: Send + 'static,
        ResBody: Send + 'static,
    {
        let shared = self.handle.shared();
        tracing::debug!(
            status = first.status().as_u16(),
            challenge_error = www_authenticate::challenge_error(first.headers()).as_deref(),
            generation = self.generation,
            "request unauthorized"
        );
        // A refused proof or a missing nonce is about the proof, not the token: send the same
        // token again with a new proof (which carries the nonce just learned).
        let proof_only = is_proof_challenge(&self.dpop, first.headers());
        let Some(body) = self.replay.take() else {
            if proof_only {
                tracing::debug!("request body cannot be replayed; not retrying with a new proof");
            } else {
                // The body cannot be sent again; still make sure the next request gets a new
                // token.
                shared.refused(self.generation);
                tracing::debug!("request body cannot be replayed; not retrying");
            }
            return Err(first);
        };
        // The token to retry with, if it is known now.
        let ready = if proof_only {
            match shared.current.load_full() {
                Some(token) => Some(token),
                None => {
                    tracing::debug!("no access token for a new proof; returning the refusal");
                    return Err(first);
                }
            }
        } else if let Some(token) = shared.usable(self.generation) {
            // A sibling already brought a newer token.
            Some(token)
        } else {
            match shared.refused(self.generation) {
                Refusal::Replace => None,
                Refusal::BackingOff => return Err(first),
            }
        };
        // Release the first response (its body, and so its connection) before waiting or
        // sending again.
        drop(first);
        let Self {
            method,
            uri,
            version,
            headers,
            extensions,
            service,
            handle,
            generation,
            config,
            dpop,
            ..
        } = self;
        Ok(Box::pin(async move {
            let shared = handle.shared();
            let token = match ready {
                Some(token) => token,
                None => shared
                    .wait_for(generation, config.max_wait)
                    .await
                    .inspect_err(|error| {
                        tracing::debug!(%error, "no new access token for the retry");
                    })?,
            };
            let mut request = Request::new(body);
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.version_mut() = version;
            let map = request.headers_mut();
            map.reserve(headers.len());
            for (name, value) in headers.into_headers() {
                map.append(name, value);
            }
            *request.extensions_mut() = extensions;
            request.headers_mut().remove(dpop::DPOP);
            authorize(shared, &mut request, &token, dpop.origin())?;
            tracing::debug!(
                generation = token.generation,
                new_proof_only = proof_only,
                "retrying request"
            );
            crate::metrics::retried();
            let uri = request.uri().clone();
            let response = service.oneshot(request).await.map_err(Error::Inner)?;
            // The retry's answer teaches what the first one would have: a nonce, and whether
            // the new token is accepted (or refused too, which the refusal backoff counts).
            if inspect(shared, &uri, &dpop, token.generation, &config, &response)
                && !is_proof_challenge(&dpop, response.headers())
            {
                shared.refused(token.generation);
            }
            Ok(response)
        }))
    }
}

/// Learns a DPoP nonce from `response` to a request that carried a proof, and reports the
/// token of `generation` accepted when the response is neither a refusal nor a server error.
/// Returns whether it is a refusal.
fn inspect<ResBody>(
    shared: &Shared,
    uri: &Uri,
    dpop: &DpopBase,
    generation: u64,
    config: &Config,
    response: &Response<ResBody>,
) -> bool {
    if let (DpopBase::Proof(base), Some(prover)) = (dpop, &shared.dpop) {
        prover.learn_api_nonce(uri, base.as_deref(), response.headers());
    }
    let refused = config.is_unauthorized(response.status(), response.headers());
    if !refused && !response.status().is_server_error() {
        shared.accepted(generation);
    }
    refused
}

/// Whether a refusal of a request that carried a DPoP proof is about the proof (a nonce to
/// use, a proof refused), not the token.
fn is_proof_challenge(dpop: &DpopBase, headers: &HeaderMap) -> bool {
    matches!(dpop, DpopBase::Proof(_))
        && matches!(
            dpop::challenge(headers),
            Some(Challenge::UseNonce | Challenge::InvalidProof)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the inline slots the list spills into its `Vec`, in order: a request with many
    /// headers is retried with all of them, as they were.
    #[test]
    fn the_header_list_keeps_every_header_in_order() {
        let mut list = HeaderList::new();
        let headers: Vec<Header> = (0..INLINE_HEADERS + 3)
            .map(|i| {
                (
                    HeaderName::from_bytes(format!("x-h{}", i % 5).as_bytes()).unwrap(),
                    HeaderValue::from(i),
                )
            })
            .collect();
        for header in headers.iter().cloned() {
            list.push(header);
        }
        assert_eq!(list.len(), INLINE_HEADERS + 3);
        assert_eq!(list.into_headers().collect::<Vec<_>>(), headers);
    }
}
