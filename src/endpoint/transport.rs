//! The HTTP client that carries token requests: the user's own tower service, or hyper-util's
//! client (over rustls with the `rustls` feature).

use std::fmt;

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

/// What the builder adds to the built-in transport's TLS: a client certificate (mutual TLS,
/// RFC 8705) and roots trusted besides those of the features. Parsed and checked when the
/// configuration is built.
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    /// The client certificate chain and its key, loaded by the crypto provider once: no copy
    /// of the key's DER is kept.
    #[cfg(feature = "rustls")]
    identity: Option<std::sync::Arc<rustls::sign::CertifiedKey>>,
    #[cfg(feature = "rustls")]
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[allow(unused_mut)]
        let mut debug = f.debug_struct("TlsOptions");
        #[cfg(feature = "rustls")]
        debug
            .field("client_certificate", &self.identity.is_some())
            .field("extra_roots", &self.roots.len());
        debug.finish()
    }
}

impl TlsOptions {
    /// Parses the PEM of a client certificate chain and its private key, and of extra roots.
    /// The errors name what is wrong, never the key's bytes.
    pub(crate) fn new(
        client_certificate: Option<(&str, &str)>,
        roots: &[String],
    ) -> Result<Self, ConfigError> {
        #[cfg(feature = "rustls")]
        {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

            let invalid = |name: &str, reason: &str| ConfigError::InvalidParameter {
                name: name.to_owned(),
                reason: reason.to_owned(),
            };
            let certificates = |name: &str, pem: &str| {
                let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| invalid(name, "a `CERTIFICATE` section is not valid PEM"))?;
                if chain.is_empty() {
                    return Err(invalid(
                        name,
                        "no `-----BEGIN CERTIFICATE-----` section found",
                    ));
                }
                Ok(chain)
            };
            let identity = match client_certificate {
                None => None,
                Some((chain, key)) => {
                    let chain = certificates("client_certificate", chain)?;
                    // The PEM error may quote the key's text: not passed on.
                    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                        invalid(
                            "client_certificate",
                            "the private key is not a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
                             `EC PRIVATE KEY` section",
                        )
                    })?;
                    // The key must suit the provider and match the certificate.
                    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider())
                        .map_err(|error| {
                        invalid(
                            "client_certificate",
                            // rustls's errors name the problem (an unsupported or
                            // mismatched key), not the key.
                            &format!("the certificate and key are not usable: {error}"),
                        )
                    })?;
                    Some(std::sync::Arc::new(certified))
                }
            };
            let mut all_roots = Vec::new();
            let mut store = rustls::RootCertStore::empty();
            for pem in roots {
                for root in certificates("root_certificates", pem)? {
                    store.add(root.clone()).map_err(|error| {
                        invalid(
                            "root_certificates",
                            &format!("not a usable CA certificate: {error}"),
                        )
                    })?;
                    all_roots.push(root);
                }
            }
            Ok(Self {
                identity,
                roots: all_roots,
            })
        }
        #[cfg(not(feature = "rustls"))]
        {
            if client_certificate.is_some() || !roots.is_empty() {
                return Err(ConfigError::NoTlsTransport);
            }
            Ok(Self {})
        }
    }

    /// Whether a client certificate was set.
    #[cfg(feature = "rustls")]
    pub(crate) fn has_client_certificate(&self) -> bool {
        self.identity.is_some()
    }

    /// The SHA-256 thumbprint of the client certificate (base64url, RFC 8705 §3.1), if one
    /// was set.
    #[cfg(all(feature = "rustls", feature = "redis"))]
    pub(crate) fn client_certificate_thumbprint(&self) -> Option<String> {
        use base64::Engine;
        let leaf = self.identity.as_ref()?.end_entity_cert().ok()?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf);
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
    }

    /// Whether a client certificate was set: never without a TLS transport.
    #[cfg(not(feature = "rustls"))]
    pub(crate) fn has_client_certificate(&self) -> bool {
        false
    }

    /// No client certificate without a TLS transport.
    #[cfg(all(not(feature = "rustls"), feature = "redis"))]
    pub(crate) fn client_certificate_thumbprint(&self) -> Option<String> {
        None
    }
}

/// hyper-util's client for the given endpoint: plain HTTP for `http` URLs, rustls for `https`;
/// through the proxy that `proxies` gives the endpoint, if any: a CONNECT tunnel to an `https`
/// endpoint, absolute-form requests to an `http` one.
pub(crate) fn default_client(
    uri: &Uri,
    proxies: &Proxies,
    tls: &TlsOptions,
) -> Result<HttpClient, ConfigError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    // Under rustls (`wrap_connector` does not do it, as `build` does): the TCP connector
    // sees `https` URIs, which it refuses by default.
    connector.enforce_http(!https);
    let Some((proxy, authorization)) = proxy::intercept(&proxies.matcher()?, uri) else {
        return if https {
            https_client(connector, tls)
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
        return https_client(tunnel, tls);
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
fn https_client<C>(connector: C, tls: &TlsOptions) -> Result<HttpClient, ConfigError>
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
        .with_tls_config(tls_config(tls)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    Ok(boxed(client_builder().build::<_, Full<Bytes>>(connector)))
}

/// The rustls configuration of the built-in transport: the process's default crypto provider
/// if the application installed one (ring, a FIPS build), aws-lc-rs otherwise; the platform
/// verifier with `platform-verifier`, else the roots of `native-roots` and `webpki-roots`
/// together; and the builder's extra roots and client certificate (`options`).
#[cfg(feature = "rustls")]
pub(crate) fn tls_config(options: &TlsOptions) -> Result<rustls::ClientConfig, ConfigError> {
    let tls = |reason: String| ConfigError::Tls {
        reason: format!("token endpoint: {reason}"),
    };
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            tls(format!(
                "the crypto provider cannot do TLS 1.2 or 1.3: {error}"
            ))
        })?;

    #[cfg(feature = "platform-verifier")]
    {
        let verifier = if options.roots.is_empty() {
            rustls_platform_verifier::Verifier::new(provider)
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(
                options.roots.iter().cloned(),
                provider,
            )
        }
        .map_err(|error| tls(format!("the platform verifier failed to start: {error}")))?;
        Ok(with_client_auth(
            builder
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier)),
            options,
        ))
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
        // Checked when the options were made.
        let _ = roots.add_parsable_certificates(options.roots.iter().cloned());
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
        Ok(with_client_auth(
            builder.with_root_certificates(roots),
            options,
        ))
    }
}

/// The process's default crypto provider if the application installed one, aws-lc-rs
/// otherwise.
#[cfg(feature = "rustls")]
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Presents the client certificate, if there is one.
#[cfg(feature = "rustls")]
fn with_client_auth(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    options: &TlsOptions,
) -> rustls::ClientConfig {
    match &options.identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder.with_client_cert_resolver(std::sync::Arc::new(
            rustls::sign::SingleCertAndKey::from(std::sync::Arc::clone(identity)),
        )),
    }
}

#[cfg(not(feature = "rustls"))]
fn https_client<C>(_: C, _: &TlsOptions) -> Result<HttpClient, ConfigError> {
    Err(ConfigError::NoTlsTransport)
}

#[cfg(all(test, feature = "rustls"))]
mod tests {
    use super::*;

    /// The configuration the default features build trusts something: a machine without any
    /// root would fail every `https` token request.
    #[test]
    fn the_built_in_tls_configuration_builds() {
        let config = tls_config(&TlsOptions::default()).expect("a TLS configuration");
        assert!(
            config.alpn_protocols.is_empty(),
            "hyper-rustls sets ALPN itself"
        );
        default_client(
            &"https://127.0.0.1/token".parse().unwrap(),
            &Proxies::new(),
            &TlsOptions::default(),
        )
        .expect("an https client");
    }
}
