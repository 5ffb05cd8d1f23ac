//! Proxies for the built-in transport: which proxy a token request goes through
//! ([`Proxies`], from `HTTPS_PROXY` and the other variables or set explicitly, matched by
//! hyper-util's [`Matcher`]) and the connectors that reach the endpoint through it: a CONNECT
//! tunnel for `https` endpoints, absolute-form requests for `http` ones.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Uri};
use hyper_util::client::{
    legacy::connect::{Connected, Connection, HttpConnector},
    proxy::matcher::Matcher,
};
use tower_service::Service;

use crate::error::ConfigError;

/// The proxies of the built-in token-endpoint transport, in the form of the usual environment
/// variables: a proxy for `http` endpoints, one for `https` endpoints, one for both, and the
/// hosts that bypass them.
///
/// [`ClientCredentialsBuilder`](crate::ClientCredentialsBuilder) reads them from the
/// environment once, at [`build`](crate::ClientCredentialsBuilder::build) (see
/// [`proxy_from_env`](crate::ClientCredentialsBuilder::proxy_from_env)), unless given a value
/// with [`proxies`](crate::ClientCredentialsBuilder::proxies). They do not apply to a client
/// passed with [`http_client`](crate::ClientCredentialsBuilder::http_client), which has its
/// own proxy settings.
///
/// A proxy is a URL `http://[user:password@]host[:port]` (a missing scheme means `http`; the
/// port defaults to 80). The user and password, percent-decoded, go to the proxy as
/// `Proxy-Authorization: Basic`; they are never logged and `Debug` shows them redacted. The
/// proxy of an `https` endpoint is asked for a tunnel with `CONNECT`, and TLS runs inside it to
/// the endpoint; an `http` endpoint's requests go to the proxy in absolute form. Proxies
/// reached over TLS (`https://`) and SOCKS proxies are refused by `build()`: pass a client
/// that has them with [`http_client`](crate::ClientCredentialsBuilder::http_client).
///
/// The bypass list is matched as curl does (hyper-util's [`Matcher`]): comma-separated
/// entries, each an IP address, an IP network (`10.0.0.0/8`), a domain that also covers its
/// subdomains (`example.com`, `.example.com`), or `*` for every host. Loopback endpoints get
/// no exception: `localhost` and `127.0.0.1` go through the proxy unless listed.
///
/// ```
/// use tower_client_credentials::{ClientCredentials, Proxies};
///
/// # fn f() -> Result<(), tower_client_credentials::ConfigError> {
/// let config = ClientCredentials::builder("https://auth.example.com/token", "id", "secret")
///     .proxies(Proxies::new().https("http://proxy.internal:3128").no_proxy("localhost"))
///     .build()?;
/// # let _ = config; Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Proxies {
    all: Option<Setting>,
    http: Option<Setting>,
    https: Option<Setting>,
    no: Option<String>,
}

/// One proxy URL and where it came from, for error messages.
#[derive(Clone)]
struct Setting {
    /// The variable's name (`HTTPS_PROXY`, `https_proxy`, …) or the `Proxies` method's.
    from: &'static str,
    /// `None` when the variable is not valid UTF-8.
    url: Option<String>,
}

impl Proxies {
    /// No proxy; add some with [`all`](Self::all), [`http`](Self::http) and
    /// [`https`](Self::https).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the environment, as curl does: `HTTPS_PROXY` for `https` endpoints, `HTTP_PROXY`
    /// for `http` ones, `ALL_PROXY` for both when the former are not set, `NO_PROXY` for the
    /// hosts that bypass them; each in upper case, else in lower case. An empty variable counts
    /// as not set. In a CGI program (`REQUEST_METHOD` is set), nothing is read: a client can
    /// set `HTTP_PROXY` there with a `Proxy` header ("httpoxy").
    pub fn from_env() -> Self {
        if std::env::var_os("REQUEST_METHOD").is_some() {
            return Self::new();
        }
        let read = |upper: &'static str, lower: &'static str| {
            [upper, lower].into_iter().find_map(|from| {
                let value = std::env::var_os(from)?;
                let url = value.into_string().ok();
                match url.as_deref() {
                    Some(url) if url.trim().is_empty() => None,
                    _ => Some(Setting { from, url }),
                }
            })
        };
        Self {
            all: read("ALL_PROXY", "all_proxy"),
            http: read("HTTP_PROXY", "http_proxy"),
            https: read("HTTPS_PROXY", "https_proxy"),
            no: read("NO_PROXY", "no_proxy").map(|setting| setting.url.unwrap_or_default()),
        }
    }

    /// The proxy of both `http` and `https` endpoints, unless [`http`](Self::http) or
    /// [`https`](Self::https) sets theirs (`ALL_PROXY`).
    pub fn all(mut self, url: impl Into<String>) -> Self {
        self.all = Some(Setting::explicit("Proxies::all", url.into()));
        self
    }

    /// The proxy of `http` endpoints (`HTTP_PROXY`).
    pub fn http(mut self, url: impl Into<String>) -> Self {
        self.http = Some(Setting::explicit("Proxies::http", url.into()));
        self
    }

    /// The proxy of `https` endpoints (`HTTPS_PROXY`).
    pub fn https(mut self, url: impl Into<String>) -> Self {
        self.https = Some(Setting::explicit("Proxies::https", url.into()));
        self
    }

    /// The hosts that bypass the proxies, comma-separated (`NO_PROXY`); see above for the
    /// rules.
    pub fn no_proxy(mut self, hosts: impl Into<String>) -> Self {
        self.no = Some(hosts.into());
        self
    }

    /// Checks every URL and builds hyper-util's matcher.
    pub(crate) fn matcher(&self) -> Result<Matcher, ConfigError> {
        let mut builder = Matcher::builder();
        if let Some(setting) = &self.all {
            builder = builder.all(setting.checked()?.to_owned());
        }
        if let Some(setting) = &self.http {
            builder = builder.http(setting.checked()?.to_owned());
        }
        if let Some(setting) = &self.https {
            builder = builder.https(setting.checked()?.to_owned());
        }
        if let Some(no) = &self.no {
            builder = builder.no(no.clone());
        }
        Ok(builder.build())
    }
}

impl Setting {
    fn explicit(from: &'static str, url: String) -> Self {
        Self {
            from,
            url: Some(url),
        }
    }

    /// The URL if hyper-util's matcher would use it as an HTTP proxy; it drops the others
    /// silently, and a token request would then bypass the proxy the user asked for. The
    /// errors never quote the URL: it may hold a password.
    fn checked(&self) -> Result<&str, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidProxy {
            setting: self.from,
            reason: reason.to_owned(),
        };
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| invalid("not valid UTF-8"))?;
        let uri: Uri = url.trim().parse().map_err(|_| {
            invalid(
                "not a URL of the form `http://[user:password@]host[:port]` (percent-encode \
                 reserved characters in the user and password)",
            )
        })?;
        match uri.scheme_str() {
            None | Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "proxies reached over TLS are not supported by the built-in transport; \
                     pass a client that supports them with `http_client` or `reqwest_client`",
                ));
            }
            Some(scheme) if scheme.starts_with("socks") => {
                return Err(invalid(
                    "SOCKS proxies are not supported by the built-in transport; pass a client \
                     that supports them with `http_client` or `reqwest_client`",
                ));
            }
            Some(_) => return Err(invalid("the scheme must be `http`")),
        }
        let host = uri
            .authority()
            .map(|authority| match authority.as_str().rsplit_once('@') {
                Some((_, host)) => host,
                None => authority.as_str(),
            })
            .unwrap_or_default();
        if host.is_empty() || host.starts_with(':') {
            return Err(invalid("the URL has no host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("the URL has a path; a proxy is `host[:port]`"));
        }
        Ok(url.trim())
    }
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxies")
            .field("all", &self.all)
            .field("http", &self.http)
            .field("https", &self.https)
            .field("no_proxy", &self.no)
            .finish()
    }
}

impl fmt::Debug for Setting {
    /// The source and the URL, with any user and password replaced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = match self.url.as_deref().map(|url| url.rsplit_once('@')) {
            None => "[not UTF-8]".to_owned(),
            Some(None) => self.url.clone().unwrap_or_default(),
            Some(Some((before, host))) => match before.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://[redacted]@{host}"),
                None => format!("[redacted]@{host}"),
            },
        };
        write!(f, "{}={redacted:?}", self.from)
    }
}

/// The `Proxy-Authorization` value for the proxy of `uri`, if any, and the proxy's URI.
pub(crate) fn intercept(matcher: &Matcher, uri: &Uri) -> Option<(Uri, Option<HeaderValue>)> {
    let proxy = matcher.intercept(uri)?;
    Some((proxy.uri().clone(), proxy.basic_auth().cloned()))
}

/// Connects to the proxy whatever the destination, and marks the connection as proxied, so
/// that hyper-util's client sends requests in absolute form (`POST http://host/path`).
#[derive(Clone, Debug)]
pub(crate) struct AbsoluteForm {
    pub(crate) inner: HttpConnector,
    pub(crate) proxy: Uri,
}

type Stream = <HttpConnector as Service<Uri>>::Response;
type ConnectError = <HttpConnector as Service<Uri>>::Error;

impl Service<Uri> for AbsoluteForm {
    type Response = Proxied;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Proxied, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _destination: Uri) -> Self::Future {
        let connecting = self.inner.call(self.proxy.clone());
        Box::pin(async move { connecting.await.map(Proxied) })
    }
}

/// A connection to the proxy.
#[derive(Debug)]
pub(crate) struct Proxied(Stream);

impl Connection for Proxied {
    fn connected(&self) -> Connected {
        self.0.connected().proxy(true)
    }
}

impl hyper::rt::Read for Proxied {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Proxied {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(proxies: Proxies) -> String {
        match proxies.matcher() {
            Ok(_) => panic!("accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn unusable_proxy_urls_are_refused_without_quoting_them() {
        for (url, says) in [
            ("http://user:s3cret@proxy host:3128", "not a URL"),
            ("https://user:s3cret@proxy:3128", "over TLS"),
            ("socks5://user:s3cret@proxy:1080", "SOCKS"),
            ("ftp://user:s3cret@proxy:21", "scheme"),
            ("http://user:s3cret@:3128", "no host"),
            ("http://user:s3cret@proxy:3128/path", "path"),
        ] {
            let message = refused(Proxies::new().https(url));
            assert!(message.contains("Proxies::https"), "{message}");
            assert!(message.contains(says), "{url}: {message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn usable_proxy_urls_are_matched_by_scheme_and_bypass_list() {
        let matcher = Proxies::new()
            .http("proxy.internal:3128")
            .https("http://u:p%40ss@tunnel.internal:8080/")
            .no_proxy("10.0.0.0/8, .corp.example")
            .matcher()
            .unwrap();
        let through = |url: &str| intercept(&matcher, &url.parse().unwrap());
        let (proxy, auth) = through("http://auth.example/token").unwrap();
        assert_eq!(
            (proxy.to_string().as_str(), auth),
            ("http://proxy.internal:3128/", None)
        );
        let (proxy, auth) = through("https://auth.example/token").unwrap();
        assert_eq!(proxy.to_string(), "http://tunnel.internal:8080/");
        // `u:p@ss`, percent-decoded.
        assert_eq!(auth.unwrap(), "Basic dTpwQHNz");
        assert!(through("https://10.1.2.3/token").is_none());
        assert!(through("https://auth.corp.example/token").is_none());
        assert!(
            through("https://127.0.0.1/token").is_some(),
            "no loopback exception"
        );
        assert!(
            intercept(
                &Proxies::new().matcher().unwrap(),
                &"https://a.example".parse().unwrap()
            )
            .is_none()
        );
        // `all` is the fallback of both.
        let matcher = Proxies::new()
            .all("http://all:1")
            .http("http://plain:2")
            .matcher()
            .unwrap();
        let uri = |url: &str| {
            intercept(&matcher, &url.parse().unwrap())
                .unwrap()
                .0
                .to_string()
        };
        assert_eq!(uri("http://a.example"), "http://plain:2/");
        assert_eq!(uri("https://a.example"), "http://all:1/");
    }

    #[test]
    fn debug_redacts_proxy_credentials() {
        let proxies = Proxies::new()
            .https("http://user:s3cret@proxy:3128")
            .http("user:s3cret@proxy:3128")
            .all("http://proxy:3128");
        let debug = format!("{proxies:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("user"),
            "{debug}"
        );
        assert!(debug.contains("[redacted]@proxy:3128"), "{debug}");
        assert!(debug.contains("http://proxy:3128"), "{debug}");
    }
}
