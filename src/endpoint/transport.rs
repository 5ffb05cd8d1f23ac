//! The HTTP client that carries token requests: the user's own tower service, or hyper-util's
//! client (over rustls with the `rustls` feature).

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use tower::{ServiceExt, util::BoxCloneSyncService};
use tower_service::Service;

use crate::error::{BoxError, ConfigError};

/// The body of a token-endpoint response, whatever the client produced.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A type-erased HTTP client for token requests.
pub(crate) type HttpClient =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<ResponseBody>, BoxError>;

/// Erases a user-supplied client.
pub(crate) fn boxed<S, B>(client: S) -> HttpClient
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        client
            .map_response(|response: Response<B>| {
                response.map(|body| body.map_err(Into::into).boxed_unsync())
            })
            .map_err(Into::into),
    )
}

/// hyper-util's client for the given endpoint: plain HTTP for `http` URLs, rustls for `https`.
pub(crate) fn default_client(uri: &Uri) -> Result<HttpClient, ConfigError> {
    if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        https_client()
    } else {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build::<_, Full<Bytes>>(connector);
        Ok(boxed(client))
    }
}

#[cfg(feature = "rustls")]
fn https_client() -> Result<HttpClient, ConfigError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|error| ConfigError::Tls {
            reason: error.to_string(),
        })?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build::<_, Full<Bytes>>(connector);
    Ok(boxed(client))
}

#[cfg(not(feature = "rustls"))]
fn https_client() -> Result<HttpClient, ConfigError> {
    Err(ConfigError::NoTlsTransport)
}
