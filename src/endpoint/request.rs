//! Building the token request: body encoding (RFC 6749 §4.4.2 form, or JSON) and client
//! authentication (`client_secret_basic`, `client_secret_post`).
//!
//! With a shared secret the request is the same every time, so it is built once, when the
//! configuration is built, and each fetch clones it (reference-count increments only).

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};

use crate::error::ConfigError;

/// How the client proves its identity to the token endpoint.
///
/// Default: [`AuthMethod::ClientSecretBasic`], unless the body is JSON
/// ([`RequestFormat::Json`]), where it is [`AuthMethod::ClientSecretPost`] because the providers
/// that want JSON document the credentials in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// HTTP Basic authentication (RFC 6749 §2.3.1): `client_id` and `client_secret` are each
    /// percent-encoded, joined with `:` and base64-encoded. A space is encoded as `%20`.
    ClientSecretBasic,
    /// `client_id` and `client_secret` as body parameters.
    ClientSecretPost,
}

impl AuthMethod {
    /// The method's name as registered with IANA (`client_secret_basic`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
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

/// A token request ready to be cloned and sent.
#[derive(Clone)]
pub(crate) struct PreparedRequest {
    uri: Uri,
    content_type: HeaderValue,
    authorization: Option<HeaderValue>,
    body: Bytes,
}

impl PreparedRequest {
    pub(crate) fn new(
        uri: Uri,
        client_id: &str,
        client_secret: &SecretString,
        auth: AuthMethod,
        format: RequestFormat,
        params: &Parameters,
    ) -> Result<Self, ConfigError> {
        validate(client_id, params)?;
        let scope = (!params.scopes.is_empty()).then(|| params.scopes.join(" "));
        let mut fields: Vec<(&str, Value<'_>)> =
            vec![("grant_type", Value::One("client_credentials"))];
        if auth == AuthMethod::ClientSecretPost {
            fields.push(("client_id", Value::One(client_id)));
            fields.push(("client_secret", Value::One(client_secret.expose_secret())));
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

        let (content_type, body) = match format {
            RequestFormat::Form => ("application/x-www-form-urlencoded", encode_form(&fields)),
            RequestFormat::Json => ("application/json", encode_json(&fields)),
        };
        let authorization = match auth {
            AuthMethod::ClientSecretBasic => Some(basic_authorization(
                client_id,
                client_secret.expose_secret(),
            )),
            AuthMethod::ClientSecretPost => None,
        };
        Ok(Self {
            uri,
            content_type: HeaderValue::from_static(content_type),
            authorization,
            body: Bytes::from(body),
        })
    }

    /// A fresh copy of the request.
    pub(crate) fn to_request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        request
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

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, marked sensitive.
fn basic_authorization(client_id: &str, client_secret: &str) -> HeaderValue {
    use base64::Engine;
    let credentials = format!(
        "{}:{}",
        utf8_percent_encode(client_id, NON_UNRESERVED),
        utf8_percent_encode(client_secret, NON_UNRESERVED)
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    // Base64 output is always a valid header value.
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
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

    fn prepared(auth: AuthMethod, format: RequestFormat, params: &Parameters) -> PreparedRequest {
        PreparedRequest::new(
            Uri::from_static("https://auth.example/token"),
            "client id",
            &SecretString::from(AWKWARD),
            auth,
            format,
            params,
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
        let request = request.to_request();
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
        let request = request.to_request();
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
        let request = request.to_request();
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
                &SecretString::from("s"),
                AuthMethod::ClientSecretBasic,
                RequestFormat::Form,
                &params,
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
}
