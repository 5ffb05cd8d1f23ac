//! Where the token goes: the origin allowlist, redirects, plain http; and what operators see:
//! health status and metrics. (Secrets in logs: `tests/no_leaks.rs`.)

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_client_credentials::{
    BearerAuthLayer, ClientCredentials, ConfigError, Origin, TokenError,
};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockAuthServer, RejectReason,
};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn the_token_goes_only_to_allowed_origins() {
    let auth = MockAuthServer::start().await.unwrap();
    let allowed = auth.api();
    allowed.serve().await.unwrap();
    let other = auth.api();
    other.serve().await.unwrap();
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
    let service = BearerAuthLayer::new(tokens)
        .allow_origins([allowed.url().parse::<Origin>().unwrap()])
        .layer(http_client());

    let response = service
        .clone()
        .oneshot(get(&format!("{}/a", allowed.url())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allowed.accepted(), 1);

    // Another origin (another port on the same host): no token.
    let response = service
        .clone()
        .oneshot(get(&format!("{}/b", other.url())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(other.rejected(RejectReason::Missing), 1);
    assert!(
        other
            .last_request_headers()
            .unwrap()
            .get(header::AUTHORIZATION)
            .is_none()
    );

    // An Authorization header the request carried to that origin is left alone.
    let mut request = get(&format!("{}/c", other.url()));
    request.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer their-own"),
    );
    service.oneshot(request).await.unwrap();
    assert_eq!(
        other.last_request_headers().unwrap()[header::AUTHORIZATION],
        "Bearer their-own"
    );
    // Only the one token request.
    assert_eq!(auth.token_requests(), 1);
}

/// A server on one loopback port that redirects every request to `target`.
async fn redirector(target: String) -> (String, Arc<Mutex<Vec<Option<HeaderValue>>>>) {
    use hyper::{body::Incoming, server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let target = target.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    seen.lock()
                        .unwrap()
                        .push(request.headers().get(header::AUTHORIZATION).cloned());
                    let response = Response::builder()
                        .status(StatusCode::FOUND)
                        .header(header::LOCATION, format!("{target}/landing"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, recorded)
}

#[tokio::test]
async fn a_cross_origin_redirect_never_carries_the_token() {
    use tower_http::follow_redirect::FollowRedirectLayer;

    let auth = MockAuthServer::start().await.unwrap();
    let elsewhere = auth.api();
    elsewhere.serve().await.unwrap();
    let (origin, seen_at_origin) = redirector(elsewhere.url()).await;
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();

    // FollowRedirect outside the layer: every hop comes through the layer, which sends the
    // token only to the allowed origin.
    let service = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(BearerAuthLayer::new(tokens).allow_origins([origin.parse::<Origin>().unwrap()]))
        .service(http_client());
    let response = service
        .oneshot(get(&format!("{origin}/start")))
        .await
        .unwrap();

    // The redirect was followed to the other port…
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(elsewhere.requests(), 1);
    // …which got no token, while the allowed origin did.
    assert_eq!(elsewhere.rejected(RejectReason::Missing), 1);
    let at_origin = seen_at_origin.lock().unwrap().clone();
    assert_eq!(at_origin.len(), 1);
    assert!(
        at_origin[0]
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
}

#[test]
fn plain_http_token_endpoints_are_refused_off_loopback() {
    let error = ClientCredentials::builder("http://auth.example.com/token", "id", "secret")
        .build()
        .unwrap_err();
    assert!(matches!(&error, ConfigError::InsecureTokenUrl { host } if host == "auth.example.com"));
    assert!(error.to_string().contains("allow_insecure_http"));
    assert!(
        ClientCredentials::builder("http://auth.example.com/token", "id", "secret")
            .allow_insecure_http(true)
            .build()
            .is_ok()
    );
    assert!(
        ClientCredentials::builder("http://127.0.0.1:1/token", "id", "secret")
            .build()
            .is_ok()
    );
    assert!(
        ClientCredentials::builder("http://[::1]:1/token", "id", "secret")
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_redirecting_token_endpoint_is_an_error_naming_only_the_origin() {
    let auth = MockAuthServer::new();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_static("https://login.example.net:8443/token?client_secret=leaked"),
    );
    auth.fail_next(
        1,
        Fault::response(StatusCode::TEMPORARY_REDIRECT, headers, ""),
    );
    let error = common::builder(&auth)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Redirect { .. }));
    let text = format!("{error} {error:?}");
    assert!(text.contains("https://login.example.net:8443"), "{text}");
    assert!(!text.contains("leaked"), "{text}");
    assert_eq!(auth.token_requests(), 1, "not followed");
}

#[tokio::test(start_paused = true)]
async fn status_reports_the_last_error_for_health_checks() {
    let auth = MockAuthServer::new();
    let handle = common::builder(&auth)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let status = handle.status();
    assert!(status.valid && status.running);
    assert!(status.last_success.is_some() && status.last_error.is_none());
    assert_eq!(status.expires_in, Some(Duration::from_secs(60)));

    auth.set_fault_plan(|_| Some(Fault::status(StatusCode::BAD_GATEWAY)));
    tokio::time::sleep(Duration::from_secs(55)).await;
    let status = handle.status();
    assert!(status.valid, "the old token is still served");
    let (error, _at) = status.last_error.expect("the failed refresh is reported");
    assert_eq!(error.status(), Some(StatusCode::BAD_GATEWAY));
    assert!(status.next_attempt_in.is_some());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!handle.status().valid);
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_count_fetches_waits_and_retries() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let auth = MockAuthServer::new();
    auth.fail_next(1, Fault::status(StatusCode::SERVICE_UNAVAILABLE));
    let api = auth.api();
    let handle = common::builder(&auth).build().unwrap().spawn();
    let service = common::client(&handle, &api);
    // The first request waits, and fails with the 503.
    assert!(common::send(&service, common::request("a")).await.is_err());
    // The next attempt succeeds; a revoked token then causes one retry.
    tokio::time::sleep(Duration::from_secs(1)).await;
    auth.revoke_all();
    let (status, _) = common::send(&service, common::request("b")).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, label: Option<&str>| {
        snapshot
            .iter()
            .filter(|(key, ..)| {
                key.key().name() == name
                    && label.is_none_or(|l| key.key().labels().any(|x| x.value() == l))
            })
            .map(|(_, _, _, value)| value)
            .collect::<Vec<_>>()
    };
    let counter = |name: &str, label: Option<&str>| match find(name, label).first() {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(
        counter(
            "tower_client_credentials_token_fetches_total",
            Some("success")
        ),
        2
    );
    assert_eq!(
        counter(
            "tower_client_credentials_token_fetches_total",
            Some("transient_error")
        ),
        1
    );
    assert_eq!(
        counter("tower_client_credentials_unauthorized_retries_total", None),
        1
    );
    assert!(matches!(
        find("tower_client_credentials_token_wait_seconds", None).first(),
        Some(DebugValue::Histogram(values)) if !values.is_empty()
    ));
    assert!(matches!(
        find("tower_client_credentials_token_expires_in_seconds", None).first(),
        Some(DebugValue::Gauge(value)) if value.into_inner() > 50.0
    ));
}
