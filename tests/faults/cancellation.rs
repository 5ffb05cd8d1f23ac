//! Requests cancelled while they wait for a token (a `tower::timeout` around the layer fires)
//! leave the store and the refresher healthy and leak nothing: no request, no task, no handle.

use std::{future::IntoFuture, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::{task::JoinSet, time::Instant};
use tower::{ServiceBuilder, ServiceExt, timeout::TimeoutLayer};
use tower_client_credentials::BearerAuthLayer;
use tower_client_credentials_testkit::Fault;

use crate::{
    common::{self, auth_server},
    support::SECOND,
};

/// A request that holds a clone of `marker` in its extensions and as the owner of its body,
/// so that `Arc::strong_count(marker)` counts the requests still alive anywhere.
fn tracked_request(marker: &Arc<()>) -> Request<Full<Bytes>> {
    struct Owner(#[allow(dead_code)] Arc<()>);
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            b"{\"order\":1}"
        }
    }
    let mut request = Request::post("http://127.0.0.1/api/orders")
        .body(Full::new(Bytes::from_owner(Owner(Arc::clone(marker)))))
        .unwrap();
    request.extensions_mut().insert(Arc::clone(marker));
    request
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_cancelled_while_waiting_leak_nothing() {
    let delay = Duration::from_secs(10);
    let patience = Duration::from_millis(100);
    let auth = auth_server(Duration::from_secs(60));
    // The first token takes 10 s, far past the callers' 100 ms timeout.
    auth.fail_next(1, Fault::delay(delay));
    let api = auth.api();
    let metrics = tokio::runtime::Handle::current().metrics();
    let before_refresher = metrics.num_alive_tasks();
    let (handle, refresher) = common::builder(&auth).build().unwrap().into_parts();
    let refresher = tokio::spawn(refresher.into_future());
    let baseline = metrics.num_alive_tasks();
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(patience))
        .layer(BearerAuthLayer::new(handle.clone()))
        .service(api.service());

    // Ten rounds of 1,000 concurrent requests, all cancelled by the timeout.
    let marker = Arc::new(());
    let start = Instant::now();
    for _ in 0..10 {
        let mut requests = JoinSet::new();
        for _ in 0..1_000 {
            let service = service.clone();
            let request = tracked_request(&marker);
            requests.spawn(async move { service.oneshot(request).await });
        }
        while let Some(result) = requests.join_next().await {
            let error = result.unwrap().expect_err("cancelled");
            assert!(error.is::<tower::timeout::error::Elapsed>(), "{error:?}");
        }
    }
    assert!(
        start.elapsed() < delay,
        "all 10,000 were cancelled before the token came"
    );

    // Nothing holds on to any of them: no request, no task.
    assert_eq!(
        Arc::strong_count(&marker),
        1,
        "cancelled requests still alive"
    );
    assert_eq!(metrics.num_alive_tasks(), baseline, "tasks leaked");
    assert_eq!(api.requests(), 0);

    // The one fetch in flight was not disturbed, and the next caller gets its token.
    assert_eq!(auth.token_requests(), 1);
    let status = handle.status();
    assert!(status.running && !refresher.is_finished());
    assert!(status.last_error.is_none());
    let token = handle.token().await.unwrap();
    assert_eq!(token.generation(), 1);
    assert_eq!(start.elapsed(), delay);
    let response = service
        .clone()
        .oneshot(tracked_request(&marker))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((api.accepted(), api.rejected_total()), (1, 0));
    assert_eq!(auth.token_requests(), 1);
    drop(response);
    assert_eq!(Arc::strong_count(&marker), 1);

    // No cancelled request kept a handle: dropping ours stops the refresher.
    drop(service);
    drop(handle);
    tokio::time::timeout(SECOND, refresher)
        .await
        .expect("the refresher outlived every handle")
        .unwrap();
    assert_eq!(metrics.num_alive_tasks(), before_refresher);
}

/// The same with a token in hand: requests cancelled while the API is slow (the fast path,
/// and the retry after a 401) leave nothing behind either.
#[tokio::test(start_paused = true)]
async fn requests_cancelled_in_flight_or_in_the_401_retry_leak_nothing() {
    let auth = auth_server(Duration::from_secs(60));
    let api = auth.api();
    let handle = common::builder(&auth)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(100)))
        .layer(BearerAuthLayer::new(handle.clone()))
        .service(api.service());
    let marker = Arc::new(());

    // In flight: the API takes 1 s.
    api.set_delay(Some(SECOND));
    let mut requests = JoinSet::new();
    for _ in 0..1_000 {
        let service = service.clone();
        let request = tracked_request(&marker);
        requests.spawn(async move { service.oneshot(request).await });
    }
    for result in requests.join_all().await {
        assert!(result.unwrap_err().is::<tower::timeout::error::Elapsed>());
    }

    // In the retry: the API refuses the token, and the new token takes 1 s to come.
    api.set_delay(None);
    api.set_reject_all(true);
    auth.fail_next(1, Fault::delay(SECOND));
    let mut requests = JoinSet::new();
    for _ in 0..1_000 {
        let service = service.clone();
        let request = tracked_request(&marker);
        requests.spawn(async move { service.oneshot(request).await });
    }
    for result in requests.join_all().await {
        assert!(result.unwrap_err().is::<tower::timeout::error::Elapsed>());
    }
    assert_eq!(
        Arc::strong_count(&marker),
        1,
        "cancelled requests still alive"
    );
    assert_eq!(metrics.num_alive_tasks(), baseline, "tasks leaked");

    // The refresh the 401s asked for was made once, and the store is healthy.
    api.set_reject_all(false);
    tokio::time::sleep(2 * SECOND).await;
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(handle.current().unwrap().generation(), 2);
    let response = service.oneshot(tracked_request(&marker)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
