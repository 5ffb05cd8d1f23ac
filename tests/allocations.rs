//! Heap allocations per request on the request path, counted by a global allocator (a count is
//! deterministic, so it is a test rather than a benchmark). The rows are those of
//! `benches/hot_path.rs`: 2 is tower-http's `AddAuthorization::bearer` with a fixed token,
//! 3 is `BearerAuth` with retry off, 4 is `BearerAuth` with retry on and an empty body. Every
//! row sends the same request into the same inner service; requests are built before counting.
// The counting allocator needs `unsafe impl GlobalAlloc`: this file is the one place that
// allows unsafe code (`unsafe_code = "deny"` in Cargo.toml; the library keeps
// `#![forbid(unsafe_code)]` in src/lib.rs).
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    convert::Infallible,
    future::{Future, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Method, Request, Response, Uri,
    header::{ACCEPT, AUTHORIZATION, USER_AGENT},
};
use http_body_util::Full;
use tower::{Layer, Service, service_fn};
use tower_client_credentials::{BearerAuthLayer, ClientCredentials, TokenHandle};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};
use tower_http::auth::AddAuthorization;

thread_local! {
    /// Allocations made by this thread. Const-initialized and without `Drop`, so reading it
    /// from inside the allocator allocates nothing.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// `System`, counting allocations (and reallocations) per thread. Tests run on threads of their
/// own, so they do not see each other's allocations.
struct Counting;

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; counting touches no allocator state.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made while running `f`, on this thread.
fn allocations_in<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = allocations();
    let value = black_box(f());
    (allocations() - before, value)
}

/// The URI of every request.
const URI: &str = "http://127.0.0.1:8080/api/orders?limit=10";

/// The request of every row, as a client builds one: a `POST`, the URI parsed from a string of
/// its own, three headers whose names and values are static.
fn request() -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::try_from(URI.to_owned()).unwrap();
    let headers = request.headers_mut();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static("bench/1.0"));
    headers.insert(
        HeaderName::from_static("x-request-id"),
        HeaderValue::from_static("3f1c9a52"),
    );
    request
}

fn inner() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(|request: Request<Full<Bytes>>| {
        black_box(&request);
        ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))))
    })
}

/// `poll_ready`, `call` and one poll of the response future, with a no-op waker.
fn call_now<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    match pin!(service.call(request)).poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(error)) => panic!("request failed: {error:?}"),
        Poll::Pending => panic!("response not ready"),
    }
}

/// Requests per measurement.
const N: u64 = 1_000;

/// Heap allocations per request through `service`: exact, or the test fails.
fn per_request<S>(mut service: S) -> u64
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    // Warm-up: one-time costs (the first clone of a shared buffer, arc-swap's per-thread node).
    for _ in 0..16 {
        call_now(&mut service, request());
    }
    let requests: Vec<_> = (0..N).map(|_| request()).collect();
    let (total, ()) = allocations_in(|| {
        for request in requests {
            drop(call_now(&mut service, request));
        }
    });
    assert_eq!(
        total % N,
        0,
        "{total} allocations for {N} requests: not the same per request"
    );
    total / N
}

async fn handle() -> (MockAuthServer, TokenHandle) {
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(3600))
        .build();
    let handle = ClientCredentials::builder(
        "http://127.0.0.1/oauth/token",
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
    )
    .http_client(auth.service())
    .build()
    .unwrap()
    .start()
    .await
    .unwrap();
    (auth, handle)
}

#[tokio::test]
async fn bearer_auth_allocates_as_often_as_a_static_header() {
    let (_auth, handle) = handle().await;
    let token = handle.current().unwrap().access_token().to_owned();

    let row2 = per_request(AddAuthorization::bearer(inner(), &token).as_sensitive(true));
    let row3 = per_request(
        BearerAuthLayer::new(handle.clone())
            .retry_unauthorized(false)
            .layer(inner()),
    );
    println!(
        "allocations per request: row 2 (static header) {row2}, row 3 (BearerAuth, retry off) {row3}"
    );
    assert_eq!(row3, row2);
}

#[tokio::test]
async fn retry_on_allocates_once_for_the_retry_state_and_head_copy() {
    let (_auth, handle) = handle().await;
    let token = handle.current().unwrap().access_token().to_owned();
    let row2 = per_request(AddAuthorization::bearer(inner(), &token).as_sensitive(true));
    let row3 = per_request(
        BearerAuthLayer::new(handle.clone())
            .retry_unauthorized(false)
            .layer(inner()),
    );
    let row4 = per_request(BearerAuthLayer::new(handle.clone()).layer(inner()));

    // What a `HeaderMap` copy of the head of the request as sent (with its `Authorization`
    // header) would cost: the retry keeps a list of its headers instead, inline up to eight.
    let mut sent = request();
    sent.headers_mut().insert(
        AUTHORIZATION,
        handle.current().unwrap().header_value().clone(),
    );
    let (parts, _body) = sent.into_parts();
    let (map_copy, copy) = allocations_in(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
            parts.extensions.clone(),
        )
    });
    drop(copy);
    println!(
        "allocations per request: row 2 {row2}, row 3 {row3}, row 4 (retry on, empty body) {row4}, a HeaderMap copy of the head {map_copy}"
    );
    assert!(map_copy >= 2, "{map_copy}: the index table and the entries");
    // One: the retry state (head copy, body replay, service clone), boxed so that the response
    // future stays small when retry is off. Issue 23: at most one more than a static header.
    assert_eq!(row4, row3 + 1);
    assert!(row4 <= row2 + 1, "row 4 {row4}, row 2 {row2}");
}

/// A user's `unauthorized_if` closure (capturing) is boxed once, when it is set: the request
/// path allocates no more with it than with the default rule, retry on or off.
#[tokio::test]
async fn a_custom_unauthorized_rule_allocates_nothing_per_request() {
    let (_auth, handle) = handle().await;
    let refused = http::StatusCode::UNAUTHORIZED;
    let rule = move |status: http::StatusCode, _: &http::HeaderMap| status == refused;
    let row3 = per_request(
        BearerAuthLayer::new(handle.clone())
            .retry_unauthorized(false)
            .layer(inner()),
    );
    let row3_rule = per_request(
        BearerAuthLayer::new(handle.clone())
            .retry_unauthorized(false)
            .unauthorized_if(rule)
            .layer(inner()),
    );
    let row4 = per_request(BearerAuthLayer::new(handle.clone()).layer(inner()));
    let row4_rule = per_request(
        BearerAuthLayer::new(handle.clone())
            .unauthorized_if(rule)
            .layer(inner()),
    );
    println!(
        "allocations per request: row 3 {row3} (with a rule {row3_rule}), row 4 {row4} (with a rule {row4_rule})"
    );
    assert_eq!((row3_rule, row4_rule), (row3, row4));
}
