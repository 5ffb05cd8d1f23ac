//! The HTTP helpers of the real-server suites: a plain hyper client for the requests the tests
//! make themselves, the crate's middleware around it, and the RFC 6749 §2.3.1 Basic header.

use std::io::Write;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tower::{Layer, ServiceExt};
use tower_client_credentials::{BearerAuth, BearerAuthLayer, TokenHandle};

/// A hyper client for the requests the tests make themselves (not through the crate).
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The crate's middleware around a plain hyper client.
pub(crate) type Api = BearerAuth<HttpClient>;

/// The crate's middleware, with its defaults, around a plain hyper client.
pub(crate) fn api(handle: &TokenHandle) -> Api {
    BearerAuthLayer::new(handle.clone()).layer(http_client())
}

/// A GET through the middleware; its status.
pub(crate) async fn get(api: &Api, url: &str) -> StatusCode {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = api.clone().oneshot(request).await.expect("request sent");
    let status = response.status();
    response.into_body().collect().await.expect("body");
    status
}

/// A request of our own to the authorization server: a form body, Basic credentials
/// (RFC 6749 §2.3.1 encoding) when `basic` is given, and extra headers. Returns the status,
/// headers and body.
pub(crate) async fn send_form(
    client: &HttpClient,
    method: Method,
    url: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some((id, secret)) = basic {
        request = request.header(header::AUTHORIZATION, basic_authorization(id, secret));
    }
    let body = if form.is_empty() {
        Bytes::new()
    } else {
        request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        Bytes::from(serde_urlencoded::to_string(form).expect("form"))
    };
    let request = request.body(Full::new(body)).expect("request");
    send_request(client, request).await
}

/// Sends `request` to the authorization server; the status, headers and body.
pub(crate) async fn send_request(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Bytes) {
    let response = client
        .request(request)
        .await
        .expect("request to the authorization server");
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the authorization server's body")
        .to_bytes();
    (parts.status, parts.headers, body)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1 asks.
pub(crate) fn basic_authorization(id: &str, secret: &str) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", encode(id), encode(secret)))
    )
}

/// Writes to the process's stderr directly, past libtest's output capture, so the line shows
/// for a passing test too.
pub(crate) fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
