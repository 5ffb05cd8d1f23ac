//! The retry after a refusal: what a request keeps for it, and how the tower layer carries it
//! out. What a refusal leads to is decided in [`request_path`](crate::request_path), shared
//! with the reqwest middleware. The first response is released (body and connection) before
//! any wait.

use std::{future::Future, pin::Pin};

use http::{
    Extensions, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, request::Parts,
};
use smallvec::SmallVec;
use tower::ServiceExt;
use tower_service::Service;

use super::{Error, Replay};
pub(crate) use crate::request_path::{DpopBase, authorize};
use crate::{
    dpop,
    refresh::TokenHandle,
    request_path::{Config, after_retry, inspect, on_refusal},
};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The boxed future of a rare path (waiting for a token, retrying): the response, or the error.
pub(crate) type BoxResponseFuture<R, E> = BoxFuture<Result<R, Error<E>>>;

/// The headers of a request as a list, inline for the usual handful: copying a `HeaderMap`
/// allocates its index table and its entries on every request, this copy allocates nothing up
/// to [`INLINE_HEADERS`] headers (names and values are reference-counted). The map is rebuilt
/// only for a retry.
const INLINE_HEADERS: usize = 8;

type HeaderList = SmallVec<[(HeaderName, HeaderValue); INLINE_HEADERS]>;

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
    pub(crate) fn new(
        parts: &Parts,
        replay: Replay<B>,
        service: S,
        handle: TokenHandle,
        generation: u64,
        config: Config,
        dpop: DpopBase,
    ) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            extensions: parts.extensions.clone(),
            replay,
            service,
            handle,
            generation,
            config,
            dpop,
        }
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
            response.status(),
            response.headers(),
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
        let body = self.replay.take();
        let (Some(with), Some(body)) = (
            on_refusal(
                self.handle.shared(),
                self.generation,
                &self.dpop,
                first.status(),
                first.headers(),
                body.is_some(),
            ),
            body,
        ) else {
            return Err(first);
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
            let token = with.token(shared, generation, config.max_wait).await?;
            let mut request = Request::new(body);
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.version_mut() = version;
            let map = request.headers_mut();
            map.reserve(headers.len());
            for (name, value) in headers {
                map.append(name, value);
            }
            *request.extensions_mut() = extensions;
            request.headers_mut().remove(dpop::DPOP);
            authorize(shared, &mut request, &token, dpop.origin())?;
            let uri = request.uri().clone();
            let response = service.oneshot(request).await.map_err(Error::Inner)?;
            after_retry(
                shared,
                &uri,
                &dpop,
                token.generation,
                &config,
                response.status(),
                response.headers(),
            );
            Ok(response)
        }))
    }
}
