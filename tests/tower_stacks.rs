//! The layer in standard tower stacks: below it a concurrency limit of 1, a buffer of bound 1,
//! or `tower_test::mock` (which panics when `call` comes without a `poll_ready` of its own).
//! Every request is made the way tower's contract allows, `ready().await` then `call` on the
//! same service, and a service that `poll_ready` made ready is the one that must send: a
//! clone holds no permit or buffer slot. On tokio's paused clock, in memory.
//!
//! Each case sends 1,000 concurrent requests and asserts that all of them complete: on a cold
//! start (no token yet, every request waits for the one fetch), after a revocation (every
//! request refused once, then retried), and through a token set.

mod common;

use std::{future::Future, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::Full;
use tokio::task::JoinSet;
use tower::{
    Layer, Service, ServiceBuilder, ServiceExt, buffer::BufferLayer, limit::ConcurrencyLimitLayer,
};
use tower_client_credentials::{BearerAuthLayer, BoxError, Origin, TokenKey, TokenSetLayer};
use tower_client_credentials_testkit::{Fault, MockAuthServer};

use common::{auth_server, builder};

const REQUESTS: usize = 1_000;
const HOUR: Duration = Duration::from_secs(3600);

fn get() -> Request<Full<Bytes>> {
    Request::get("http://127.0.0.1/api/orders")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// Sends `REQUESTS` requests at once, each through its own clone of `service` with
/// `ready().await` then `call`, and returns their statuses; fails if they are not all done
/// within `limit` of (paused) time.
async fn all_complete<S, ResBody>(service: S, limit: Duration) -> Vec<StatusCode>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
    ResBody: Send + 'static,
{
    let mut requests = JoinSet::new();
    for _ in 0..REQUESTS {
        let mut service = service.clone();
        requests.spawn(async move {
            service.ready().await.map_err(Into::into)?;
            let response = service.call(get()).await.map_err(Into::into)?;
            Ok::<_, BoxError>(response.status())
        });
    }
    let collect = async {
        let mut statuses = Vec::with_capacity(REQUESTS);
        while let Some(joined) = requests.join_next().await {
            statuses.push(joined.expect("no panic").expect("request succeeded"));
        }
        statuses
    };
    match tokio::time::timeout(limit, collect).await {
        Ok(statuses) => statuses,
        Err(_) => panic!("not every request completed within {limit:?}: a deadlock"),
    }
}

fn assert_all_ok(statuses: &[StatusCode]) {
    assert_eq!(statuses.len(), REQUESTS);
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "{:?}",
        statuses.iter().filter(|s| **s != StatusCode::OK).count()
    );
}

/// An authorization server whose first token takes a second to come, so that every request
/// of a cold start finds no token.
fn slow_first_token() -> MockAuthServer {
    let auth = auth_server(HOUR);
    auth.fail_next(1, Fault::delay(Duration::from_secs(1)));
    auth
}

#[tokio::test(start_paused = true)]
async fn cold_start_below_a_concurrency_limit_of_one() {
    let auth = slow_first_token();
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().spawn();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(handle))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(api.service());
    assert_all_ok(&all_complete(service, Duration::from_secs(60)).await);
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(api.accepted(), REQUESTS as u64);
}

#[tokio::test(start_paused = true)]
async fn cold_start_below_a_buffer_of_one() {
    let auth = slow_first_token();
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().spawn();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(handle))
        .layer(BufferLayer::new(1))
        .service(api.service());
    assert_all_ok(&all_complete(service, Duration::from_secs(60)).await);
    assert_eq!(auth.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_below_a_concurrency_limit_of_one() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(handle))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(api.service());
    // Accepted once, then revoked: every request that carries it is refused and retried.
    let status = service.clone().oneshot(get()).await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
    auth.revoke_all();
    assert_all_ok(&all_complete(service, Duration::from_secs(60)).await);
    assert_eq!(
        auth.token_requests(),
        2,
        "the first token and one replacement"
    );
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_below_a_buffer_of_one() {
    let auth = auth_server(HOUR);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(handle))
        .layer(BufferLayer::new(1))
        .service(api.service());
    let status = service.clone().oneshot(get()).await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
    auth.revoke_all();
    assert_all_ok(&all_complete(service, Duration::from_secs(60)).await);
    assert_eq!(auth.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_set_below_a_concurrency_limit_of_one() {
    let auth = slow_first_token();
    let api = auth.api();
    let set = builder(&auth)
        .build_set()
        .unwrap()
        .route(
            "http://127.0.0.1".parse::<Origin>().unwrap(),
            TokenKey::new().audience("orders"),
        )
        .unwrap()
        .spawn();
    let service = ServiceBuilder::new()
        .layer(TokenSetLayer::new(set))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(api.service());
    assert_all_ok(&all_complete(service, Duration::from_secs(60)).await);
    assert_eq!(auth.token_requests(), 1);
}

/// `tower_test::mock` panics when a clone that was never made ready is called: the layer
/// must call the very service the caller drove to readiness, on every path.
async fn through_the_mock<F, Fut>(start: F)
where
    F: FnOnce(MockAuthServer) -> Fut,
    Fut: Future<Output = tower_client_credentials::TokenHandle>,
{
    let auth = slow_first_token();
    let api = auth.api();
    let handle = start(auth.clone()).await;
    let (mock, mut answers) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    // Answers like the API: 401 for a token it refuses, 200 otherwise.
    let answering = tokio::spawn(async move {
        while let Some((request, reply)) = answers.next_request().await {
            let authorization = request.headers().get(AUTHORIZATION).cloned();
            let check = Request::get("http://127.0.0.1/api/orders");
            let check = match authorization {
                Some(value) => check.header(AUTHORIZATION, value),
                None => check,
            };
            let status = api
                .service()
                .oneshot(check.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap()
                .status();
            let response = Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap();
            reply.send_response(response);
        }
    });
    let service = BearerAuthLayer::new(handle).layer(mock);
    assert_all_ok(&all_complete(service, Duration::from_secs(60)).await);
    answering.abort();
}

#[tokio::test(start_paused = true)]
async fn cold_start_through_tower_test_mock() {
    through_the_mock(|auth| async move { builder(&auth).build().unwrap().spawn() }).await;
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_through_tower_test_mock() {
    through_the_mock(|auth| async move {
        let handle = builder(&auth).build().unwrap().start().await.unwrap();
        let token = handle.current().unwrap();
        handle.accepted(&token);
        auth.revoke_all();
        handle
    })
    .await;
}

/// hyper-util's client below the layer: its typed error comes back as
/// `BearerAuthError::Inner`, `?` boxes it with the concrete error inside, and stacks that box
/// (`Buffer` outside the layer, `BoxCloneService`) take the layer as they take the client.
#[tokio::test]
async fn hyper_util_errors_stay_typed() {
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    use tower::util::BoxCloneService;
    use tower_client_credentials::BearerAuthError;

    let auth = auth_server(HOUR);
    let api = auth.api();
    let url = format!("http://{}/api/orders", api.serve().await.unwrap());
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    // A loopback port with nothing listening: connecting fails at once.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let service = BearerAuthLayer::new(handle).layer(client);
    let to = |url: &str| Request::get(url).body(Full::new(Bytes::new())).unwrap();

    // Typed: no downcast to see that the connection was refused.
    let refused = format!("http://{closed}/api/orders");
    match service.clone().oneshot(to(&refused)).await {
        Err(BearerAuthError::Inner(error)) => assert!(error.is_connect(), "{error:?}"),
        other => panic!("expected hyper-util's connect error, got {other:?}"),
    }

    // `?` into a boxed error: the box holds hyper-util's error itself.
    async fn status<S>(service: S, request: Request<Full<Bytes>>) -> Result<StatusCode, BoxError>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<hyper::body::Incoming>>,
        S::Error: Into<BoxError>,
    {
        Ok(service.oneshot(request).await.map_err(Into::into)?.status())
    }
    async fn status_with_question_mark(
        service: tower_client_credentials::BearerAuth<
            Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        >,
        request: Request<Full<Bytes>>,
    ) -> Result<StatusCode, BoxError> {
        Ok(service.oneshot(request).await?.status())
    }
    let error = status_with_question_mark(service.clone(), to(&refused))
        .await
        .unwrap_err();
    let hyper_error = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .unwrap_or_else(|| panic!("not hyper-util's error: {error:?}"));
    assert!(hyper_error.is_connect());
    assert_eq!(
        status_with_question_mark(service.clone(), to(&url))
            .await
            .unwrap(),
        StatusCode::OK
    );

    // Boxing stacks around the layer.
    let buffered = tower::buffer::Buffer::new(service.clone(), 8);
    assert_eq!(
        status(buffered.clone(), to(&url)).await.unwrap(),
        StatusCode::OK
    );
    let error = status(buffered, to(&refused)).await.unwrap_err();
    assert!(
        error
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some(),
        "{error:?}"
    );
    let boxed: BoxCloneService<_, _, BoxError> =
        BoxCloneService::new(service.map_err(BoxError::from));
    assert_eq!(status(boxed, to(&url)).await.unwrap(), StatusCode::OK);
    assert_eq!(api.accepted(), 3);
}
