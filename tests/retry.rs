//! Retrying once after 401 (and gRPC UNAUTHENTICATED): one refresh for any number of refused
//! requests, generations instead of guesses, byte-exact body replay. On tokio's paused clock,
//! against the embedded servers in memory.

mod common;

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header::AUTHORIZATION};
use http_body::{Body, Frame};
use http_body_util::{
    BodyExt, Either, Empty, Full, Limited, StreamBody, combinators::UnsyncBoxBody,
};
use tokio::{sync::Notify, task::JoinSet};
use tower::{Layer, ServiceExt, service_fn};
use tower_client_credentials::{
    BearerAuthLayer, BoxError, NoReplay, Replay, ReplayBodies, ReplayBody, ReplayPolicy,
    layer::default_unauthorized,
};
use tower_client_credentials_testkit::{BoxBody, MockApi, RejectReason, TRAILERS_HEADER};

use common::{auth_server, builder, client, request, send};

const HOUR: Duration = Duration::from_secs(3600);

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>;

#[tokio::test(start_paused = true)]
async fn a_thousand_requests_with_a_revoked_token_cause_one_refresh() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = client(&handle, &api);
    auth.revoke_all();

    let mut requests = JoinSet::new();
    for _ in 0..1000 {
        let service = service.clone();
        requests.spawn(async move { send(&service, request("payload")).await });
    }
    while let Some(result) = requests.join_next().await {
        let (status, body) = result.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "payload");
    }
    assert_eq!(
        auth.token_requests(),
        2,
        "the initial token and one refresh"
    );
    assert_eq!(api.accepted(), 1000);
    // Every refused request was retried once; none more than once.
    let refused = api.rejected(RejectReason::Revoked);
    assert!((1..=1000).contains(&refused), "{refused}");
    assert_eq!(api.requests(), 1000 + refused);
}

/// An inner service that holds the first request marked `x-hold` until released, then
/// forwards it (its retry, which carries the same header, is not held).
fn holding(
    api: &MockApi,
    release: Arc<Notify>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<BoxBody>,
    Error = BoxError,
    Future = ResponseFuture,
> + Clone
+ use<> {
    let api = api.service();
    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    service_fn(move |request: Request<Full<Bytes>>| {
        let api = api.clone();
        let release = Arc::clone(&release);
        let hold = request.headers().contains_key("x-hold") && !held.swap(true, Ordering::SeqCst);
        Box::pin(async move {
            if hold {
                release.notified().await;
            }
            api.oneshot(request).await
        }) as ResponseFuture
    })
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_that_a_sibling_already_replaced_causes_no_new_fetch() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let release = Arc::new(Notify::new());
    let service = BearerAuthLayer::new(handle.clone()).layer(holding(&api, Arc::clone(&release)));

    // A request leaves with token 1 and is held on the way.
    let mut held = request("late");
    held.headers_mut()
        .insert("x-hold", HeaderValue::from_static("1"));
    let late = tokio::spawn({
        let service = service.clone();
        async move { send(&service, held).await }
    });
    tokio::task::yield_now().await;

    // Token 1 is revoked; a sibling gets 401 and brings token 2.
    auth.revoke_all();
    let (status, _) = send(&service, request("sibling")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(handle.current().unwrap().generation(), 2);

    // The held request now meets its 401 and retries with token 2 at once: no third fetch.
    release.notify_one();
    let (status, body) = late.await.unwrap().unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, b"late".as_ref()));
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(handle.current().unwrap().generation(), 2);
}

/// An API that refuses every token we bring (a wrong audience, say): the first refused fresh
/// token is replaced at once (it may have been revoked before its first use), the next ones
/// after a delay that doubles from 5 s up to 5 minutes, and the 401s go back to the callers
/// meanwhile. Over ten minutes of one request a second that is 8 token requests (at 0 s, then
/// 0 s, 5 s, 15 s, 35 s, 75 s, 155 s, 315 s); without the backoff, it would be one per
/// request, 600.
#[tokio::test(start_paused = true)]
async fn an_api_that_refuses_every_fresh_token_backs_off() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    api.set_reject_all(true);
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = client(&handle, &api);

    let (status, _) = send(&service, request("x")).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the 401 comes back");
    // The first request was retried with a new token, refused too.
    assert_eq!((api.requests(), auth.token_requests()), (2, 2));
    let status = handle.status();
    assert_eq!(status.refused_in_a_row, 2);
    assert_eq!(
        status.replacement_deferred_for,
        Some(Duration::from_secs(5))
    );

    // The next ones meet the refused token during the backoff: not retried, no fetch.
    for _ in 0..9 {
        let (status, _) = send(&service, request("x")).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!((api.requests(), auth.token_requests()), (11, 2));

    let mut answered = 0;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (status, _) = send(&service, request("x")).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        answered += 1;
    }
    assert_eq!(answered, 600);
    assert_eq!(auth.token_requests(), 8, "backed off, then capped");
    // Each request reached the API once: the backoff returns 401s without a retry.
    assert_eq!(api.requests(), 611);
    assert_eq!(handle.status().refused_in_a_row, 8);
    assert!(
        handle.status().replacement_deferred_for.unwrap() <= Duration::from_secs(300),
        "capped"
    );

    // The API comes round: the first accepted request ends the backoff.
    api.set_reject_all(false);
    tokio::time::sleep(Duration::from_secs(300)).await;
    let (status, _) = send(&service, request("x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(handle.status().refused_in_a_row, 0);
    assert_eq!(handle.status().replacement_deferred_for, None);
}

/// A token the API accepted and then refuses has expired or been revoked: it is replaced at
/// once, however soon after the previous replacement, and no request sees the 401.
#[tokio::test(start_paused = true)]
async fn a_token_refused_after_it_was_accepted_is_replaced_at_once_every_time() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = client(&handle, &api);
    for round in 1..=5_u64 {
        let (status, _) = send(&service, request("ok")).await.unwrap();
        assert_eq!(status, StatusCode::OK, "round {round}: accepted first");
        auth.revoke_all();
        let (status, body) = send(&service, request("again")).await.unwrap();
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::OK, b"again".as_ref()),
            "round {round}"
        );
        assert_eq!(auth.token_requests(), 1 + round);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.rejected(RejectReason::Revoked), 5);
    assert_eq!(handle.status().refused_in_a_row, 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_unauthenticated_is_retried_like_a_401() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    api.set_grpc(true);
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = client(&handle, &api);
    auth.revoke_all();
    let response = service.clone().oneshot(request("rpc")).await.unwrap();
    assert!(response.headers().get("grpc-status").is_none(), "accepted");
    assert_eq!(api.rejected(RejectReason::Revoked), 1);
    assert_eq!(api.accepted(), 1);
    assert_eq!(auth.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_can_be_switched_off() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = BearerAuthLayer::new(handle)
        .retry_unauthorized(false)
        .layer(api.service());
    auth.revoke_all();
    let (status, _) = send(&service, request("x")).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.requests(), 1);
    assert_eq!(auth.token_requests(), 1);
}

/// `unauthorized_if` takes a closure that captures: here a counter, then a switch.
#[tokio::test(start_paused = true)]
async fn unauthorized_if_takes_a_capturing_closure() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    auth.revoke_all();

    // Asked about every response; calls none a refusal, so the 401 comes back as it is.
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    let never = BearerAuthLayer::new(handle.clone())
        .unauthorized_if(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            false
        })
        .layer(api.service());
    let (status, _) = send(&never, request("x")).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!((api.requests(), auth.token_requests()), (1, 1));

    // The same rule as the default while the switch is on: refused, replaced, retried.
    let strict = Arc::new(AtomicBool::new(true));
    let switch = Arc::clone(&strict);
    let service = BearerAuthLayer::new(handle)
        .unauthorized_if(move |status, headers| {
            switch.load(Ordering::SeqCst) && default_unauthorized(status, headers)
        })
        .layer(api.service());
    let (status, _) = send(&service, request("x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!((api.requests(), auth.token_requests()), (3, 2));
}

/// A refused request that waits for a new token and gets none within `max_wait` fails as a
/// request that found no token does: the first response was released when the wait began.
#[tokio::test(start_paused = true)]
async fn no_new_token_within_the_wait_is_token_unavailable() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = BearerAuthLayer::new(handle)
        .max_wait(Duration::from_secs(1))
        .layer(api.service());
    let (status, _) = send(&service, request("accepted")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    auth.revoke_all();
    auth.fail_next(
        1,
        tower_client_credentials_testkit::Fault::delay(Duration::from_secs(5)),
    );
    let error = send(&service, request("x")).await.unwrap_err();
    assert!(
        matches!(
            common::unavailable(&error),
            tower_client_credentials::TokenUnavailable::TimedOut { .. }
        ),
        "{error:?}"
    );
    assert_eq!(api.requests(), 2);
}

/// A response body that records whether it was dropped.
struct Recorded {
    inner: BoxBody,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Body for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}

/// The first 401 (its body, and with it a pooled connection) is released before the request
/// waits for the new token, not held until the retry goes out.
#[tokio::test(start_paused = true)]
async fn the_first_401_is_dropped_before_the_wait() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let first_dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = {
        let api = api.service();
        let first_dropped = Arc::clone(&first_dropped);
        let statuses = Arc::clone(&statuses);
        service_fn(move |request: Request<Full<Bytes>>| {
            let api = api.clone();
            let first_dropped = Arc::clone(&first_dropped);
            let statuses = Arc::clone(&statuses);
            async move {
                let response: Response<BoxBody> = api.oneshot(request).await?;
                let first = statuses.lock().unwrap().is_empty();
                statuses.lock().unwrap().push(response.status());
                // Only the first response records its drop.
                let dropped = if first {
                    first_dropped
                } else {
                    Arc::new(std::sync::atomic::AtomicBool::new(false))
                };
                Ok::<_, BoxError>(response.map(|inner| Recorded { inner, dropped }))
            }
        })
    };
    let service = BearerAuthLayer::new(handle.clone()).layer(inner);
    // The token was accepted, then revoked; the next token takes 5 s to come.
    api.service()
        .oneshot(
            Request::get("http://127.0.0.1/api/orders")
                .header(AUTHORIZATION, handle.current().unwrap().header_value())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    handle.accepted(&handle.current().unwrap());
    auth.revoke_all();
    auth.fail_next(
        1,
        tower_client_credentials_testkit::Fault::delay(Duration::from_secs(5)),
    );
    let pending = service.oneshot(request("x"));
    tokio::pin!(pending);
    let early = tokio::time::timeout(Duration::from_secs(1), &mut pending).await;
    assert!(early.is_err(), "still waiting for the new token");
    assert_eq!(*statuses.lock().unwrap(), [StatusCode::UNAUTHORIZED]);
    assert!(
        first_dropped.load(Ordering::SeqCst),
        "the first 401 was released before the wait"
    );
    assert_eq!(pending.await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        *statuses.lock().unwrap(),
        [StatusCode::UNAUTHORIZED, StatusCode::OK]
    );
}

#[tokio::test(start_paused = true)]
async fn the_layer_replaces_an_authorization_header_the_request_had() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let mut req = request("x");
    req.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_static("Basic Zm9vOmJhcg=="),
    );
    let (status, _) = send(&client(&handle, &api), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let seen = api.last_request_headers().unwrap();
    assert_eq!(seen.get_all(AUTHORIZATION).iter().count(), 1);
    assert!(seen[AUTHORIZATION].to_str().unwrap().starts_with("Bearer "));
}

// ---- Body replay -------------------------------------------------------------------------

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// A streamed body of `chunks`, then `trailers`.
fn streamed(chunks: &[&'static str], trailers: Option<(&'static str, &'static str)>) -> TestBody {
    struct Frames(VecDeque<Frame<Bytes>>);
    impl futures_core::Stream for Frames {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
    let mut frames: VecDeque<_> = chunks
        .iter()
        .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
        .collect();
    if let Some((name, value)) = trailers {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        frames.push_back(Frame::trailers(map));
    }
    StreamBody::new(Frames(frames)).boxed_unsync()
}

/// Sends `body` through the layer to an API that has just revoked the current token, and
/// returns (status, echoed body, echoed trailers, API requests, token requests).
async fn revoked_then<B>(
    body: B,
    replay_limit: usize,
) -> (StatusCode, Bytes, Option<String>, u64, u64)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    revoked_then_with(body, replay_limit, ReplayBodies).await
}

/// [`revoked_then`] with the layer's replay policy set to `policy`.
async fn revoked_then_with<B, P>(
    body: B,
    replay_limit: usize,
    policy: P,
) -> (StatusCode, Bytes, Option<String>, u64, u64)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    P: ReplayPolicy<B> + Clone + Send + 'static,
{
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = BearerAuthLayer::new(handle.clone())
        .replay_limit(replay_limit)
        .replay_policy(policy)
        .layer(api.service());
    auth.revoke_all();
    let request = Request::post("http://127.0.0.1/echo").body(body).unwrap();
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    let trailers = response
        .headers()
        .get(TRAILERS_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    // Let the refresher act on a refusal that was not retried (its next fetch waits at least
    // 250 ms after the previous one started).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = (api.requests(), auth.token_requests());
    drop(handle);
    (status, body, trailers, counts.0, counts.1)
}

#[tokio::test(start_paused = true)]
async fn replays_an_empty_body() {
    let (status, body, _, requests, _) = revoked_then(Empty::<Bytes>::new(), 1024).await;
    assert_eq!((status, body.len(), requests), (StatusCode::OK, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn replays_a_full_body() {
    let payload = Bytes::from(vec![b'z'; 1024]);
    let (status, body, _, requests, _) = revoked_then(Full::new(payload.clone()), 16).await;
    // A `Full` body is already in memory: it is replayed whatever the limit.
    assert_eq!((status, requests), (StatusCode::OK, 2));
    assert_eq!(body, payload);
}

#[tokio::test(start_paused = true)]
async fn replays_a_chunked_stream_under_the_limit_byte_for_byte() {
    let (status, body, _, requests, _) =
        revoked_then(streamed(&["hello ", "chunked ", "world"], None), 1024).await;
    assert_eq!((status, requests), (StatusCode::OK, 2));
    assert_eq!(body, "hello chunked world");
}

/// What an axum handler forwarding a request holds: `axum::body::Body`, here streamed in
/// chunks, replayed byte for byte without a newtype (feature `axum`).
#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn replays_an_axum_body_byte_for_byte() {
    let chunks: Vec<Result<Bytes, Infallible>> = ["an ", "axum ", "body"]
        .into_iter()
        .map(|chunk| Ok(Bytes::from(chunk)))
        .collect();
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    let (status, body, _, requests, _) = revoked_then(body, 1024).await;
    assert_eq!((status, requests), (StatusCode::OK, 2));
    assert_eq!(body, "an axum body");

    let (status, body, _, requests, _) = revoked_then(axum::body::Body::empty(), 1024).await;
    assert_eq!((status, body.len(), requests), (StatusCode::OK, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn replays_trailers() {
    let (status, body, trailers, _, _) =
        revoked_then(streamed(&["data"], Some(("x-checksum", "abc123"))), 1024).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "data");
    assert_eq!(trailers.as_deref(), Some("x-checksum=abc123"));
}

#[tokio::test(start_paused = true)]
async fn a_stream_over_the_limit_is_sent_once_and_the_next_request_succeeds() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = BearerAuthLayer::new(handle)
        .replay_limit(8)
        .layer(api.service());
    auth.revoke_all();
    let request = Request::post("http://127.0.0.1/echo")
        .body(streamed(&["0123456789", "abcdef"], None))
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.requests(), 1, "not retried");

    // The refused token was still replaced, so the next request goes through at once.
    tokio::task::yield_now().await;
    let request = Request::post("http://127.0.0.1/echo")
        .body(streamed(&["next"], None))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(api.requests(), 2);
}

/// The inner service reads only the first chunk before answering 401 (as a server that
/// rejects on headers does); the retry still carries every byte, once, in order.
#[tokio::test(start_paused = true)]
async fn a_partly_read_body_is_replayed_whole() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let api = api.service();
        let calls = Arc::clone(&calls);
        service_fn(move |request: Request<TestBody>| {
            let api = api.clone();
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    let mut body = request.into_body();
                    let chunk = body.frame().await.unwrap().unwrap();
                    assert_eq!(chunk.into_data().unwrap(), "part-1|");
                    // The body is still alive (not dropped) when the 401 comes back.
                    let response = Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync())
                        .unwrap();
                    std::mem::forget(body);
                    return Ok::<Response<BoxBody>, BoxError>(response);
                }
                api.oneshot(request).await
            }
        })
    };
    let service = BearerAuthLayer::new(handle).layer(inner);
    let request = Request::post("http://127.0.0.1/echo")
        .body(streamed(
            &["part-1|", "part-2|", "part-3"],
            Some(("x-end", "1")),
        ))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[TRAILERS_HEADER], "x-end=1");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "part-1|part-2|part-3");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn request_head_is_identical_on_the_retry() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = {
        let api = api.service();
        let seen = Arc::clone(&seen);
        service_fn(move |request: Request<Full<Bytes>>| {
            seen.lock().unwrap().push((
                request.method().clone(),
                request.uri().clone(),
                request.headers().get("x-custom").cloned(),
                request.extensions().get::<&'static str>().copied(),
                request.version(),
                // The order of the header names, `authorization` included (its value is the
                // token, which the retry replaces): a retry rebuilds the same head.
                request.headers().keys().cloned().collect::<Vec<_>>(),
            ));
            api.clone().oneshot(request)
        })
    };
    let service = BearerAuthLayer::new(handle).layer(inner);
    auth.revoke_all();
    let mut req = Request::put("http://127.0.0.1/orders/7?x=1")
        .header("x-custom", "kept")
        .header("authorization", "Basic replaced-by-the-layer")
        .header("x-after", "1")
        .header("x-after", "2")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    req.extensions_mut().insert("extension-kept");
    let response = service.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1].3, Some("extension-kept"));
    assert_eq!(seen[1].5, ["x-custom", "authorization", "x-after"]);
}

/// The default policy takes a body type it does not know (no replay of its own, not even a
/// `ReplayBody` implementation): the request is sent once, and its 401 comes back; the token
/// is still replaced. A type's own replay is used when it is named as the policy.
#[tokio::test(start_paused = true)]
async fn an_unknown_body_type_is_sent_once_by_the_default_policy() {
    struct OneShot(Option<Bytes>);
    impl Body for OneShot {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }
    }
    impl ReplayBody for OneShot {
        fn into_replay(self, _: usize) -> (Self, tower_client_credentials::Replay<Self>) {
            let copy = self.0.clone();
            (self, tower_client_credentials::Replay::ready(OneShot(copy)))
        }
    }
    let (status, _, _, requests, tokens) =
        revoked_then(OneShot(Some(Bytes::from("x"))), 1024).await;
    assert_eq!((status, requests), (StatusCode::UNAUTHORIZED, 1));
    assert_eq!(tokens, 2, "the refused token is still replaced");

    // Its own replay, named as the policy: retried with the same bytes.
    let (status, body, _, requests, tokens) =
        revoked_then_with(OneShot(Some(Bytes::from("x"))), 1024, OneShot::into_replay).await;
    assert_eq!((status, requests, tokens), (StatusCode::OK, 2, 2));
    assert_eq!(body, "x");
}

/// `Either` of two replayable bodies is replayable, whichever side it holds, with its own
/// replay as the policy.
#[tokio::test(start_paused = true)]
async fn replays_either_side_of_an_either() {
    type Forwarded = Either<Full<Bytes>, TestBody>;
    let policy = Forwarded::into_replay;
    // A `Vec<u8>` the caller built, in a `Full`: copied, not recorded.
    let left: Forwarded = Either::Left(Full::new(Bytes::from(b"from a vec".to_vec())));
    let (status, body, _, requests, _) = revoked_then_with(left, 4, policy).await;
    assert_eq!((status, requests), (StatusCode::OK, 2));
    assert_eq!(body, "from a vec");
    let right: Forwarded = Either::Right(streamed(&["stre", "amed"], Some(("x-sum", "7"))));
    let (status, body, trailers, requests, _) = revoked_then_with(right, 1024, policy).await;
    assert_eq!((status, requests), (StatusCode::OK, 2));
    assert_eq!(body, "streamed");
    assert_eq!(trailers.as_deref(), Some("x-sum=7"));
}

/// An axum body streamed in chunks.
fn axum_stream(chunks: &[&'static str]) -> axum::body::Body {
    let chunks: Vec<Result<Bytes, Infallible>> = chunks
        .iter()
        .map(|chunk| Ok(Bytes::from_static(chunk.as_bytes())))
        .collect();
    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
}

/// A foreign body type the crate knows nothing of, `Limited<axum::body::Body>` (no feature
/// needed): a closure policy records it as it streams and rebuilds it for the retry.
#[tokio::test(start_paused = true)]
async fn a_closure_policy_replays_a_limited_axum_body() {
    let policy = |body: Limited<axum::body::Body>, limit: usize| {
        Replay::record(body, limit, |recorded| {
            Limited::new(axum::body::Body::new(recorded), 1024)
        })
    };
    let body = Limited::new(axum_stream(&["capped ", "axum ", "stream"]), 1024);
    let (status, body, _, requests, _) = revoked_then_with(body, 1024, policy).await;
    assert_eq!((status, requests), (StatusCode::OK, 2));
    assert_eq!(body, "capped axum stream");

    // A body from a `Vec<u8>`, the same way.
    let body = Limited::new(axum::body::Body::from(b"vec bytes".to_vec()), 1024);
    let (status, body, _, requests, _) = revoked_then_with(body, 1024, policy).await;
    assert_eq!((status, requests), (StatusCode::OK, 2));
    assert_eq!(body, "vec bytes");

    // Over the replay limit: sent once, its 401 comes back, the token is still replaced.
    let body = Limited::new(axum_stream(&["0123456789", "abcdef"]), 1024);
    let (status, _, _, requests, tokens) = revoked_then_with(body, 8, policy).await;
    assert_eq!((status, requests, tokens), (StatusCode::UNAUTHORIZED, 1, 2));
}

/// With `NoReplay` the layer asks nothing of the body type: one that implements no replay
/// at all goes through, and a refusal comes back as it is.
#[tokio::test(start_paused = true)]
async fn no_replay_takes_any_body_type() {
    struct OneShot(Option<Bytes>);
    impl Body for OneShot {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }
    }
    let (status, _, _, requests, tokens) =
        revoked_then_with(OneShot(Some(Bytes::from("x"))), 1024, NoReplay).await;
    assert_eq!((status, requests), (StatusCode::UNAUTHORIZED, 1));
    assert_eq!(tokens, 2, "the refused token is still replaced");

    // Accepted, it is sent as it is.
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    // A closure policy has no `Debug`; the layer still has.
    let layer = BearerAuthLayer::new(handle.clone())
        .replay_policy(|body: OneShot, _: usize| (body, Replay::<OneShot>::none()));
    assert!(format!("{layer:?}").starts_with("BearerAuthLayer {"));
    let service = BearerAuthLayer::new(handle)
        .retry_unauthorized(false)
        .replay_policy(NoReplay)
        .layer(api.service());
    let request = Request::post("http://127.0.0.1/echo")
        .body(OneShot(Some(Bytes::from("once"))))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "once"
    );
}

// ---- Composition -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn composes_with_tower_timeout_and_retry() {
    use tower::{ServiceBuilder, retry::Policy, timeout::error::Elapsed};

    #[derive(Clone)]
    struct RetryErrors(usize);
    impl<Res, E> Policy<Request<Full<Bytes>>, Res, E> for RetryErrors {
        type Future = std::future::Ready<()>;
        fn retry(
            &mut self,
            _: &mut Request<Full<Bytes>>,
            result: &mut Result<Res, E>,
        ) -> Option<Self::Future> {
            (result.is_err() && self.0 > 0).then(|| {
                self.0 -= 1;
                std::future::ready(())
            })
        }
        fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
            let mut clone = Request::new(req.body().clone());
            *clone.method_mut() = req.method().clone();
            *clone.uri_mut() = req.uri().clone();
            *clone.headers_mut() = req.headers().clone();
            Some(clone)
        }
    }

    let auth = auth_server(HOUR);
    auth.fail_next(
        1,
        tower_client_credentials_testkit::Fault::delay(Duration::from_secs(2)),
    );
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().spawn();

    // Timeout outside the layer: it bounds the wait for a token.
    let timed = ServiceBuilder::new()
        .timeout(Duration::from_millis(500))
        .layer(BearerAuthLayer::new(handle.clone()))
        .service(api.service());
    let error = timed.clone().oneshot(request("a")).await.unwrap_err();
    assert!(error.downcast_ref::<Elapsed>().is_some());

    // Retry outside the timeout: the second attempt finds the token that arrived meanwhile.
    let retried = ServiceBuilder::new()
        .retry(RetryErrors(3))
        .timeout(Duration::from_millis(1500))
        .layer(BearerAuthLayer::new(handle))
        .service(api.service());
    let response = retried.oneshot(request("b")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(api.accepted(), 1);
}

/// A retry goes through a clone of the inner service, taken once and shared by the service's
/// clones, not cloned for every request; a change made through `get_mut` reaches the retries
/// of the requests after it, not only their first attempts.
#[tokio::test(start_paused = true)]
async fn retries_go_through_the_inner_service_as_get_mut_left_it() {
    /// Forwards to the API and says which version of itself did.
    #[derive(Clone)]
    struct Tagged<S> {
        api: S,
        tag: &'static str,
    }
    impl<S> tower::Service<Request<Full<Bytes>>> for Tagged<S>
    where
        S: tower::Service<Request<Full<Bytes>>, Response = Response<BoxBody>, Error = BoxError>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
    {
        type Response = Response<BoxBody>;
        type Error = BoxError;
        type Future = ResponseFuture;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.api.poll_ready(cx)
        }

        fn call(&mut self, request: Request<Full<Bytes>>) -> ResponseFuture {
            let tag = self.tag;
            let response = self.api.call(request);
            Box::pin(async move {
                let mut response = response.await?;
                response
                    .headers_mut()
                    .insert("x-tag", HeaderValue::from_static(tag));
                Ok(response)
            })
        }
    }

    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let mut service = BearerAuthLayer::new(handle).layer(Tagged {
        api: api.service(),
        tag: "first",
    });
    let tag_of =
        |response: &Response<BoxBody>| response.headers()["x-tag"].to_str().unwrap().to_owned();

    auth.revoke_all();
    let response = tower::Service::call(service.ready().await.unwrap(), request("a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(tag_of(&response), "first");
    assert_eq!(
        api.rejected(RejectReason::Revoked),
        1,
        "the first attempt was refused"
    );

    service.get_mut().tag = "second";
    auth.revoke_all();
    let response = tower::Service::call(service.ready().await.unwrap(), request("b"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        api.rejected(RejectReason::Revoked),
        2,
        "refused again, and retried"
    );
    assert_eq!(
        tag_of(&response),
        "second",
        "the retry went through the changed service"
    );
}
