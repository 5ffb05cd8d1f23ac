//! What the two mock servers share: collecting a request body, the in-memory response future,
//! and serving a handler over HTTP/1 and HTTP/2 on `127.0.0.1:0`.

use std::{
    fmt,
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinSet};

use super::{BoxBody, BoxError};

/// A mock server's request handler, over a fully read request.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    /// Answers `request`, whose body had `trailers` (if any).
    fn handle(
        &self,
        request: Request<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> impl Future<Output = Response<BoxBody>> + Send + 'static;
}

/// Reads the whole body of `request`, then hands it to `handler`.
pub(crate) async fn collect_and_handle<H, B>(
    handler: H,
    request: Request<B>,
) -> Result<Response<BoxBody>, BoxError>
where
    H: Handler,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let collected = body.collect().await.map_err(Into::into)?;
    let trailers = collected.trailers().cloned();
    let request = Request::from_parts(parts, collected.to_bytes());
    Ok(handler.handle(request, trailers).await)
}

/// Response future of the in-memory services ([`MockAuthService`](super::MockAuthService) and
/// [`MockApiService`](super::MockApiService)).
///
/// It fails only when the request body fails; a fault that hangs keeps it pending forever.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>,
}

impl ResponseFuture {
    pub(crate) fn new<H, B>(handler: H, request: Request<B>) -> Self
    where
        H: Handler,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: Box::pin(collect_and_handle(handler, request)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<BoxBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A listening server; dropping it stops accepting and aborts every open connection.
#[derive(Debug)]
pub(crate) struct Running {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl Running {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds `127.0.0.1:0` and serves `handler` there (HTTP/1.1 and HTTP/2 with prior knowledge)
/// from a task spawned on the current tokio runtime.
pub(crate) async fn serve<H: Handler>(handler: H, name: &'static str) -> io::Result<Running> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (shutdown, stopped) = oneshot::channel();
    tokio::spawn(accept_loop(listener, handler, stopped, name));
    tracing::debug!(%addr, server = name, "mock server listening");
    Ok(Running {
        addr,
        _shutdown: shutdown,
    })
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: H,
    mut stopped: oneshot::Receiver<()>,
    name: &'static str,
) {
    // Dropping the set when the loop ends aborts the connections, including hung ones.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, handler.clone(), name));
                }
                Err(error) => {
                    tracing::debug!(%error, server = name, "mock server failed to accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    tracing::debug!(server = name, "mock server stopped");
}

async fn serve_connection<H: Handler>(
    stream: tokio::net::TcpStream,
    handler: H,
    name: &'static str,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        collect_and_handle(handler.clone(), request)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, server = name, "mock server connection ended with an error");
    }
}

/// Defines a mock server's in-memory [`Service`](tower_service::Service): always ready, it
/// reads the whole request body (with its trailers), then answers with `handler`; it fails only
/// when the request body fails.
macro_rules! in_memory_service {
    ($(#[$doc:meta])* $name:ident($handler:ty)) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            handler: $handler,
        }

        impl<B> tower_service::Service<http::Request<B>> for $name
        where
            B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
            B::Error: Into<$crate::BoxError>,
        {
            type Response = http::Response<$crate::BoxBody>;
            type Error = $crate::BoxError;
            type Future = $crate::ResponseFuture;

            fn poll_ready(
                &mut self,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<B>) -> Self::Future {
                $crate::ResponseFuture::new(self.handler.clone(), request)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}
pub(crate) use in_memory_service;

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};
    use serde_json::Value;
    use tokio::time::timeout;

    use http::StatusCode;

    use super::super::{Fault, MockAuthServer, test_support::*};
    use super::*;
    use hyper_util::{
        client::legacy::Client,
        rt::{TokioExecutor, TokioTimer},
    };

    fn with_url(mut request: Request<Full<Bytes>>, url: &str) -> Request<Full<Bytes>> {
        *request.uri_mut() = url.parse().expect("url");
        request
    }

    #[tokio::test]
    async fn both_servers_over_http1_and_http2() {
        let server = MockAuthServer::start().await.expect("auth server");
        let api = server.api();
        let api_addr = api.serve().await.expect("api");
        assert_eq!(api.serve().await.expect("api again"), api_addr);
        assert!(server.token_url().ends_with("/oauth/token"));
        assert!(server.token_url().starts_with("http://127.0.0.1:"));

        let http1 = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .build_http::<Full<Bytes>>();
        for client in [http1, http2] {
            let response = client
                .request(with_url(form_basic(&[GRANT]), &server.token_url()))
                .await
                .expect("token response");
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).expect("json");
            let token = body["access_token"].as_str().expect("token");

            let request = with_url(
                api_request(Some(token), "over the wire"),
                &format!("{}/echo", api.url()),
            );
            let response = client.request(request).await.expect("api response");
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(bytes, "over the wire");
        }
        assert_eq!(server.issued(), 2);
        assert_eq!(api.accepted(), 2);

        // Broken bodies over the wire.
        server.fail_next(1, Fault::abort_body("{"));
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client
            .request(with_url(form_basic(&[GRANT]), &server.token_url()))
            .await
            .expect("head");
        assert!(response.into_body().collect().await.is_err());

        server.fail_next(1, Fault::hang());
        let pending = client.request(with_url(form_basic(&[GRANT]), &server.token_url()));
        assert!(timeout(Duration::from_millis(200), pending).await.is_err());

        // Shut down: the listener goes away.
        let token_url = server.token_url();
        server.shutdown();
        assert!(server.local_addr().is_none());
        tokio::task::yield_now().await;
        let fresh = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let result = timeout(
            Duration::from_secs(5),
            fresh.request(with_url(form_basic(&[GRANT]), &token_url)),
        )
        .await
        .expect("no hang");
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn dropping_the_last_handle_stops_the_server() {
        let api = MockAuthServer::new().api();
        api.serve().await.expect("api");
        let url = api.url();
        let clone = api.clone();
        drop(api);
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client
            .request(with_url(api_request(None, ""), &url))
            .await
            .expect("still up while a clone lives");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        drop(clone);
        tokio::task::yield_now().await;
        let fresh = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let result = timeout(
            Duration::from_secs(5),
            fresh.request(with_url(api_request(None, ""), &url)),
        )
        .await
        .expect("no hang");
        assert!(result.is_err());
    }
}
