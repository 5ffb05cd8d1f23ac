//! Authorization server metadata (RFC 8414, OpenID Connect Discovery 1.0): from an issuer
//! identifier to its token endpoint and the client authentication methods it supports.
//!
//! The metadata is fetched from `/.well-known/oauth-authorization-server` (inserted before the
//! issuer's path, RFC 8414 §3.1), and from `/.well-known/openid-configuration` (appended to the
//! issuer) when the first answers with a client error such as 404. The document must name the
//! very issuer that was asked for (RFC 8414 §3.3, OpenID Connect Discovery §4.3): a document
//! naming another issuer is refused, since accepting it is what mix-up attacks rely on.
//!
//! Requests go through the same HTTP client as token requests, with the same timeout (per
//! document) and size limit. Redirects are not followed.

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use serde_json::{Map, Value};
use tower::ServiceExt;

use super::{
    HttpClient, read_limited,
    request::{AuthMethod, Credential, RequestFormat},
    response,
};
use crate::error::{ConfigError, TokenError};

/// Why discovery from an issuer failed. Returned by
/// [`ClientCredentialsBuilder::discover`](crate::ClientCredentialsBuilder::discover).
///
/// No variant carries a secret: URLs of well-known documents, the issuer identifiers and the
/// names of authentication methods are public metadata.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The builder has no issuer to discover: it was not created with
    /// [`ClientCredentials::from_issuer`](crate::ClientCredentials::from_issuer) or
    /// [`from_issuer_with_key`](crate::ClientCredentials::from_issuer_with_key).
    NoIssuer,
    /// The issuer identifier is not usable: it must be an absolute `https` URL without query,
    /// fragment or credentials (plain `http` only on a loopback host, or with
    /// [`allow_insecure_http`](crate::ClientCredentialsBuilder::allow_insecure_http)).
    InvalidIssuer {
        /// The issuer as given.
        issuer: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be set up (no TLS transport, no root certificates).
    Config(ConfigError),
    /// Neither well-known URL serves a metadata document: both answered with a client error
    /// status (404, 403, …).
    NotFound {
        /// The URLs tried, in order.
        urls: Vec<String>,
        /// The status of the last answer.
        status: StatusCode,
    },
    /// A well-known URL answered with a server error, a rate limit, a redirect or another
    /// status that is neither success nor "not here".
    Http {
        /// The URL requested.
        url: String,
        /// The status of the answer.
        status: StatusCode,
        /// The `Retry-After` delay, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// The document is not a JSON object with usable members (not JSON, a member of the wrong
    /// type, no `issuer`, a `token_endpoint` that is not an acceptable URL).
    InvalidDocument {
        /// Where the document came from.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The document's `issuer` is not the issuer that was asked for. It may come from another
    /// server; it is refused (RFC 8414 §3.3).
    IssuerMismatch {
        /// The issuer asked for.
        expected: String,
        /// The `issuer` in the document (shortened).
        found: String,
    },
    /// The document has no `token_endpoint`.
    MissingTokenEndpoint {
        /// Where the document came from.
        url: String,
    },
    /// None of the authentication methods the server supports
    /// (`token_endpoint_auth_methods_supported`) can be used with the client's credentials.
    NoUsableAuthMethod {
        /// The methods the server lists (or `client_secret_basic`, the default, when it lists
        /// none).
        supported: Vec<String>,
        /// The methods the credentials allow.
        usable: Vec<AuthMethod>,
    },
    /// A document was larger than the configured
    /// [`max_response_size`](crate::ClientCredentialsBuilder::max_response_size).
    BodyTooLarge {
        /// The URL requested.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A document did not arrive within the configured
    /// [`timeout`](crate::ClientCredentialsBuilder::timeout).
    Timeout {
        /// The URL requested.
        url: String,
        /// The configured timeout.
        after: Duration,
    },
    /// The request could not be sent or the response not read.
    Transport {
        /// The URL requested.
        url: String,
        /// The underlying error.
        source: Arc<dyn StdError + Send + Sync>,
    },
}

impl DiscoveryError {
    /// Whether trying again soon may succeed: network errors, timeouts, 5xx, 408 and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            Self::Timeout { .. } | Self::Transport { .. } => true,
            _ => false,
        }
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoIssuer => f.write_str(
                "no issuer to discover: create the builder with `ClientCredentials::from_issuer`",
            ),
            Self::InvalidIssuer { issuer, reason } => {
                write!(f, "invalid issuer `{issuer}`: {reason}")
            }
            // The causes of `Config` and `Transport` are `source()`'s alone (see `TokenError`).
            Self::Config(_) => f.write_str("cannot set up discovery"),
            Self::NotFound { urls, status } => write!(
                f,
                "no authorization server metadata at {} (last answer: HTTP {status})",
                urls.join(" or ")
            ),
            Self::Http { url, status, .. } => {
                write!(f, "metadata request to {url} returned HTTP {status}")?;
                if status.is_redirection() {
                    f.write_str("; discovery does not follow redirects")?;
                }
                Ok(())
            }
            Self::InvalidDocument { url, reason } => {
                write!(f, "invalid metadata document at {url}: {reason}")
            }
            Self::IssuerMismatch { expected, found } => write!(
                f,
                "the metadata document names issuer `{found}`, not `{expected}`; it is refused \
                 (RFC 8414 §3.3)"
            ),
            Self::MissingTokenEndpoint { url } => {
                write!(f, "the metadata document at {url} has no `token_endpoint`")
            }
            Self::NoUsableAuthMethod { supported, usable } => {
                let usable: Vec<&str> = usable.iter().map(AuthMethod::as_str).collect();
                write!(
                    f,
                    "the token endpoint supports client authentication by {} only; these \
                     credentials allow {}",
                    supported.join(", "),
                    usable.join(", ")
                )
            }
            Self::BodyTooLarge { url, limit } => write!(
                f,
                "the metadata document at {url} exceeds the limit of {limit} bytes"
            ),
            Self::Timeout { url, after } => {
                write!(
                    f,
                    "metadata request to {url} did not complete within {after:?}"
                )
            }
            Self::Transport { url, .. } => write!(
                f,
                "metadata request to {url} failed: the server could not be reached or its \
                 response not read"
            ),
        }
    }
}

impl StdError for DiscoveryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Config(error) => Some(error),
            Self::Transport { source, .. } => Some(&**source as &(dyn StdError + 'static)),
            _ => None,
        }
    }
}

/// What discovery found.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    /// Where the document came from.
    pub(crate) url: String,
    pub(crate) token_endpoint: String,
    /// `token_endpoint_auth_methods_supported`, if the document has it.
    pub(crate) auth_methods: Option<Vec<String>>,
    /// `mtls_endpoint_aliases.token_endpoint` (RFC 8705 §5), if the document has it: where
    /// token requests go when the client uses mutual TLS.
    pub(crate) mtls_token_endpoint: Option<String>,
}

/// Checks an issuer identifier (RFC 8414 §2): absolute, `https` unless loopback or allowed,
/// no query, fragment or credentials.
pub(crate) fn check_issuer(issuer: &str, allow_insecure_http: bool) -> Result<Uri, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidIssuer {
        issuer: issuer.to_owned(),
        reason,
    };
    if issuer.contains(['?', '#']) {
        return Err(invalid(
            "an issuer identifier has no query or fragment".into(),
        ));
    }
    let uri: Uri = issuer
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid("the URL has no host".into()))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid("credentials in the URL are not supported".into()));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_insecure_http || super::is_loopback(host) => {}
        Some("http") => {
            return Err(invalid(format!(
                "plain http on non-loopback host `{host}`; use https or opt in with \
                 `allow_insecure_http(true)`"
            )));
        }
        Some(other) => return Err(invalid(format!("unsupported scheme `{other}`"))),
        None => return Err(invalid("the URL must be absolute (https://…)".into())),
    }
    Ok(uri)
}

/// The two places the metadata may be, in the order they are tried: RFC 8414's
/// `/.well-known/oauth-authorization-server` inserted between the host and the issuer's path,
/// then OpenID Connect's `/.well-known/openid-configuration` appended to the issuer.
pub(crate) fn well_known_urls(issuer: &str) -> [String; 2] {
    let trimmed = issuer.trim_end_matches('/');
    let after_scheme = trimmed.find("://").map_or(0, |at| at + 3);
    let (origin, path) = match trimmed[after_scheme..].find('/') {
        Some(at) => trimmed.split_at(after_scheme + at),
        None => (trimmed, ""),
    };
    [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{trimmed}/.well-known/openid-configuration"),
    ]
}

/// Fetches and checks the metadata of `issuer` (already checked with [`check_issuer`]).
pub(crate) async fn discover(
    client: &HttpClient,
    issuer: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<Metadata, DiscoveryError> {
    let urls = well_known_urls(issuer);
    let mut last_status = StatusCode::NOT_FOUND;
    for url in &urls {
        let (status, headers, body) = fetch(client, url, timeout, max_body).await?;
        if status.is_success() {
            return parse(issuer, url, &body);
        }
        // "Not here": try the other place.
        if status.is_client_error()
            && status != StatusCode::TOO_MANY_REQUESTS
            && status != StatusCode::REQUEST_TIMEOUT
        {
            tracing::debug!(%url, %status, "no authorization server metadata here");
            last_status = status;
            continue;
        }
        return Err(DiscoveryError::Http {
            url: url.clone(),
            status,
            retry_after: response::retry_after(&headers, std::time::SystemTime::now()),
        });
    }
    Err(DiscoveryError::NotFound {
        urls: urls.to_vec(),
        status: last_status,
    })
}

async fn fetch(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<(StatusCode, http::HeaderMap, Bytes), DiscoveryError> {
    let exchange =
        async {
            let uri: Uri =
                url.parse()
                    .map_err(|e: http::uri::InvalidUri| DiscoveryError::InvalidIssuer {
                        issuer: url.to_owned(),
                        reason: e.to_string(),
                    })?;
            let mut request = Request::new(Full::new(Bytes::new()));
            *request.method_mut() = Method::GET;
            *request.uri_mut() = uri;
            request
                .headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            let response = client.clone().oneshot(request).await.map_err(|error| {
                DiscoveryError::Transport {
                    url: url.to_owned(),
                    source: Arc::from(error),
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = read_limited(body, max_body)
                .await
                .map_err(|error| match error {
                    TokenError::BodyTooLarge { limit } => DiscoveryError::BodyTooLarge {
                        url: url.to_owned(),
                        limit,
                    },
                    TokenError::Transport { source } => DiscoveryError::Transport {
                        url: url.to_owned(),
                        source,
                    },
                    other => DiscoveryError::Transport {
                        url: url.to_owned(),
                        source: Arc::new(other),
                    },
                })?;
            // Metadata is public: no need to keep the zeroing buffer.
            Ok((parts.status, parts.headers, Bytes::copy_from_slice(&body)))
        };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(DiscoveryError::Timeout {
            url: url.to_owned(),
            after: timeout,
        }),
    }
}

/// Checks a metadata document fetched from `url` for `issuer`.
pub(crate) fn parse(issuer: &str, url: &str, body: &[u8]) -> Result<Metadata, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidDocument {
        url: url.to_owned(),
        reason,
    };
    let object: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(invalid("not a JSON object".into())),
        Err(_) if body.is_empty() => return Err(invalid("the body is empty".into())),
        Err(error) => {
            return Err(invalid(format!(
                "not JSON ({error}); the body starts with {}",
                response::outline(body)
            )));
        }
    };
    match object.get("issuer") {
        Some(Value::String(found)) if found == issuer => {}
        Some(Value::String(found)) => {
            return Err(DiscoveryError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: shorten(found),
            });
        }
        None | Some(Value::Null) => return Err(invalid("`issuer` is missing".into())),
        Some(_) => return Err(invalid("`issuer` is not a string".into())),
    }
    let token_endpoint = match object.get("token_endpoint") {
        Some(Value::String(endpoint)) if !endpoint.is_empty() => endpoint.clone(),
        None | Some(Value::Null) => {
            return Err(DiscoveryError::MissingTokenEndpoint {
                url: url.to_owned(),
            });
        }
        Some(Value::String(_)) => return Err(invalid("`token_endpoint` is empty".into())),
        Some(_) => return Err(invalid("`token_endpoint` is not a string".into())),
    };
    let auth_methods = match object.get("token_endpoint_auth_methods_supported") {
        None | Some(Value::Null) => None,
        Some(Value::Array(methods)) => Some(
            methods
                .iter()
                .map(|method| method.as_str().map(shorten))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid("`token_endpoint_auth_methods_supported` holds a non-string".into())
                })?,
        ),
        Some(_) => {
            return Err(invalid(
                "`token_endpoint_auth_methods_supported` is not an array".into(),
            ));
        }
    };
    let mtls_token_endpoint = match object.get("mtls_endpoint_aliases") {
        None | Some(Value::Null) => None,
        Some(Value::Object(aliases)) => match aliases.get("token_endpoint") {
            None | Some(Value::Null) => None,
            Some(Value::String(endpoint)) if !endpoint.is_empty() => Some(endpoint.clone()),
            Some(_) => {
                return Err(invalid(
                    "`mtls_endpoint_aliases.token_endpoint` is not a non-empty string".into(),
                ));
            }
        },
        Some(_) => return Err(invalid("`mtls_endpoint_aliases` is not an object".into())),
    };
    Ok(Metadata {
        url: url.to_owned(),
        token_endpoint,
        auth_methods,
        mtls_token_endpoint,
    })
}

/// The method to use with `credential`, among those the server supports (RFC 8414: when the
/// document lists none, only `client_secret_basic`).
///
/// A secret prefers `client_secret_basic`, then `client_secret_post`, then `client_secret_jwt`
/// (with a JSON body: `client_secret_post`, then `client_secret_basic`); a private key uses
/// `private_key_jwt`; a TLS client certificate `tls_client_auth`, then
/// `self_signed_tls_client_auth`.
pub(crate) fn choose_auth_method(
    supported: Option<&[String]>,
    credential: &Credential,
    format: RequestFormat,
) -> Result<AuthMethod, DiscoveryError> {
    let default = ["client_secret_basic".to_owned()];
    let supported = supported.unwrap_or(&default);
    let preferred: &[AuthMethod] = match (credential, format) {
        (Credential::Key(_) | Credential::Assertion(_), _) => &[AuthMethod::PrivateKeyJwt],
        (Credential::Tls, _) => &[
            AuthMethod::TlsClientAuth,
            AuthMethod::SelfSignedTlsClientAuth,
        ],
        (Credential::Secret(_), RequestFormat::Json) => {
            &[AuthMethod::ClientSecretPost, AuthMethod::ClientSecretBasic]
        }
        (Credential::Secret(_), RequestFormat::Form) => &[
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::ClientSecretJwt,
        ],
    };
    preferred
        .iter()
        .copied()
        .find(|method| supported.iter().any(|name| name == method.as_str()))
        .ok_or_else(|| DiscoveryError::NoUsableAuthMethod {
            supported: supported.to_vec(),
            usable: preferred.to_vec(),
        })
}

/// At most 200 printable characters of a value from the document.
fn shorten(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn well_known_urls_follow_rfc_8414_and_oidc() {
        assert_eq!(
            well_known_urls("https://auth.example"),
            [
                "https://auth.example/.well-known/oauth-authorization-server",
                "https://auth.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            well_known_urls("https://auth.example/"),
            [
                "https://auth.example/.well-known/oauth-authorization-server",
                "https://auth.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            well_known_urls("https://login.example:8443/tenant/v2.0"),
            [
                "https://login.example:8443/.well-known/oauth-authorization-server/tenant/v2.0",
                "https://login.example:8443/tenant/v2.0/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            well_known_urls("http://127.0.0.1:9000/realms/x/"),
            [
                "http://127.0.0.1:9000/.well-known/oauth-authorization-server/realms/x",
                "http://127.0.0.1:9000/realms/x/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn issuers_are_checked() {
        assert!(check_issuer("https://auth.example", false).is_ok());
        assert!(check_issuer("http://127.0.0.1:8080/x", false).is_ok());
        assert!(check_issuer("http://auth.example", true).is_ok());
        for bad in [
            "http://auth.example",
            "https://auth.example/?tenant=1",
            "https://auth.example/#x",
            "https://user:pw@auth.example",
            "ftp://auth.example",
            "/relative",
            "",
        ] {
            assert!(
                matches!(
                    check_issuer(bad, false),
                    Err(DiscoveryError::InvalidIssuer { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn auth_method_choice() {
        let secret = Credential::Secret(SecretString::from("s"));
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let choose = |list: Option<&[&str]>, format| {
            let list = list.map(names);
            choose_auth_method(list.as_deref(), &secret, format)
        };
        use AuthMethod::*;
        use RequestFormat::*;
        assert_eq!(choose(None, Form).unwrap(), ClientSecretBasic);
        assert_eq!(
            choose(
                Some(&[
                    "private_key_jwt",
                    "client_secret_post",
                    "client_secret_basic"
                ]),
                Form
            )
            .unwrap(),
            ClientSecretBasic
        );
        assert_eq!(
            choose(Some(&["client_secret_jwt", "client_secret_post"]), Form).unwrap(),
            ClientSecretPost
        );
        assert_eq!(
            choose(Some(&["client_secret_jwt", "private_key_jwt"]), Form).unwrap(),
            ClientSecretJwt
        );
        assert_eq!(
            choose(Some(&["client_secret_basic", "client_secret_post"]), Json).unwrap(),
            ClientSecretPost
        );
        match choose(Some(&["private_key_jwt", "tls_client_auth"]), Form) {
            Err(DiscoveryError::NoUsableAuthMethod { supported, usable }) => {
                assert_eq!(supported, ["private_key_jwt", "tls_client_auth"]);
                assert_eq!(
                    usable,
                    [ClientSecretBasic, ClientSecretPost, ClientSecretJwt]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(choose(Some(&[]), Form).is_err());

        // A TLS client certificate: `tls_client_auth` first, never a secret method.
        let tls = |list: &[&str]| choose_auth_method(Some(&names(list)), &Credential::Tls, Form);
        assert_eq!(
            tls(&[
                "client_secret_basic",
                "self_signed_tls_client_auth",
                "tls_client_auth"
            ])
            .unwrap(),
            TlsClientAuth
        );
        assert_eq!(
            tls(&["client_secret_basic", "self_signed_tls_client_auth"]).unwrap(),
            SelfSignedTlsClientAuth
        );
        assert!(matches!(
            tls(&["client_secret_basic", "private_key_jwt"]),
            Err(DiscoveryError::NoUsableAuthMethod { .. })
        ));
        assert!(matches!(
            choose_auth_method(None, &Credential::Tls, Form),
            Err(DiscoveryError::NoUsableAuthMethod { .. })
        ));
    }

    #[test]
    fn mtls_endpoint_aliases_are_read() {
        let issuer = "https://auth.example";
        let url = "https://auth.example/.well-known/oauth-authorization-server";
        let parse = |body: &str| parse(issuer, url, body.as_bytes());
        let with_alias = parse(
            r#"{"issuer":"https://auth.example","token_endpoint":"https://auth.example/t",
                "mtls_endpoint_aliases":{"token_endpoint":"https://mtls.auth.example/t",
                "revocation_endpoint":"https://mtls.auth.example/r"}}"#,
        )
        .unwrap();
        assert_eq!(
            with_alias.mtls_token_endpoint.as_deref(),
            Some("https://mtls.auth.example/t")
        );
        let without = parse(
            r#"{"issuer":"https://auth.example","token_endpoint":"https://auth.example/t",
                "mtls_endpoint_aliases":{"revocation_endpoint":"https://mtls.auth.example/r"}}"#,
        )
        .unwrap();
        assert_eq!(without.mtls_token_endpoint, None);
        for bad in [
            r#""https://mtls.auth.example/t""#,
            r#"{"token_endpoint":7}"#,
            r#"{"token_endpoint":""}"#,
        ] {
            let body = format!(
                r#"{{"issuer":"https://auth.example","token_endpoint":"https://auth.example/t",
                    "mtls_endpoint_aliases":{bad}}}"#
            );
            assert!(
                matches!(parse(&body), Err(DiscoveryError::InvalidDocument { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn documents_are_checked() {
        let issuer = "https://auth.example";
        let url = "https://auth.example/.well-known/openid-configuration";
        let parse = |body: &str| parse(issuer, url, body.as_bytes());
        let ok = parse(
            r#"{"issuer":"https://auth.example","token_endpoint":"https://auth.example/t",
                "token_endpoint_auth_methods_supported":["private_key_jwt"]}"#,
        )
        .unwrap();
        assert_eq!(ok.token_endpoint, "https://auth.example/t");
        assert_eq!(ok.auth_methods.unwrap(), ["private_key_jwt"]);
        assert!(matches!(
            parse(r#"{"issuer":"https://auth.example/","token_endpoint":"https://x/t"}"#),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
        assert!(matches!(
            parse(r#"{"issuer":"https://auth.example"}"#),
            Err(DiscoveryError::MissingTokenEndpoint { .. })
        ));
        for (body, reason) in [
            ("<html></html>", "not JSON"),
            ("[]", "not a JSON object"),
            ("", "empty"),
            (r#"{"token_endpoint":"https://x/t"}"#, "`issuer` is missing"),
            (
                r#"{"issuer":1,"token_endpoint":"https://x/t"}"#,
                "not a string",
            ),
            (
                r#"{"issuer":"https://auth.example","token_endpoint":2}"#,
                "not a string",
            ),
            (
                r#"{"issuer":"https://auth.example","token_endpoint":"https://x/t",
                    "token_endpoint_auth_methods_supported":"client_secret_basic"}"#,
                "not an array",
            ),
        ] {
            match parse(body) {
                Err(DiscoveryError::InvalidDocument { reason: got, .. }) => {
                    assert!(got.contains(reason), "{body}: {got}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
