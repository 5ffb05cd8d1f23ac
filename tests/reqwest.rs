//! The reqwest middleware (feature `reqwest`) with a real
//! `reqwest_middleware::ClientWithMiddleware` against the embedded API listening on
//! 127.0.0.1: the same single fetch, retry, allowlist and DPoP rules as the tower layer.
//! Token requests go to the embedded authorization server in memory, except where the
//! reqwest transport is tested. Real sockets, so the clock runs; nothing asserts timing.

mod common;

use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use http::{StatusCode, header::AUTHORIZATION};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tokio::task::JoinSet;
use tower_client_credentials::{
    BearerAuthMiddleware, ClientCredentials, DpopAlgorithm, DpopKey, Origin, TokenHandle, TokenKey,
    TokenSetMiddleware, TokenUnavailable, reqwest::ReqwestTransport,
};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockApi, MockAuthServer, RejectReason,
};

use common::{auth_server, builder};

const HOUR: Duration = Duration::from_secs(3600);

fn client(middleware: BearerAuthMiddleware) -> ClientWithMiddleware {
    client_with(middleware)
}

fn client_with(middleware: impl reqwest_middleware::Middleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

async fn serve(api: &MockApi) -> String {
    api.serve().await.expect("the API listens");
    format!("{}/api/orders", api.url())
}

/// Sends `body` and returns the status and the echoed body.
async fn post(
    client: &ClientWithMiddleware,
    url: &str,
    body: &'static str,
) -> Result<(StatusCode, Bytes), reqwest_middleware::Error> {
    let response = client.post(url).body(body).send().await?;
    let status = response.status();
    Ok((status, response.bytes().await?))
}

/// A started handle (first token fetched) and the API listening.
async fn started(auth: &MockAuthServer) -> (TokenHandle, MockApi, String) {
    let api = auth.api();
    let url = serve(&api).await;
    let handle = builder(auth).build().unwrap().start().await.unwrap();
    (handle, api, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_with_1000_concurrent_requests_makes_one_token_request() {
    let auth = auth_server(HOUR);
    // The token request takes a while, so that all requests meet it in flight.
    auth.set_fault_plan(|_| Some(Fault::delay(Duration::from_millis(200))));
    let api = auth.api();
    let url = serve(&api).await;
    let handle = builder(&auth).lazy(true).build().unwrap().spawn();
    assert!(handle.current().is_none());
    let client = client(BearerAuthMiddleware::new(handle));

    let mut requests = JoinSet::new();
    for _ in 0..1000 {
        let (client, url) = (client.clone(), url.clone());
        requests.spawn(async move { post(&client, &url, "x").await });
    }
    while let Some(result) = requests.join_next().await {
        let (status, body) = result.unwrap().unwrap();
        assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"x"[..]));
    }
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(api.accepted(), 1000);
    assert_eq!(api.rejected_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_costs_one_retry_per_request_and_one_refresh() {
    let auth = auth_server(HOUR);
    let (handle, api, url) = started(&auth).await;
    let client = client(BearerAuthMiddleware::new(handle.clone()));
    assert_eq!(
        post(&client, &url, "first").await.unwrap().0,
        StatusCode::OK
    );
    auth.revoke_all();

    let mut requests = JoinSet::new();
    for _ in 0..200 {
        let (client, url) = (client.clone(), url.clone());
        requests.spawn(async move { post(&client, &url, "payload").await });
    }
    while let Some(result) = requests.join_next().await {
        let (status, body) = result.unwrap().unwrap();
        assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"payload"[..]));
    }
    assert_eq!(
        auth.token_requests(),
        2,
        "the initial token and one refresh"
    );
    assert_eq!(handle.current().unwrap().generation(), 2);
    let refused = api.rejected(RejectReason::Revoked);
    assert!((1..=200).contains(&refused), "{refused}");
    // Every refused request was sent again once, none more than once.
    assert_eq!(api.accepted(), 201);
    assert_eq!(api.requests(), 201 + refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_is_sent_once_and_the_next_request_gets_a_new_token() {
    let auth = auth_server(HOUR);
    let (handle, api, url) = started(&auth).await;
    let client = client(BearerAuthMiddleware::new(handle.clone()));
    assert_eq!(
        post(&client, &url, "first").await.unwrap().0,
        StatusCode::OK
    );
    auth.revoke_all();

    let chunks = futures_util::stream::iter(["a", "b"].map(Ok::<_, std::io::Error>));
    let response = client
        .post(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.requests(), 2, "not retried: the body cannot be copied");
    assert_eq!(api.rejected(RejectReason::Revoked), 1);

    // The refusal was noted: the next request does not carry the refused token.
    assert_eq!(post(&client, &url, "next").await.unwrap().0, StatusCode::OK);
    assert_eq!(api.rejected(RejectReason::Revoked), 1);
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(handle.current().unwrap().generation(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_only_to_allowed_origins() {
    let auth = auth_server(HOUR);
    let (handle, api, url) = started(&auth).await;
    let other = auth.api();
    let other_url = serve(&other).await;
    let allowed: Origin = api.url().parse().unwrap();
    let client = client(BearerAuthMiddleware::new(handle).allow_origins([allowed]));

    assert_eq!(post(&client, &url, "x").await.unwrap().0, StatusCode::OK);
    assert_eq!(api.accepted(), 1);

    // Same host, another port: another origin. No token, so the API refuses it, and a
    // refusal of a request that carried no token of ours is not retried.
    let (status, _) = post(&client, &other_url, "x").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(other.rejected(RejectReason::Missing), 1);
    assert_eq!(other.requests(), 1);

    // A request's own Authorization header to another origin is left as it is.
    let response = client
        .post(&other_url)
        .header(AUTHORIZATION, "Bearer theirs")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(other.rejected(RejectReason::Invalid), 1);
    assert_eq!(auth.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_within_the_wait_is_a_middleware_error_and_nothing_is_sent() {
    let auth = auth_server(HOUR);
    auth.set_fault_plan(|_| Some(Fault::hang()));
    let api = auth.api();
    let url = serve(&api).await;
    let handle = builder(&auth).lazy(true).build().unwrap().spawn();
    let client = client(BearerAuthMiddleware::new(handle).max_wait(Duration::from_millis(100)));

    let error = post(&client, &url, "x").await.unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("expected a middleware error, got {error:?}");
    };
    assert!(
        matches!(
            error.downcast_ref::<TokenUnavailable>(),
            Some(TokenUnavailable::TimedOut { .. })
        ),
        "{error:?}"
    );
    assert_eq!(api.requests(), 0, "never sent without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_can_be_switched_off() {
    let auth = auth_server(HOUR);
    let (handle, api, url) = started(&auth).await;
    let client = client(BearerAuthMiddleware::new(handle).retry_unauthorized(false));
    assert_eq!(post(&client, &url, "x").await.unwrap().0, StatusCode::OK);
    auth.revoke_all();
    assert_eq!(
        post(&client, &url, "x").await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.requests(), 2);
}

fn reqwest_transport() -> ReqwestTransport {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    ReqwestTransport::new(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_carries_token_requests() {
    let auth = auth_server(HOUR);
    auth.serve().await.unwrap();
    let api = auth.api();
    let url = serve(&api).await;
    let handle =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .http_client(reqwest_transport())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
    assert_eq!(auth.token_requests(), 1);
    let request = auth.last_request().unwrap();
    assert_eq!(request.param("grant_type"), Some("client_credentials"));
    let client = client(BearerAuthMiddleware::new(handle));
    assert_eq!(post(&client, &url, "x").await.unwrap().0, StatusCode::OK);

    // An error response's body comes through reqwest and is parsed as an OAuth error.
    let error = ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, "wrong")
        .http_client(reqwest_transport())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert_eq!(error.oauth_error(), Some("invalid_client"), "{error}");
    assert!(!error.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_client_sends_token_requests_through_the_given_client() {
    let auth = auth_server(HOUR);
    auth.serve().await.unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-from-the-reqwest-client", "yes".parse().unwrap());
    let reqwest_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap();
    let handle =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .reqwest_client(reqwest_client)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
    assert!(handle.current().is_some());
    assert_eq!(auth.token_requests(), 1);
    // The client's default header arrives: the request went through that very client.
    let request = auth.last_request().unwrap();
    assert_eq!(
        request
            .headers
            .get("x-from-the-reqwest-client")
            .map(|value| value.as_bytes()),
        Some(&b"yes"[..]),
        "{request:?}"
    );
    assert_eq!(request.param("grant_type"), Some("client_credentials"));
}

async fn dpop_started(api_nonce: bool) -> (MockAuthServer, MockApi, String, TokenHandle) {
    let auth = MockAuthServer::builder()
        .lifetime(HOUR)
        .require_dpop(true)
        .build();
    let api = auth.api().dpop_nonce(api_nonce);
    let url = serve(&api).await;
    let handle = builder(&auth)
        .dpop(DpopKey::generate(DpopAlgorithm::ES256).unwrap())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    (auth, api, url, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_proofs_and_api_nonces_through_the_middleware() {
    let (auth, api, url, handle) = dpop_started(true).await;
    let client = client(BearerAuthMiddleware::new(handle));

    // The first request learns the nonce from its 401 and is sent again with it, body and all.
    let (status, body) = post(&client, &url, "first").await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"first"[..]));
    assert_eq!(api.dpop_nonce_challenges(), 1);
    assert_eq!(api.rejected(RejectReason::DpopNonce), 1);

    // Later requests carry it from the start, each with its own proof.
    let mut requests = JoinSet::new();
    for _ in 0..50 {
        let (client, url) = (client.clone(), url.clone());
        requests.spawn(async move { post(&client, &url, "x").await });
    }
    while let Some(result) = requests.join_next().await {
        assert_eq!(result.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(api.dpop_nonce_challenges(), 1);

    // A rotated nonce costs one more round trip, once.
    api.rotate_dpop_nonce();
    for _ in 0..5 {
        assert_eq!(post(&client, &url, "x").await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(api.dpop_nonce_challenges(), 2);
    assert_eq!(api.accepted(), 56);
    let jtis = api.seen_proof_jtis();
    assert_eq!(
        jtis.iter().collect::<HashSet<_>>().len(),
        jtis.len(),
        "unique jti"
    );
    assert_eq!(
        auth.token_requests(),
        1,
        "a nonce is not a reason for a new token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_proof_is_retried_with_a_new_proof_and_the_same_token() {
    let (auth, api, url, handle) = dpop_started(false).await;
    let client = client(BearerAuthMiddleware::new(handle));
    api.reject_next_proofs(1);
    let (status, body) = post(&client, &url, "payload").await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"payload"[..]));
    assert_eq!(api.rejected(RejectReason::DpopForced), 1);
    assert_eq!(api.requests(), 2);
    assert_eq!(auth.token_requests(), 1, "the token was fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_nonces_are_learned_without_retries() {
    let (_auth, api, url, handle) = dpop_started(true).await;
    let client = client(BearerAuthMiddleware::new(handle).retry_unauthorized(false));
    let (status, _) = post(&client, &url, "x").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&client, &url, "x").await.unwrap().0, StatusCode::OK);
    assert_eq!(api.dpop_nonce_challenges(), 1);
}

/// A client that is neither tower nor the middleware: plain reqwest, with the token from the
/// handle and proofs from `DpopKey::proof`, following the API's nonce by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_dpop_proof_is_accepted() {
    let (auth, api, url, handle) = dpop_started(true).await;
    let key = handle.dpop_key().unwrap().clone();
    let token = handle.current().unwrap();
    let http = reqwest::Client::new();
    let uri: http::Uri = url.parse().unwrap();
    let send = |nonce: Option<String>| {
        let proof = key
            .proof(
                &http::Method::POST,
                &uri,
                Some(token.access_token()),
                nonce.as_deref(),
            )
            .unwrap();
        http.post(&url)
            .header(AUTHORIZATION, token.header_value().clone())
            .header("dpop", proof)
            .body("x")
            .send()
    };
    let first = send(None).await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(api.rejected(RejectReason::DpopNonce), 1);
    let second = send(Some(nonce)).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(api.accepted(), 1);
    assert_eq!(auth.token_requests(), 1);
}

/// A token set through the middleware: each API gets its own audience's token (by route, or
/// by a `TokenKey` extension), a request no route decides goes without, and a revoked key's
/// token is replaced with one retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_set_routes_each_request_to_its_key() {
    let auth = auth_server(HOUR);
    let (a, b, unrouted) = (
        auth.api().expected_audience("api-a"),
        auth.api().expected_audience("api-b"),
        auth.api(),
    );
    let (url_a, url_b, url_unrouted) = (serve(&a).await, serve(&b).await, serve(&unrouted).await);
    let set = builder(&auth)
        .build_set()
        .unwrap()
        .route(a.url().parse().unwrap(), TokenKey::new().audience("api-a"))
        .unwrap()
        .spawn();
    let client = client_with(TokenSetMiddleware::new(set));

    for _ in 0..5 {
        assert_eq!(post(&client, &url_a, "a").await.unwrap().0, StatusCode::OK);
    }
    // No route for b; its key comes with the request.
    let response = client
        .post(&url_b)
        .with_extension(TokenKey::new().audience("api-b"))
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        post(&client, &url_unrouted, "x").await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(unrouted.rejected(RejectReason::Missing), 1);
    assert_eq!(
        unrouted.requests(),
        1,
        "not retried: it carried no token of ours"
    );
    assert_eq!((a.accepted(), b.accepted()), (5, 1));
    assert_eq!(auth.token_requests(), 2, "one token per key");

    auth.revoke_all();
    assert_eq!(post(&client, &url_a, "a").await.unwrap().0, StatusCode::OK);
    assert_eq!(a.rejected(RejectReason::Revoked), 1);
    assert_eq!(
        auth.token_requests(),
        3,
        "the refused key's token was replaced"
    );
}
