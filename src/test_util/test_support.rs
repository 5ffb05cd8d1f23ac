//! Helpers shared by the unit tests of the mock servers.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tower_service::Service;

use super::{
    BoxBody, BoxError, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer, TOKEN_PATH,
};

pub(crate) fn basic(id: &str, secret: &str) -> String {
    let encode = |value: &str| utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
    let credentials = format!("{}:{}", encode(id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("form")
}

pub(crate) fn token_request(
    content_type: &str,
    authorization: Option<String>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(format!("http://auth.test{TOKEN_PATH}"))
        .header(header::CONTENT_TYPE, content_type);
    if let Some(authorization) = authorization {
        builder = builder.header(header::AUTHORIZATION, authorization);
    }
    builder.body(Full::new(body.into())).expect("request")
}

pub(crate) fn form_basic(pairs: &[(&str, &str)]) -> Request<Full<Bytes>> {
    token_request(
        "application/x-www-form-urlencoded",
        Some(basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
        form(pairs),
    )
}

pub(crate) fn form_post(pairs: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut all = vec![
        ("client_id", DEFAULT_CLIENT_ID),
        ("client_secret", DEFAULT_CLIENT_SECRET),
    ];
    all.extend_from_slice(pairs);
    token_request("application/x-www-form-urlencoded", None, form(&all))
}

pub(crate) const GRANT: (&str, &str) = ("grant_type", "client_credentials");

pub(crate) async fn send<S>(service: &mut S, request: Request<Full<Bytes>>) -> Response<BoxBody>
where
    S: Service<Request<Full<Bytes>>, Response = Response<BoxBody>, Error = BoxError>,
{
    service.call(request).await.expect("in-memory call")
}

pub(crate) async fn read(response: Response<BoxBody>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

pub(crate) async fn json(response: Response<BoxBody>) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, bytes) = read(response).await;
    let value = serde_json::from_slice(&bytes).expect("JSON body");
    (status, headers, value)
}

pub(crate) async fn fetch_token(server: &MockAuthServer) -> String {
    let (status, _, body) = json(send(&mut server.service(), form_basic(&[GRANT])).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().expect("token").to_owned()
}

pub(crate) fn api_request(token: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
    let mut builder =
        Request::post("http://api.test/v1/echo").header(header::CONTENT_TYPE, "text/plain");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request")
}

pub(crate) fn assert_oauth_error(
    status: StatusCode,
    body: &Value,
    expected: StatusCode,
    error: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}
