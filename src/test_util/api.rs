//! The mock protected resource: accepts live tokens from a [`TokenRegistry`] and echoes bodies.

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use percent_encoding::{AsciiSet, CONTROLS};
use tokio::time::Instant;
use tower_service::Service;

use super::{
    BoxBody, BoxError, body, lock,
    registry::TokenRegistry,
    serve::{self, Handler, ResponseFuture, Running},
};

/// The header that carries the `jti` of the token an accepted request used.
pub const TOKEN_JTI_HEADER: HeaderName = HeaderName::from_static("x-token-jti");

/// The header that lists the request trailers of an accepted request, as `name=value;…`.
pub const TRAILERS_HEADER: HeaderName = HeaderName::from_static("x-trailers");

/// How many `jti` values [`MockApi::seen_jtis`] keeps.
const MAX_SEEN_JTIS: usize = 100_000;

/// The characters gRPC percent-encodes in `grpc-message` (besides non-ASCII).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Why a [`MockApi`] rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is malformed, badly signed, from another issuer, or unknown to the registry.
    Invalid,
    /// A token past its expiry on tokio's clock.
    Expired,
    /// A revoked token.
    Revoked,
    /// A token for another audience than the expected one.
    WrongAudience,
    /// Any token, because [`MockApi::set_reject_all`] is on.
    Forced,
}

impl RejectReason {
    const ALL: [Self; 6] = [
        Self::Missing,
        Self::Invalid,
        Self::Expired,
        Self::Revoked,
        Self::WrongAudience,
        Self::Forced,
    ];

    fn index(self) -> usize {
        match self {
            Self::Missing => 0,
            Self::Invalid => 1,
            Self::Expired => 2,
            Self::Revoked => 3,
            Self::WrongAudience => 4,
            Self::Forced => 5,
        }
    }
}

/// A protected resource server that accepts the tokens of one
/// [`MockAuthServer`](super::MockAuthServer).
///
/// A request is accepted when it has `Authorization: Bearer <token>` and the token has a valid
/// HS256 signature and issuer, is in the [`TokenRegistry`], is not revoked, has not expired on
/// tokio's clock, and (if an audience is expected) is for that audience. An accepted request
/// gets `200 OK` whose body is the request body, with the request's `Content-Type`,
/// [`x-token-jti`](TOKEN_JTI_HEADER) and, when the request body had trailers,
/// [`x-trailers`](TRAILERS_HEADER). Any path and method is accepted.
///
/// A rejected request gets `401 Unauthorized` with
/// `WWW-Authenticate: Bearer error="invalid_token", error_description="…"` ([RFC 6750 §3]), or
/// `WWW-Authenticate: Bearer realm="mock"` when it had no token. In [gRPC mode](Self::grpc) it
/// gets `200 OK` with `grpc-status: 16` (UNAUTHENTICATED) instead, and accepted responses end
/// with a `grpc-status: 0` trailer.
///
/// Cloning is cheap and every clone is the same server. The listening task started by
/// [`serve`](Self::serve) stops on [`shutdown`](Self::shutdown) or when the last clone is
/// dropped.
///
/// [RFC 6750 §3]: https://www.rfc-editor.org/rfc/rfc6750#section-3
#[derive(Clone)]
pub struct MockApi {
    inner: Arc<Shared>,
}

struct Shared {
    state: Arc<State>,
    running: Mutex<Option<Running>>,
}

struct State {
    registry: TokenRegistry,
    config: Mutex<Config>,
    accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    jtis: Mutex<Vec<String>>,
    last_headers: Mutex<Option<HeaderMap>>,
}

#[derive(Clone, Default)]
struct Config {
    expected_audience: Option<String>,
    grpc: bool,
    reject_all: bool,
    delay: Option<Duration>,
}

impl MockApi {
    /// An API that accepts the tokens of `registry`, with any audience, answering plain HTTP,
    /// without delay.
    pub fn new(registry: TokenRegistry) -> Self {
        let state = State {
            registry,
            config: Mutex::new(Config::default()),
            accepted: AtomicU64::new(0),
            rejected: Default::default(),
            jtis: Mutex::new(Vec::new()),
            last_headers: Mutex::new(None),
        };
        Self {
            inner: Arc::new(Shared {
                state: Arc::new(state),
                running: Mutex::new(None),
            }),
        }
    }

    /// Accepts only tokens whose `aud` is `audience`. Defaults to any audience.
    pub fn expected_audience(self, audience: impl Into<String>) -> Self {
        self.set_expected_audience(Some(audience.into()));
        self
    }

    /// Answers rejections gRPC-style (`200 OK`, `grpc-status: 16`). Defaults to `false`.
    pub fn grpc(self, grpc: bool) -> Self {
        self.set_grpc(grpc);
        self
    }

    /// Rejects every token. Defaults to `false`.
    pub fn reject_all(self, reject_all: bool) -> Self {
        self.set_reject_all(reject_all);
        self
    }

    /// Waits `delay` before each response. Defaults to no delay.
    pub fn delay(self, delay: Duration) -> Self {
        self.set_delay(Some(delay));
        self
    }

    /// Sets the expected audience (`None`: any) from now on.
    pub fn set_expected_audience(&self, audience: Option<String>) {
        lock(&self.inner.state.config).expected_audience = audience;
    }

    /// Turns gRPC mode on or off from now on.
    pub fn set_grpc(&self, grpc: bool) {
        lock(&self.inner.state.config).grpc = grpc;
    }

    /// Turns rejecting every token on or off from now on.
    pub fn set_reject_all(&self, reject_all: bool) {
        lock(&self.inner.state.config).reject_all = reject_all;
    }

    /// Sets the delay before each response (`None`: none) from now on.
    pub fn set_delay(&self, delay: Option<Duration>) {
        lock(&self.inner.state.config).delay = delay;
    }

    /// The API as an in-memory [`Service`]: no socket, and it works on a paused clock.
    pub fn service(&self) -> MockApiService {
        MockApiService {
            handler: ApiHandler(self.inner.state.clone()),
        }
    }

    /// Answers one request whose body has been read (and had no trailers).
    pub async fn handle(&self, request: Request<Bytes>) -> Response<BoxBody> {
        self.inner.state.clone().handle(request, None).await
    }

    /// Starts listening on `127.0.0.1:0` (HTTP/1.1, and HTTP/2 with prior knowledge) from a
    /// task spawned on the current tokio runtime, and returns the address. If the API is
    /// already listening, returns its address.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn serve(&self) -> io::Result<SocketAddr> {
        if let Some(addr) = self.local_addr() {
            return Ok(addr);
        }
        let running = serve::serve(ApiHandler(self.inner.state.clone()), "api").await?;
        let mut slot = lock(&self.inner.running);
        Ok(slot.get_or_insert(running).addr())
    }

    /// The address the API listens on, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.inner.running).as_ref().map(Running::addr)
    }

    /// The API's base URL, `http://127.0.0.1:PORT`, to which any path may be appended.
    ///
    /// # Panics
    ///
    /// If the API is not listening: call [`serve`](Self::serve) first.
    pub fn url(&self) -> String {
        match self.local_addr() {
            Some(addr) => format!("http://{addr}"),
            None => panic!("MockApi::url called before MockApi::serve"),
        }
    }

    /// Stops listening and drops every open connection. The in-memory service keeps working,
    /// and [`serve`](Self::serve) may be called again (on a new port).
    pub fn shutdown(&self) {
        lock(&self.inner.running).take();
    }

    /// The registry whose tokens the API accepts.
    pub fn registry(&self) -> TokenRegistry {
        self.inner.state.registry.clone()
    }

    /// How many requests the API answered or is answering.
    pub fn requests(&self) -> u64 {
        self.accepted() + self.rejected_total()
    }

    /// How many requests were accepted.
    pub fn accepted(&self) -> u64 {
        self.inner.state.accepted.load(Ordering::SeqCst)
    }

    /// How many requests were rejected for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.inner.state.rejected[reason.index()].load(Ordering::SeqCst)
    }

    /// How many requests were rejected, for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.inner
            .state
            .rejected
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .sum()
    }

    /// The `jti` of the token of each accepted request, in order (the first 100 000 only, so
    /// that long benchmarks do not grow it without bound).
    pub fn seen_jtis(&self) -> Vec<String> {
        lock(&self.inner.state.jtis).clone()
    }

    /// The headers of the last request (the `Authorization` header marked sensitive).
    pub fn last_request_headers(&self) -> Option<HeaderMap> {
        lock(&self.inner.state.last_headers).clone()
    }
}

impl fmt::Debug for MockApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected: Vec<(RejectReason, u64)> = RejectReason::ALL
            .into_iter()
            .map(|reason| (reason, self.rejected(reason)))
            .filter(|(_, count)| *count > 0)
            .collect();
        f.debug_struct("MockApi")
            .field("local_addr", &self.local_addr())
            .field("accepted", &self.accepted())
            .field("rejected", &rejected)
            .finish_non_exhaustive()
    }
}

/// [`MockApi`] as an in-memory [`Service`], from [`MockApi::service`].
///
/// It reads the whole request body (with its trailers), then answers. It is always ready, and
/// fails only when the request body fails.
#[derive(Clone)]
pub struct MockApiService {
    handler: ApiHandler,
}

impl<B> Service<Request<B>> for MockApiService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::new(self.handler.clone(), request)
    }
}

impl fmt::Debug for MockApiService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockApiService").finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct ApiHandler(Arc<State>);

impl Handler for ApiHandler {
    fn handle(
        &self,
        request: Request<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> impl Future<Output = Response<BoxBody>> + Send + 'static {
        self.0.clone().handle(request, trailers)
    }
}

impl State {
    async fn handle(
        self: Arc<Self>,
        request: Request<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> Response<BoxBody> {
        let config = lock(&self.config).clone();
        if let Some(delay) = config.delay {
            tokio::time::sleep(delay).await;
        }
        let mut headers = request.headers().clone();
        if let Some(value) = headers.get_mut(header::AUTHORIZATION) {
            value.set_sensitive(true);
        }
        *lock(&self.last_headers) = Some(headers);

        match self.check(&request, &config) {
            Ok(jti) => {
                self.accepted.fetch_add(1, Ordering::SeqCst);
                let mut jtis = lock(&self.jtis);
                if jtis.len() < MAX_SEEN_JTIS {
                    jtis.push(jti.clone());
                }
                drop(jtis);
                tracing::debug!(jti, "mock API accepted a request");
                accept(request, trailers, &jti, config.grpc)
            }
            Err((reason, description)) => {
                self.rejected[reason.index()].fetch_add(1, Ordering::SeqCst);
                tracing::debug!(?reason, "mock API rejected a request");
                reject(description, config.grpc)
            }
        }
    }

    /// Returns the token's `jti`, or why the request is rejected.
    fn check(
        &self,
        request: &Request<Bytes>,
        config: &Config,
    ) -> Result<String, (RejectReason, Option<&'static str>)> {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .ok_or((RejectReason::Missing, None))?;
        if config.reject_all {
            return Err((RejectReason::Forced, Some("the access token was rejected")));
        }
        let invalid = (
            RejectReason::Invalid,
            Some("the access token is malformed, badly signed or unknown"),
        );
        let claims = self.registry.verify(token).map_err(|_| invalid)?;
        let issued = self.registry.get(token).ok_or(invalid)?;
        if issued.revoked {
            return Err((RejectReason::Revoked, Some("the access token was revoked")));
        }
        if Instant::now() >= issued.expires_at {
            return Err((RejectReason::Expired, Some("the access token expired")));
        }
        if let Some(expected) = &config.expected_audience
            && &issued.audience != expected
        {
            return Err((
                RejectReason::WrongAudience,
                Some("the access token is for another audience"),
            ));
        }
        Ok(claims.jti)
    }
}

fn accept(
    request: Request<Bytes>,
    trailers: Option<HeaderMap>,
    jti: &str,
    grpc: bool,
) -> Response<BoxBody> {
    let (parts, bytes) = request.into_parts();
    let mut response = if grpc {
        let mut grpc_trailers = HeaderMap::new();
        grpc_trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Response::new(body::full_with_trailers(bytes, grpc_trailers))
    } else {
        Response::new(body::full(bytes))
    };
    let headers = response.headers_mut();
    match parts.headers.get(header::CONTENT_TYPE) {
        Some(content_type) => {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
        None if grpc => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
        }
        None => {}
    }
    if let Ok(jti) = HeaderValue::from_str(jti) {
        headers.insert(TOKEN_JTI_HEADER, jti);
    }
    if let Some(trailers) = trailers.filter(|trailers| !trailers.is_empty()) {
        let mut list = Vec::new();
        for (name, value) in &trailers {
            if !list.is_empty() {
                list.push(b';');
            }
            list.extend_from_slice(name.as_str().as_bytes());
            list.push(b'=');
            list.extend_from_slice(value.as_bytes());
        }
        if let Ok(list) = HeaderValue::from_bytes(&list) {
            headers.insert(TRAILERS_HEADER, list);
        }
    }
    response
}

fn reject(description: Option<&str>, grpc: bool) -> Response<BoxBody> {
    let challenge = match description {
        Some(description) => HeaderValue::from_str(&format!(
            r#"Bearer error="invalid_token", error_description="{description}""#
        )),
        None => Ok(HeaderValue::from_static(r#"Bearer realm="mock""#)),
    };
    let message = description.unwrap_or("an access token is required");
    let mut response = if grpc {
        let mut response = Response::new(body::full(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("16"));
        let encoded = percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string();
        if let Ok(encoded) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", encoded);
        }
        response
    } else {
        let body = description.map_or_else(String::new, |description| {
            serde_json::json!({
                "error": "invalid_token",
                "error_description": description,
            })
            .to_string()
        });
        let mut response = Response::new(body::full(body));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        if description.is_some() {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        response
    };
    if let Ok(challenge) = challenge {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full};
    use serde_json::Value;

    use super::super::{MockAuthServer, test_support::*};
    use super::*;

    #[tokio::test]
    async fn api_accepts_and_echoes() {
        let server = MockAuthServer::new();
        let api = MockApi::new(server.registry());
        let token = fetch_token(&server).await;
        let mut service = api.service();
        let (status, headers, bytes) =
            read(send(&mut service, api_request(Some(&token), "hello")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes, "hello");
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        let jti = server.last_token().expect("token").jti;
        assert_eq!(headers["x-token-jti"], jti.as_str());
        assert!(headers.get("x-trailers").is_none());
        assert_eq!(api.seen_jtis(), [jti]);
        assert_eq!(
            (api.accepted(), api.rejected_total(), api.requests()),
            (1, 0, 1)
        );
        let last = api.last_request_headers().expect("headers");
        assert!(last[header::AUTHORIZATION].is_sensitive());

        // Trailers are listed.
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        trailers.insert("x-other", HeaderValue::from_static("1"));
        let body = Full::new(Bytes::from_static(b"with trailers"))
            .map_err(|never: Infallible| -> BoxError { match never {} })
            .with_trailers(async move { Some(Ok(trailers)) });
        let request = Request::post("http://api.test/")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(body)
            .expect("request");
        let (status, headers, bytes) = read(service.call(request).await.expect("call")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes, "with trailers");
        assert_eq!(headers["x-trailers"], "x-checksum=abc;x-other=1");
    }

    #[tokio::test]
    async fn api_rejections() {
        let server = MockAuthServer::new();
        let api = server.api();
        let mut service = api.service();
        let token = fetch_token(&server).await;

        let (status, headers, bytes) = read(send(&mut service, api_request(None, "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Bearer realm="mock""#);
        assert!(bytes.is_empty());

        let (status, headers, _) =
            read(send(&mut service, api_request(Some("garbage"), "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let challenge = headers[header::WWW_AUTHENTICATE].to_str().expect("ascii");
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token", error_description=""#),
            "{challenge}"
        );

        // A valid token from another server.
        let other = MockAuthServer::new();
        let foreign = fetch_token(&other).await;
        let (status, _, _) = read(send(&mut service, api_request(Some(&foreign), "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(api.rejected(RejectReason::Invalid), 2);

        // Wrong audience.
        let strict = server.api().expected_audience("somewhere-else");
        let (status, _, _) =
            read(send(&mut strict.service(), api_request(Some(&token), "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(strict.rejected(RejectReason::WrongAudience), 1);
        strict.set_expected_audience(Some("mock-api".to_owned()));
        let (status, _, _) =
            read(send(&mut strict.service(), api_request(Some(&token), "")).await).await;
        assert_eq!(status, StatusCode::OK);

        // Forced.
        api.set_reject_all(true);
        let (status, _, _) = read(send(&mut service, api_request(Some(&token), "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        api.set_reject_all(false);

        // Revoked.
        assert!(server.revoke(&token));
        let (status, headers, _) =
            read(send(&mut service, api_request(Some(&token), "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .contains("revoked")
        );

        let fresh = fetch_token(&server).await;
        let (status, _, _) = read(send(&mut service, api_request(Some(&fresh), "")).await).await;
        assert_eq!(status, StatusCode::OK);
        server.revoke_all();
        let (status, _, _) = read(send(&mut service, api_request(Some(&fresh), "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        assert_eq!(api.rejected(RejectReason::Missing), 1);
        assert_eq!(api.rejected(RejectReason::Forced), 1);
        assert_eq!(api.rejected(RejectReason::Revoked), 2);
        assert_eq!(api.rejected(RejectReason::Expired), 0);
        assert_eq!(api.rejected_total(), 6);
        assert_eq!(api.accepted(), 1);
        assert!(!server.revoke("unknown"));
    }

    #[tokio::test(start_paused = true)]
    async fn api_expiry_on_the_paused_clock() {
        let server = MockAuthServer::new();
        let api = server.api();
        let mut service = api.service();
        let token = fetch_token(&server).await;
        tokio::time::advance(Duration::from_secs(59)).await;
        let (status, _, _) = read(send(&mut service, api_request(Some(&token), "")).await).await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(server.last_token().expect("token").is_expired());
        let (status, headers, body) =
            read(send(&mut service, api_request(Some(&token), "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .contains("expired")
        );
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(api.rejected(RejectReason::Expired), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn api_delay() {
        let server = MockAuthServer::new();
        let api = server.api().delay(Duration::from_millis(250));
        let start = Instant::now();
        let (status, _, _) = read(send(&mut api.service(), api_request(None, "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        api.set_delay(None);
        let start = Instant::now();
        send(&mut api.service(), api_request(None, "")).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn api_grpc_mode() {
        let server = MockAuthServer::new();
        let api = server.api().grpc(true);
        let mut service = api.service();
        let (status, headers, bytes) =
            read(send(&mut service, api_request(Some("garbage"), "")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["grpc-status"], "16");
        assert_eq!(headers[header::CONTENT_TYPE], "application/grpc");
        assert!(
            headers["grpc-message"]
                .to_str()
                .expect("ascii")
                .contains("malformed")
        );
        assert!(bytes.is_empty());

        let token = fetch_token(&server).await;
        let request = Request::post("http://api.test/pkg.Svc/Method")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01x")))
            .expect("request");
        let response = send(&mut service, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("grpc-status").is_none());
        let collected = response.into_body().collect().await.expect("body");
        assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x01x"[..]);
    }
}
