//! Building the token request: body encoding (RFC 6749 §4.4.2 form, or JSON) and client
//! authentication (`client_secret_basic`, `client_secret_post`, the signed assertions of
//! `client_secret_jwt` and `private_key_jwt`, and the TLS client certificates of
//! `tls_client_auth` and `self_signed_tls_client_auth`, where the form carries only
//! `client_id`).
//!
//! With a shared secret the request is the same every time, so it is built once, when the
//! configuration is built, and each fetch clones it (reference-count increments only). With a
//! client assertion, the prebuilt part of the form is followed by a freshly signed assertion on
//! every fetch.

use std::{fmt, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use jsonwebtoken::EncodingKey;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{
    assertion::{ASSERTION_LIFETIMES, ASSERTION_TYPE, AssertionKey, AssertionSigner, ClientKey},
    federated::ClientAssertion,
};
use crate::error::{ConfigError, TokenError};

/// How the client proves its identity to the token endpoint.
///
/// Default: [`AuthMethod::PrivateKeyJwt`] with a [`ClientKey`]. With a client secret,
/// [`AuthMethod::ClientSecretBasic`], unless the body is JSON ([`RequestFormat::Json`]), where
/// it is [`AuthMethod::ClientSecretPost`] because the providers that want JSON document the
/// credentials in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// HTTP Basic authentication (RFC 6749 §2.3.1): `client_id` and `client_secret` are each
    /// percent-encoded, joined with `:` and base64-encoded. A space is encoded as `%20`.
    ClientSecretBasic,
    /// `client_id` and `client_secret` as body parameters.
    ClientSecretPost,
    /// A JWT signed with the client secret (HS256), sent as `client_assertion` (RFC 7523 §2.2,
    /// OpenID Connect Core §9). The secret itself is never sent. Form bodies only.
    ClientSecretJwt,
    /// A JWT signed with the client's private key ([`ClientKey`]), sent as `client_assertion`.
    /// Form bodies only.
    PrivateKeyJwt,
    /// Mutual TLS with a certificate issued by a CA the server trusts (RFC 8705 §2.1): the
    /// client proves its identity in the TLS handshake, and the request carries `client_id`
    /// and no secret. The server matches the certificate's subject (or a subject alternative
    /// name) with the client's registration. See
    /// [`builder_with_tls_auth`](crate::ClientCredentials::builder_with_tls_auth).
    TlsClientAuth,
    /// Mutual TLS with a self-signed certificate registered with the server (RFC 8705 §2.2,
    /// in the client's `jwks` or `jwks_uri`): as [`TlsClientAuth`](Self::TlsClientAuth) on
    /// the wire.
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// The method's name as registered with IANA (`client_secret_basic`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretJwt => "client_secret_jwt",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Whether the client authenticates with its TLS client certificate (RFC 8705):
    /// [`TlsClientAuth`](Self::TlsClientAuth) or
    /// [`SelfSignedTlsClientAuth`](Self::SelfSignedTlsClientAuth).
    pub fn is_mutual_tls(&self) -> bool {
        matches!(self, Self::TlsClientAuth | Self::SelfSignedTlsClientAuth)
    }
}

/// The encoding of the token request body.
///
/// Default: [`RequestFormat::Form`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RequestFormat {
    /// `application/x-www-form-urlencoded`, as RFC 6749 §4.4.2 requires. Every standard server
    /// accepts it.
    #[default]
    Form,
    /// `application/json`, for providers that document a JSON body. A repeated `resource` is
    /// sent as an array.
    Json,
}

/// Everything that goes into a token request besides the credentials.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parameters {
    pub(crate) scopes: Vec<String>,
    pub(crate) audience: Option<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) extra: Vec<(String, String)>,
}

/// Parameter names this crate sets itself; extra parameters may not use them.
const RESERVED: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "resource",
    "client_assertion",
    "client_assertion_type",
];

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (space as `%20`).
const NON_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What the client authenticates with: a shared secret, a private key, an assertion made
/// by someone else, or the TLS client certificate (which the transport presents).
pub(crate) enum Credential {
    Secret(SecretString),
    Key(ClientKey),
    Assertion(ClientAssertion),
    Tls,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(\"[redacted]\")"),
            Self::Key(key) => f.debug_tuple("Key").field(key).finish(),
            Self::Assertion(assertion) => f.debug_tuple("Assertion").field(assertion).finish(),
            Self::Tls => f.write_str("Tls"),
        }
    }
}

impl Credential {
    /// The method used when none is chosen.
    pub(crate) fn default_method(&self, format: RequestFormat) -> AuthMethod {
        match (self, format) {
            (Self::Key(_) | Self::Assertion(_), _) => AuthMethod::PrivateKeyJwt,
            (Self::Tls, _) => AuthMethod::TlsClientAuth,
            (Self::Secret(_), RequestFormat::Json) => AuthMethod::ClientSecretPost,
            (Self::Secret(_), RequestFormat::Form) => AuthMethod::ClientSecretBasic,
        }
    }
}

/// The `aud` and lifetime of client assertions.
#[derive(Debug, Clone)]
pub(crate) struct AssertionOptions {
    pub(crate) audience: String,
    pub(crate) lifetime: Duration,
}

/// A token request ready to be cloned and sent.
#[derive(Clone)]
pub(crate) struct PreparedRequest {
    uri: Uri,
    content_type: HeaderValue,
    authorization: Option<HeaderValue>,
    /// With an assertion, the form up to `…&client_assertion=`; the assertion follows.
    body: Bytes,
    assertion: Option<Assertion>,
}

/// Where the `client_assertion` of each request comes from.
#[derive(Clone)]
enum Assertion {
    /// Signed here, anew for each request.
    Signed(AssertionSigner),
    /// Made by someone else, read anew for each request.
    External(ClientAssertion),
}

impl PreparedRequest {
    pub(crate) fn new(
        uri: Uri,
        client_id: &str,
        credential: &Credential,
        auth: AuthMethod,
        format: RequestFormat,
        params: &Parameters,
        assertion: &AssertionOptions,
    ) -> Result<Self, ConfigError> {
        validate(client_id, params)?;
        let invalid = |name: &str, reason: String| ConfigError::InvalidParameter {
            name: name.to_owned(),
            reason,
        };
        let secret = match (credential, auth) {
            (Credential::Tls, method) if method.is_mutual_tls() => None,
            (Credential::Tls, other) => {
                return Err(invalid(
                    "auth_method",
                    format!(
                        "a client that authenticates with its TLS certificate uses \
                         `tls_client_auth` or `self_signed_tls_client_auth`, not `{}`",
                        other.as_str()
                    ),
                ));
            }
            (_, method) if method.is_mutual_tls() => {
                return Err(invalid(
                    "auth_method",
                    format!(
                        "`{}` authenticates with the TLS client certificate: use \
                         `ClientCredentials::builder_with_tls_auth`",
                        method.as_str()
                    ),
                ));
            }
            (Credential::Secret(secret), _) if auth != AuthMethod::PrivateKeyJwt => Some(secret),
            (Credential::Key(_) | Credential::Assertion(_), AuthMethod::PrivateKeyJwt) => None,
            (Credential::Assertion(_), other) => {
                return Err(invalid(
                    "auth_method",
                    format!(
                        "a client assertion from outside is sent as `private_key_jwt`, not \
                         `{}`",
                        other.as_str()
                    ),
                ));
            }
            (Credential::Secret(_), _) => {
                return Err(invalid(
                    "auth_method",
                    "`private_key_jwt` needs a private key: use \
                     `ClientCredentials::builder_with_key`"
                        .into(),
                ));
            }
            (Credential::Key(_), other) => {
                return Err(invalid(
                    "auth_method",
                    format!(
                        "`{}` needs a client secret; with a private key the method is \
                         `private_key_jwt`",
                        other.as_str()
                    ),
                ));
            }
        };
        let signer = match (auth, credential) {
            (AuthMethod::PrivateKeyJwt, Credential::Key(key)) => {
                Some(AssertionKey::Private(key.clone()))
            }
            (AuthMethod::ClientSecretJwt, Credential::Secret(secret)) => Some(
                AssertionKey::Secret(EncodingKey::from_secret(secret.expose_secret().as_bytes())),
            ),
            _ => None,
        };
        let external = match credential {
            Credential::Assertion(assertion) => Some(assertion.clone()),
            _ => None,
        };
        if external.is_some() && format != RequestFormat::Form {
            return Err(invalid(
                "request_format",
                "a client assertion is form-encoded (RFC 7523 §2.2); use `RequestFormat::Form`"
                    .into(),
            ));
        }
        let assertion = match signer {
            Some(key) => {
                if format != RequestFormat::Form {
                    return Err(invalid(
                        "request_format",
                        format!(
                            "`{}` sends a client assertion, which is form-encoded \
                             (RFC 7523 §2.2); use `RequestFormat::Form`",
                            auth.as_str()
                        ),
                    ));
                }
                if !ASSERTION_LIFETIMES.contains(&assertion.lifetime) {
                    return Err(ConfigError::InvalidTiming {
                        name: "assertion_lifetime",
                        reason: format!("must be from 1 s to 1 day, not {:?}", assertion.lifetime),
                    });
                }
                if assertion.audience.is_empty() {
                    return Err(invalid("assertion_audience", "must not be empty".into()));
                }
                Some(Assertion::Signed(AssertionSigner::new(
                    client_id,
                    key,
                    assertion.audience.clone(),
                    assertion.lifetime,
                )?))
            }
            None => external.map(Assertion::External),
        };

        let scope = (!params.scopes.is_empty()).then(|| params.scopes.join(" "));
        let mut fields: Vec<(&str, Value<'_>)> =
            vec![("grant_type", Value::One("client_credentials"))];
        match (auth, secret) {
            (AuthMethod::ClientSecretPost, Some(secret)) => {
                fields.push(("client_id", Value::One(client_id)));
                fields.push(("client_secret", Value::One(secret.expose_secret())));
            }
            // Optional with an assertion (RFC 7521 §4.2), but some servers look the client up
            // by it. Required with mutual TLS (RFC 8705 §2).
            (
                AuthMethod::ClientSecretJwt
                | AuthMethod::PrivateKeyJwt
                | AuthMethod::TlsClientAuth
                | AuthMethod::SelfSignedTlsClientAuth,
                _,
            ) => {
                fields.push(("client_id", Value::One(client_id)));
            }
            _ => {}
        }
        if let Some(scope) = &scope {
            fields.push(("scope", Value::One(scope)));
        }
        if let Some(audience) = &params.audience {
            fields.push(("audience", Value::One(audience)));
        }
        if !params.resources.is_empty() {
            fields.push(("resource", Value::Many(&params.resources)));
        }
        for (name, value) in &params.extra {
            fields.push((name, Value::One(value)));
        }
        if assertion.is_some() {
            // The assertion is appended to the empty value on each request. A JWS in compact
            // form is base64url and dots, which form encoding leaves as they are.
            fields.push(("client_assertion_type", Value::One(ASSERTION_TYPE)));
            fields.push(("client_assertion", Value::One("")));
        }

        let (content_type, body) = match format {
            RequestFormat::Form => ("application/x-www-form-urlencoded", encode_form(&fields)),
            RequestFormat::Json => ("application/json", encode_json(&fields)),
        };
        let authorization = match (auth, secret) {
            (AuthMethod::ClientSecretBasic, Some(secret)) => {
                Some(basic_authorization(client_id, secret.expose_secret()))
            }
            _ => None,
        };
        Ok(Self {
            uri,
            content_type: HeaderValue::from_static(content_type),
            authorization,
            // The body may hold the client secret (`client_secret_post`): zeroed when dropped.
            body: Bytes::from_owner(Zeroizing::new(body)),
            assertion,
        })
    }

    /// A fresh copy of the request, with a newly signed (or newly read) client assertion if
    /// the method uses one.
    ///
    /// Signing cannot fail with a key that was checked when the configuration was built; if
    /// it does anyway, it is a permanent [`TokenError::ClientAssertion`]. An assertion from
    /// outside fails as [`ClientAssertion`] says.
    pub(crate) async fn to_request(&self) -> Result<Request<Full<Bytes>>, TokenError> {
        let body = match &self.assertion {
            None => self.body.clone(),
            Some(assertion) => {
                // Base64url and dots (checked when read), which form encoding leaves as they
                // are.
                let jwt = match assertion {
                    Assertion::Signed(signer) => Zeroizing::new(
                        signer
                            .sign()
                            .map_err(|error| TokenError::ClientAssertion { reason: error.0 })?,
                    ),
                    Assertion::External(assertion) => assertion.read().await?,
                };
                let mut body = BytesMut::with_capacity(self.body.len() + jwt.len());
                body.extend_from_slice(&self.body);
                body.extend_from_slice(jwt.as_bytes());
                body.freeze()
            }
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        Ok(request)
    }
}

enum Value<'a> {
    One(&'a str),
    Many(&'a [String]),
}

fn encode_form(fields: &[(&str, Value<'_>)]) -> Vec<u8> {
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(fields.len() + 2);
    for (name, value) in fields {
        match value {
            Value::One(value) => pairs.push((name, value)),
            Value::Many(values) => pairs.extend(values.iter().map(|v| (*name, v.as_str()))),
        }
    }
    // Encoding string pairs cannot fail.
    serde_urlencoded::to_string(&pairs)
        .unwrap_or_default()
        .into_bytes()
}

fn encode_json(fields: &[(&str, Value<'_>)]) -> Vec<u8> {
    let mut object = serde_json::Map::with_capacity(fields.len());
    for (name, value) in fields {
        let value = match value {
            Value::One(value) => serde_json::Value::from(*value),
            Value::Many([single]) => serde_json::Value::from(single.as_str()),
            Value::Many(values) => serde_json::Value::from(values.to_vec()),
        };
        object.insert((*name).to_owned(), value);
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, marked sensitive, its bytes (and every
/// intermediate copy) zeroed when dropped.
fn basic_authorization(client_id: &str, client_secret: &str) -> HeaderValue {
    use base64::Engine;
    let credentials = Zeroizing::new(format!(
        "{}:{}",
        utf8_percent_encode(client_id, NON_UNRESERVED),
        utf8_percent_encode(client_secret, NON_UNRESERVED)
    ));
    let encoded =
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes()));
    // Base64 output is always a valid header value.
    crate::token::sensitive_header("Basic", &encoded)
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"))
}

fn validate(client_id: &str, params: &Parameters) -> Result<(), ConfigError> {
    let invalid = |name: &str, reason: &str| ConfigError::InvalidParameter {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if client_id.is_empty() {
        return Err(invalid("client_id", "must not be empty"));
    }
    for scope in &params.scopes {
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if scope.is_empty()
            || !scope
                .bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        {
            return Err(invalid(
                "scope",
                "each scope must be a non-empty run of printable ASCII without spaces, `\"` or `\\`",
            ));
        }
    }
    if params.resources.iter().any(|r| r.is_empty()) {
        return Err(invalid("resource", "must not be empty"));
    }
    for (name, _) in &params.extra {
        if name.is_empty() {
            return Err(invalid(name, "parameter names must not be empty"));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(invalid(
                name,
                "is set by this crate; use the builder's dedicated option instead",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use http_body_util::BodyExt;

    const AWKWARD: &str = "p@ss w+rd:/%?&=";

    fn options() -> AssertionOptions {
        AssertionOptions {
            audience: "https://auth.example/token".into(),
            lifetime: Duration::from_secs(60),
        }
    }

    fn prepared(auth: AuthMethod, format: RequestFormat, params: &Parameters) -> PreparedRequest {
        PreparedRequest::new(
            Uri::from_static("https://auth.example/token"),
            "client id",
            &Credential::Secret(SecretString::from(AWKWARD)),
            auth,
            format,
            params,
            &options(),
        )
        .unwrap()
    }

    async fn body(request: Request<Full<Bytes>>) -> String {
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn params() -> Parameters {
        Parameters {
            scopes: vec!["orders:read".into(), "orders:write".into()],
            audience: Some("https://api.example".into()),
            resources: vec!["urn:a".into(), "urn:b".into()],
            extra: vec![("tenant".into(), "x y".into())],
        }
    }

    #[tokio::test]
    async fn basic_auth_percent_encodes_each_part() {
        let request = prepared(
            AuthMethod::ClientSecretBasic,
            RequestFormat::Form,
            &params(),
        );
        let request = request.to_request().await.unwrap();
        let header = request.headers()[header::AUTHORIZATION].to_str().unwrap();
        assert!(request.headers()[header::AUTHORIZATION].is_sensitive());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "client%20id:p%40ss%20w%2Brd%3A%2F%25%3F%26%3D"
        );
        assert_eq!(
            request.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            body(request).await,
            "grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite\
             &audience=https%3A%2F%2Fapi.example&resource=urn%3Aa&resource=urn%3Ab&tenant=x+y"
        );
    }

    #[tokio::test]
    async fn post_auth_puts_credentials_in_the_form() {
        let request = prepared(
            AuthMethod::ClientSecretPost,
            RequestFormat::Form,
            &Parameters::default(),
        );
        let request = request.to_request().await.unwrap();
        assert!(request.headers().get(header::AUTHORIZATION).is_none());
        let form: Vec<(String, String)> = serde_urlencoded::from_str(&body(request).await).unwrap();
        assert_eq!(
            form,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "client id".into()),
                ("client_secret".into(), AWKWARD.into()),
            ]
        );
    }

    #[tokio::test]
    async fn json_body_matches_the_documented_shape() {
        let mut params = params();
        params.scopes = vec!["*".into()];
        let request = prepared(AuthMethod::ClientSecretPost, RequestFormat::Json, &params);
        let request = request.to_request().await.unwrap();
        assert_eq!(request.headers()[header::CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_str(&body(request).await).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": "client id",
                "client_secret": AWKWARD,
                "scope": "*",
                "audience": "https://api.example",
                "resource": ["urn:a", "urn:b"],
                "tenant": "x y",
            })
        );
    }

    #[test]
    fn reserved_and_malformed_parameters_are_rejected() {
        let build = |params: Parameters| {
            PreparedRequest::new(
                Uri::from_static("https://auth.example/token"),
                "id",
                &Credential::Secret(SecretString::from("s")),
                AuthMethod::ClientSecretBasic,
                RequestFormat::Form,
                &params,
                &options(),
            )
        };
        let extra = |name: &str| Parameters {
            extra: vec![(name.into(), "v".into())],
            ..Parameters::default()
        };
        assert!(matches!(
            build(extra("client_secret")),
            Err(ConfigError::InvalidParameter { .. })
        ));
        assert!(matches!(
            build(extra("")),
            Err(ConfigError::InvalidParameter { .. })
        ));
        let scopes = Parameters {
            scopes: vec!["a b".into()],
            ..Parameters::default()
        };
        assert!(build(scopes).is_err());
        assert!(build(Parameters::default()).is_ok());
    }

    /// `client_secret_jwt`: `client_id` and a fresh HS256 assertion in the form, no secret and
    /// no `Authorization` header; a new `jti` on every request.
    #[tokio::test]
    async fn client_secret_jwt_sends_a_fresh_assertion_and_never_the_secret() {
        let request = prepared(
            AuthMethod::ClientSecretJwt,
            RequestFormat::Form,
            &Parameters::default(),
        );
        let mut seen = Vec::new();
        for _ in 0..2 {
            let request = request.to_request().await.unwrap();
            assert!(request.headers().get(header::AUTHORIZATION).is_none());
            let body = body(request).await;
            assert!(!body.contains("p%40ss"), "{body}");
            let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
            let names: Vec<&str> = form.iter().map(|(name, _)| name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "grant_type",
                    "client_id",
                    "client_assertion_type",
                    "client_assertion"
                ]
            );
            assert_eq!(form[1].1, "client id");
            assert_eq!(form[2].1, ASSERTION_TYPE);
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            validation.set_audience(&["https://auth.example/token"]);
            let claims: serde_json::Value = jsonwebtoken::decode(
                &form[3].1,
                &jsonwebtoken::DecodingKey::from_secret(AWKWARD.as_bytes()),
                &validation,
            )
            .unwrap()
            .claims;
            assert_eq!(claims["iss"], "client id");
            assert_eq!(claims["sub"], "client id");
            seen.push(claims["jti"].as_str().unwrap().to_owned());
        }
        assert_ne!(seen[0], seen[1]);
    }

    /// Mutual TLS (RFC 8705 §2): `client_id` in the body, no secret, no assertion and no
    /// `Authorization` header, in a form or a JSON body.
    #[tokio::test]
    async fn mutual_tls_sends_the_client_id_and_nothing_else_of_the_client() {
        assert_eq!(AuthMethod::TlsClientAuth.as_str(), "tls_client_auth");
        assert_eq!(
            AuthMethod::SelfSignedTlsClientAuth.as_str(),
            "self_signed_tls_client_auth"
        );
        assert!(AuthMethod::TlsClientAuth.is_mutual_tls());
        assert!(!AuthMethod::ClientSecretBasic.is_mutual_tls());
        assert_eq!(
            Credential::Tls.default_method(RequestFormat::Form),
            AuthMethod::TlsClientAuth
        );
        let build = |auth, format| {
            PreparedRequest::new(
                Uri::from_static("https://mtls.auth.example/token"),
                "client id",
                &Credential::Tls,
                auth,
                format,
                &Parameters {
                    scopes: vec!["orders:read".into()],
                    ..Parameters::default()
                },
                &options(),
            )
            .unwrap()
        };
        for method in [
            AuthMethod::TlsClientAuth,
            AuthMethod::SelfSignedTlsClientAuth,
        ] {
            let request = build(method, RequestFormat::Form)
                .to_request()
                .await
                .unwrap();
            assert!(request.headers().get(header::AUTHORIZATION).is_none());
            assert_eq!(
                body(request).await,
                "grant_type=client_credentials&client_id=client+id&scope=orders%3Aread"
            );
            let request = build(method, RequestFormat::Json)
                .to_request()
                .await
                .unwrap();
            assert!(request.headers().get(header::AUTHORIZATION).is_none());
            let json: serde_json::Value = serde_json::from_str(&body(request).await).unwrap();
            assert_eq!(
                json,
                serde_json::json!({
                    "grant_type": "client_credentials",
                    "client_id": "client id",
                    "scope": "orders:read",
                })
            );
        }
    }

    #[test]
    fn credentials_and_methods_must_match() {
        let key = ClientKey::from_pem(
            super::super::assertion::SigningAlgorithm::ES256,
            tower_client_credentials_testkit::keys::TestKey::p256().private_pem(),
        )
        .unwrap();
        let build = |credential: &Credential, auth, format| {
            PreparedRequest::new(
                Uri::from_static("https://auth.example/token"),
                "id",
                credential,
                auth,
                format,
                &Parameters::default(),
                &options(),
            )
        };
        let secret = Credential::Secret(SecretString::from("s"));
        let key = Credential::Key(key);
        let refused = |result: Result<PreparedRequest, ConfigError>, name: &str| match result {
            Err(ConfigError::InvalidParameter { name: got, .. }) => assert_eq!(got, name),
            Err(other) => panic!("expected `{name}` to be refused, got {other}"),
            Ok(_) => panic!("expected `{name}` to be refused"),
        };
        refused(
            build(&secret, AuthMethod::PrivateKeyJwt, RequestFormat::Form),
            "auth_method",
        );
        for method in [
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::ClientSecretJwt,
        ] {
            refused(build(&key, method, RequestFormat::Form), "auth_method");
        }
        refused(
            build(&key, AuthMethod::PrivateKeyJwt, RequestFormat::Json),
            "request_format",
        );
        refused(
            build(&secret, AuthMethod::ClientSecretJwt, RequestFormat::Json),
            "request_format",
        );
        // A certificate goes with the mutual-TLS methods only, and they with it only.
        for method in [
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::ClientSecretJwt,
            AuthMethod::PrivateKeyJwt,
        ] {
            refused(
                build(&Credential::Tls, method, RequestFormat::Form),
                "auth_method",
            );
        }
        for method in [
            AuthMethod::TlsClientAuth,
            AuthMethod::SelfSignedTlsClientAuth,
        ] {
            refused(build(&secret, method, RequestFormat::Form), "auth_method");
            refused(build(&key, method, RequestFormat::Form), "auth_method");
        }
        assert!(build(&key, AuthMethod::PrivateKeyJwt, RequestFormat::Form).is_ok());
        assert!(build(&secret, AuthMethod::ClientSecretJwt, RequestFormat::Form).is_ok());
        let debug = format!(
            "{:?}",
            Credential::Secret(SecretString::from("hunter2-secret"))
        );
        assert_eq!(debug, r#"Secret("[redacted]")"#);
    }
}
