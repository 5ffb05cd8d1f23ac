use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{
    Extensions, HeaderMap, HeaderValue, Method, Request, Response, Uri, Version,
    header::{AUTHORIZATION, WWW_AUTHENTICATE},
    request::Parts,
};
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_service::Service;

use std::sync::Arc;

use super::{Origin, Replay, service::Config};
use crate::{
    dpop::{self, Challenge},
    error::BoxError,
    refresh::TokenHandle,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// The response future of [`BearerAuth`](super::BearerAuth).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // The request went out with a token; with `retry`, it may go out once more.
        Called {
            #[pin]
            future: S::Future,
            // Boxed: the retry state is large, and inline it would make every response
            // future that big, retry or not.
            retry: Option<Box<Retry<S, B>>>,
        },
        // Waiting for a token, or retrying: the rare paths, boxed.
        Boxed {
            future: BoxFuture<Result<S::Response, BoxError>>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn direct(future: S::Future) -> Self {
        Self {
            state: State::Called {
                future,
                retry: None,
            },
        }
    }

    pub(crate) fn retryable(future: S::Future, retry: Retry<S, B>) -> Self {
        Self {
            state: State::Called {
                future,
                retry: Some(Box::new(retry)),
            },
        }
    }

    /// A request that fails before it is sent.
    pub(crate) fn failed(error: impl Into<BoxError>) -> Self
    where
        S::Response: Send + 'static,
    {
        Self::boxed(Box::pin(std::future::ready(Err(error.into()))))
    }

    pub(crate) fn boxed(future: BoxFuture<Result<S::Response, BoxError>>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future, retry } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let Some(retry) = retry.take() else {
                        return Poll::Ready(Ok(response));
                    };
                    retry.learn_dpop_nonce(response.headers());
                    if !retry.config.retry
                        || !(retry.config.is_unauthorized)(response.status(), response.headers())
                    {
                        return Poll::Ready(Ok(response));
                    }
                    match (*retry).into_retry(response) {
                        Ok(future) => this.state.set(State::Boxed { future }),
                        Err(response) => return Poll::Ready(Ok(response)),
                    }
                }
                StateProj::Boxed { future } => return future.as_mut().poll(cx),
            }
        }
    }
}

/// What a retry needs: a copy of the request's head, the body replay, a clone of the inner
/// service, and the generation of the token the first attempt carried. For a request with a
/// DPoP-bound token it is kept even without retries, to learn the server's nonce.
pub(crate) struct Retry<S, B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    replay: Replay<B>,
    service: S,
    handle: TokenHandle,
    generation: u64,
    pub(crate) config: Config,
    /// `Some` when the request carried a DPoP proof: the origin for relative URIs, if any.
    dpop: Option<Option<Arc<Origin>>>,
}

impl<S, B> Retry<S, B> {
    pub(crate) fn new(
        parts: &Parts,
        replay: Replay<B>,
        service: S,
        handle: TokenHandle,
        generation: u64,
        config: Config,
        dpop: Option<Option<Arc<Origin>>>,
    ) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
            replay,
            service,
            handle,
            generation,
            config,
            dpop,
        }
    }

    /// Keeps the nonce of a response to a DPoP request (RFC 9449 §9).
    fn learn_dpop_nonce(&self, headers: &HeaderMap) {
        if let (Some(base), Some(prover)) = (&self.dpop, &self.handle.shared().dpop) {
            prover.learn_api_nonce(&self.uri, base.as_deref(), headers);
        }
    }

    /// The retry of a request whose `first` response was unauthorized, or that response back
    /// when the request cannot be retried.
    fn into_retry<ResBody>(
        self,
        first: Response<ResBody>,
    ) -> Result<BoxFuture<Result<Response<ResBody>, BoxError>>, Response<ResBody>>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        ResBody: Send + 'static,
    {
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(challenge_error);
        tracing::debug!(
            status = first.status().as_u16(),
            challenge_error = challenge.as_deref(),
            generation = self.generation,
            "request unauthorized"
        );
        let shared = self.handle.shared();
        // A refused proof or a missing nonce is about the proof, not the token: send the same
        // token again with a new proof (which carries the nonce just learned).
        let proof_only = self.dpop.is_some()
            && matches!(
                dpop::challenge(first.headers()),
                Some(Challenge::UseNonce | Challenge::InvalidProof)
            );
        let Some(body) = self.replay.take() else {
            if proof_only {
                tracing::debug!("request body cannot be replayed; not retrying with a new proof");
                return Err(first);
            }
            // The body cannot be sent again; still make sure the next request gets a new token.
            shared.invalidate(self.generation);
            tracing::debug!("request body cannot be replayed; not retrying");
            return Err(first);
        };
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
            let token = if proof_only {
                handle.shared().current.load_full()
            } else {
                handle
                    .shared()
                    .after_unauthorized(generation, config.max_wait)
                    .await
            };
            let Some(token) = token else {
                tracing::debug!("no new access token for the retry; returning the 401");
                return Ok(first);
            };
            let mut request = Request::new(body);
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.version_mut() = version;
            *request.headers_mut() = headers;
            *request.extensions_mut() = extensions;
            request
                .headers_mut()
                .insert(AUTHORIZATION, token.header_value().clone());
            request.headers_mut().remove(dpop::DPOP);
            if let Some(ath) = &token.ath {
                let base = dpop.flatten();
                match super::service::dpop_proof(handle.shared(), &request, base.as_deref(), ath) {
                    Ok(proof) => {
                        request.headers_mut().insert(dpop::DPOP, proof);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "no DPoP proof for the retry; returning the 401");
                        return Ok(first);
                    }
                }
            }
            // Release the first response (and its connection) before sending again.
            drop(first);
            tracing::debug!(
                generation = token.generation,
                new_proof_only = proof_only,
                "retrying request"
            );
            crate::metrics::retried();
            service.oneshot(request).await.map_err(Into::into)
        }))
    }
}

/// The `error` parameter of a `WWW-Authenticate: Bearer error="…"` challenge (RFC 6750 §3).
fn challenge_error(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let start = text.find("error=")? + "error=".len();
    let rest = &text[start..];
    let code = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([',', ' ']).next()?,
    };
    // Error codes are short ASCII tokens; anything else is not worth logging.
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_graphic())).then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_errors() {
        let parse = |s: &'static str| challenge_error(&HeaderValue::from_static(s));
        assert_eq!(
            parse(r#"Bearer realm="api", error="invalid_token", error_description="expired""#),
            Some("invalid_token".into())
        );
        assert_eq!(
            parse("Bearer error=insufficient_scope"),
            Some("insufficient_scope".into())
        );
        assert_eq!(parse(r#"Bearer realm="api""#), None);
    }
}
