//! The retry after a refusal: what a request keeps for it, and how the tower layer carries it
//! out. What a refusal leads to is decided in [`request_path`](crate::request_path), shared
//! with the reqwest middleware. The first response is released (body and connection) before
//! any wait.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use http::{Extensions, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
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

/// The inner service a retry is sent through: one clone of it, made at the first request that
/// could be retried and shared by the service's clones and all their requests, which a retry
/// clones again and drives to readiness (as `tower::retry` does with its clone). Cloning the
/// inner service for every request instead cost, for hyper-util's `Client`, four reference
/// counts up and down per request, on cache lines that every task on every core shares.
pub(crate) struct RetryService<S>(Arc<OnceLock<Mutex<S>>>);

impl<S> RetryService<S> {
    pub(crate) fn new() -> Self {
        Self(Arc::new(OnceLock::new()))
    }

    /// The shared clone, made of `inner` if this is the first request.
    pub(crate) fn of(&self, inner: &S) -> Self
    where
        S: Clone,
    {
        self.0.get_or_init(|| Mutex::new(inner.clone()));
        Self(Arc::clone(&self.0))
    }

    /// A service for one retry: a clone of the shared one, not yet ready.
    fn make(&self) -> Option<S>
    where
        S: Clone,
    {
        let shared = self.0.get()?;
        Some(
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl<S> Clone for RetryService<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
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
    #[inline]
    fn new() -> Self {
        Self {
            inline: [const { None }; INLINE_HEADERS],
            len: 0,
            spilled: Vec::new(),
        }
    }

    // Inline: not generic, it was a call into this crate's code from the caller's for each
    // header.
    #[inline]
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

/// What a retry needs: a copy of the request's head, the body replay, the inner service to
/// clone (driven to readiness only if the retry happens, as `tower::retry` does), and the
/// generation of the token the first attempt carried. For a request with a DPoP-bound token it
/// is kept even without retries, to learn the server's nonce.
pub(crate) struct Retry<S, B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderList,
    extensions: Extensions,
    replay: Replay<B>,
    service: RetryService<S>,
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
        service: RetryService<S>,
        handle: TokenHandle,
        generation: u64,
        config: Config,
        dpop: DpopBase,
    ) -> Box<Self> {
        // The clones first, then the state written into its box in one go: with calls
        // between its fields, the inline header list was built on the stack and copied in
        // (a 576-byte `memset` and a 608-byte `memcpy` per request).
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let extensions = request.extensions().clone();
        let mut retry = Box::write(
            Box::new_uninit(),
            Self {
                method,
                uri,
                version: request.version(),
                headers: HeaderList::new(),
                extensions,
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
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        B: Send + 'static,
        ResBody: Send + 'static,
    {
        let body = self.replay.take();
        let (Some(with), Some(body), Some(service)) = (
            on_refusal(
                self.handle.shared(),
                self.generation,
                &self.dpop,
                first.status(),
                first.headers(),
                body.is_some(),
            ),
            body,
            self.service.make(),
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
            for (name, value) in headers.into_headers() {
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
