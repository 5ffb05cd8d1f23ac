//! The HTTP client that carries token requests: the user's own tower service, or hyper-util's
//! client (over rustls with the `rustls` feature).

use bytes::Bytes;
use http::{Request, Response, Uri, header::PROXY_AUTHORIZATION};
use http_body::Body;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, proxy::Tunnel},
    },
    rt::{TokioExecutor, TokioTimer},
};
use tower::{ServiceExt, util::BoxCloneSyncService};
use tower_service::Service;

use super::proxy::{self, Proxies};
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

/// A [`reqwest::Client`] as the token endpoint's transport (feature `reqwest`), for
/// [`ClientCredentialsBuilder::http_client`](crate::ClientCredentialsBuilder::http_client): the
/// client's proxy settings, TLS roots and client certificate then apply to token requests too.
///
/// ```no_run
/// use tower_client_credentials::{ClientCredentials, reqwest::ReqwestTransport};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let client = reqwest::Client::builder()
///     // A token request carries the client's credentials: do not resend them elsewhere.
///     .redirect(reqwest::redirect::Policy::none())
///     .build()?;
/// let config = ClientCredentials::builder("https://auth.example.com/oauth/token", "id", "secret")
///     .http_client(ReqwestTransport::new(client))
///     .build()?;
/// # let _ = config;
/// # Ok(())
/// # }
/// ```
///
/// Build the client with `redirect(Policy::none())`, as above: reqwest follows redirects by
/// default, and a 307 or 308 from the token endpoint would send the request body, with the
/// client secret or assertion in it, to wherever it points. The crate's own timeouts and
/// retries of token requests apply as with any client.
#[cfg(feature = "reqwest")]
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

#[cfg(feature = "reqwest")]
impl ReqwestTransport {
    /// Sends token requests with `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The client.
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.client
    }
}

#[cfg(feature = "reqwest")]
impl Service<Request<Full<Bytes>>> for ReqwestTransport {
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<reqwest::Body>, reqwest::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // reqwest's client has no readiness of its own: it queues in its pool.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // `Full` yields its one chunk at once and cannot fail.
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let request = reqwest::Request::try_from(Request::from_parts(parts, body))?;
            let response = client.execute(request).await?;
            Ok(Response::from(response))
        })
    }
}

/// hyper-util's client for the given endpoint: plain HTTP for `http` URLs, rustls for `https`;
/// through the proxy that `proxies` gives the endpoint, if any: a CONNECT tunnel to an `https`
/// endpoint, absolute-form requests to an `http` one.
pub(crate) fn default_client(uri: &Uri, proxies: &Proxies) -> Result<HttpClient, ConfigError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let Some((proxy, authorization)) = proxy::intercept(&proxies.matcher()?, uri) else {
        return if https {
            https_client(connector)
        } else {
            Ok(boxed(client_builder().build::<_, Full<Bytes>>(connector)))
        };
    };
    // The proxy's URI carries no user or password: those are in `authorization`.
    tracing::debug!(token_endpoint = %uri, proxy = %proxy, "token requests go through a proxy");
    if https {
        let mut tunnel = Tunnel::new(proxy, connector);
        if let Some(authorization) = authorization {
            tunnel = tunnel.with_auth(authorization);
        }
        return https_client(tunnel);
    }
    let client = client_builder().build::<_, Full<Bytes>>(proxy::AbsoluteForm {
        inner: connector,
        proxy,
    });
    Ok(boxed(client.map_request(
        move |mut request: Request<Full<Bytes>>| {
            if let Some(authorization) = &authorization {
                request
                    .headers_mut()
                    .insert(PROXY_AUTHORIZATION, authorization.clone());
            }
            request
        },
    )))
}

fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_timer(TokioTimer::new());
    builder
}

#[cfg(feature = "rustls")]
fn https_client<C>(connector: C) -> Result<HttpClient, ConfigError>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper_util::client::legacy::connect::Connection
        + hyper::rt::Read
        + hyper::rt::Write
        + Send
        + Unpin
        + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    Ok(boxed(client_builder().build::<_, Full<Bytes>>(connector)))
}

/// The rustls configuration of the built-in transport: the process's default crypto provider
/// if the application installed one (ring, a FIPS build), aws-lc-rs otherwise; the platform
/// verifier with `platform-verifier`, else the roots of `native-roots` and `webpki-roots`
/// together.
#[cfg(feature = "rustls")]
pub(crate) fn tls_config() -> Result<rustls::ClientConfig, ConfigError> {
    use std::sync::Arc;

    let tls = |reason: String| ConfigError::Tls {
        reason: format!("token endpoint: {reason}"),
    };
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            tls(format!(
                "the crypto provider cannot do TLS 1.2 or 1.3: {error}"
            ))
        })?;

    #[cfg(feature = "platform-verifier")]
    {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|error| tls(format!("the platform verifier failed to start: {error}")))?;
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth())
    }

    #[cfg(not(feature = "platform-verifier"))]
    {
        let _ = provider;
        #[allow(unused_mut)]
        let mut roots = rustls::RootCertStore::empty();
        #[allow(unused_mut)]
        let mut problems: Vec<String> = Vec::new();
        #[cfg(feature = "native-roots")]
        {
            let found = rustls_native_certs::load_native_certs();
            // Unreadable files are reported only if nothing usable was found: a system with
            // one broken bundle among several still works.
            problems.extend(found.errors.iter().map(ToString::to_string));
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added > 0 {
                problems.clear();
            }
        }
        #[cfg(feature = "webpki-roots")]
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if roots.is_empty() {
            let features = if cfg!(feature = "native-roots") {
                "no root certificate found on this system (`native-roots`); in an image \
                 without CA files, enable the `webpki-roots` feature"
            } else {
                "no root certificates: enable `native-roots`, `webpki-roots` or \
                 `platform-verifier`, or pass your own client with `http_client`"
            };
            let mut reason = features.to_owned();
            if let Some(first) = problems.first() {
                reason.push_str(&format!(" ({first})"));
            }
            return Err(tls(reason));
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

#[cfg(not(feature = "rustls"))]
fn https_client<C>(_: C) -> Result<HttpClient, ConfigError> {
    Err(ConfigError::NoTlsTransport)
}

#[cfg(all(test, feature = "rustls"))]
mod tests {
    use super::*;

    /// The configuration the default features build trusts something: a machine without any
    /// root would fail every `https` token request.
    #[test]
    fn the_built_in_tls_configuration_builds() {
        let config = tls_config().expect("a TLS configuration");
        assert!(
            config.alpn_protocols.is_empty(),
            "hyper-rustls sets ALPN itself"
        );
        default_client(&"https://127.0.0.1/token".parse().unwrap(), &Proxies::new())
            .expect("an https client");
    }
}
