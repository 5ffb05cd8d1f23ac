//! A token set: one token per key (audience, scopes, resources), chosen per request by origin,
//! by a `TokenKey` extension or by a function; a token never goes to an API it was not chosen
//! for; idle keys are dropped and come back on demand.

mod common;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt, service_fn};
use tower_client_credentials::{
    BoxError, ClientCredentials, Origin, TokenKey, TokenSet, TokenSetLayer,
};
use tower_client_credentials_testkit::{
    BoxBody, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockApi, MockAuthServer, RejectReason,
};

use common::{auth_server, builder, send};

const SECOND: Duration = Duration::from_secs(1);

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

fn origin(url: &str) -> Origin {
    url.parse().unwrap()
}

fn key(audience: &str) -> TokenKey {
    TokenKey::new().audience(audience)
}

/// How many tokens `auth` issued for `audience`.
fn issued_for(auth: &MockAuthServer, audience: &str) -> usize {
    auth.tokens()
        .iter()
        .filter(|t| t.audience == audience)
        .count()
}

/// Every token `api` accepted was issued for `audience`, and it refused none for carrying
/// another API's token.
fn assert_only_own_tokens(auth: &MockAuthServer, api: &MockApi, audience: &str) {
    let tokens = auth.tokens();
    for jti in api.seen_jtis() {
        let token = tokens.iter().find(|t| t.jti == jti).expect("issued token");
        assert_eq!(token.audience, audience);
    }
    assert_eq!(api.rejected(RejectReason::WrongAudience), 0, "{audience}");
}

/// An in-memory client that sends each request to the first API whose URL prefix matches it.
fn router(
    routes: Vec<(&'static str, MockApi)>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<BoxBody>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let routes = Arc::new(routes);
    service_fn(move |request: Request<Full<Bytes>>| {
        let uri = request.uri().to_string();
        let api = routes
            .iter()
            .find(|(prefix, _)| uri.starts_with(prefix))
            .map(|(_, api)| api.clone())
            .unwrap_or_else(|| panic!("no API for {uri}"));
        async move { api.service().oneshot(request).await }
    })
}

/// Three APIs on loopback sockets, each accepting only tokens of its own audience.
#[tokio::test]
async fn three_apis_on_loopback_each_see_only_their_own_tokens() {
    let auth = MockAuthServer::start().await.unwrap();
    let audiences = ["api-a", "api-b", "api-c"];
    let mut apis = Vec::new();
    for audience in audiences {
        let api = auth.api().expected_audience(audience);
        api.serve().await.unwrap();
        apis.push(api);
    }
    let mut set =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .build_set()
            .unwrap();
    for (api, audience) in apis.iter().zip(audiences) {
        set = set.route(origin(&api.url()), key(audience)).unwrap();
    }
    let set = set.start().await.unwrap();
    assert_eq!(auth.token_requests(), 3);
    let client = TokenSetLayer::new(set.clone())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    // Interleaved, concurrent: a, b, c, a, b, c, …
    let mut requests = JoinSet::new();
    for i in 0..30 {
        let url = format!("{}/item/{i}", apis[i % 3].url());
        let client = client.clone();
        requests.spawn(async move { client.oneshot(get(&url)).await.map(|r| r.status()) });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap().unwrap(), StatusCode::OK);
    }
    for (api, audience) in apis.iter().zip(audiences) {
        assert_eq!(api.accepted(), 10, "{audience}");
        assert_eq!(api.rejected_total(), 0, "{audience}");
        assert_only_own_tokens(&auth, api, audience);
        assert_eq!(issued_for(&auth, audience), 1, "{audience}");
    }
    assert_eq!(auth.token_requests(), 3);

    let mut status = set.status();
    status.sort_by(|a, b| a.0.audience_value().cmp(&b.0.audience_value()));
    let listed: Vec<_> = status.iter().map(|(k, _)| k.audience_value()).collect();
    assert_eq!(listed, [Some("api-a"), Some("api-b"), Some("api-c")]);
    assert!(status.iter().all(|(_, s)| s.valid && s.running));
}

/// A request to an origin no route names goes out without our token.
#[tokio::test]
async fn a_request_to_an_unmapped_origin_carries_no_token() {
    let auth = MockAuthServer::start().await.unwrap();
    let mapped = auth.api().expected_audience("api-a");
    mapped.serve().await.unwrap();
    let unmapped = auth.api();
    unmapped.serve().await.unwrap();
    let set =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .build_set()
            .unwrap()
            .route(origin(&mapped.url()), key("api-a"))
            .unwrap()
            .start()
            .await
            .unwrap();
    let client = TokenSetLayer::new(set)
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let response = client
        .clone()
        .oneshot(get(&format!("{}/x", mapped.url())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = client
        .oneshot(get(&format!("{}/x", unmapped.url())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unmapped.rejected(RejectReason::Missing), 1);
    assert_eq!(unmapped.accepted(), 0);
    let headers = unmapped.last_request_headers().unwrap();
    assert!(headers.get(header::AUTHORIZATION).is_none());
    assert_eq!(auth.token_requests(), 1);
}

/// `allow_origins` on a token set: a key chosen by a function or an extension still does not
/// send its token to an origin outside the allowlist.
#[tokio::test(start_paused = true)]
async fn allow_origins_bounds_every_key() {
    let auth = auth_server(Duration::from_secs(60));
    let allowed_url = "http://127.0.0.1:9000";
    let other_url = "http://127.0.0.1:9001";
    let allowed = auth.api().expected_audience("orders");
    let other = auth.api().expected_audience("orders");
    let set = builder(&auth)
        .build_set()
        .unwrap()
        .route_with(|_method, _uri, _headers| Some(TokenKey::new().audience("orders")))
        .spawn();
    let client = TokenSetLayer::new(set)
        .allow_origins([origin(allowed_url)])
        .layer(router(vec![
            (allowed_url, allowed.clone()),
            (other_url, other.clone()),
        ]));

    let (status, _) = send(&client, get(&format!("{allowed_url}/x")))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed.accepted(), 1);

    let mut request = get(&format!("{other_url}/x"));
    request.extensions_mut().insert(key("orders"));
    let (status, _) = send(&client, request).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(other.rejected(RejectReason::Missing), 1);
    assert_eq!(other.accepted(), 0);
    assert_eq!(issued_for(&auth, "orders"), 1);
}

/// Three keys refreshed side by side for ten minutes of 60-second tokens: each key's token is
/// requested once per refresh period and no more, whatever the traffic to the other keys.
#[tokio::test(start_paused = true)]
async fn token_requests_are_one_per_key_per_lifetime() {
    let auth = auth_server(Duration::from_secs(60));
    let audiences = ["api-a", "api-b", "api-c"];
    let urls = [
        "http://127.0.0.1:8001",
        "http://127.0.0.1:8002",
        "http://127.0.0.1:8003",
    ];
    let apis: Vec<MockApi> = audiences
        .iter()
        .map(|a| auth.api().expected_audience(*a))
        .collect();
    let mut set = builder(&auth).build_set().unwrap();
    for (url, audience) in urls.iter().zip(audiences) {
        set = set.route(origin(url), key(audience)).unwrap();
    }
    // Lazy: no token until the first request of each key.
    let set = set.spawn();
    let client = TokenSetLayer::new(set.clone()).layer(router(
        urls.iter().copied().zip(apis.iter().cloned()).collect(),
    ));

    // Every 5 s, one request to each API, interleaved, for 600 s.
    for tick in 0..=120 {
        for i in 0..urls.len() {
            let url = urls[(i + tick) % 3];
            let (status, _) = send(&client, get(&format!("{url}/t{tick}"))).await.unwrap();
            assert_eq!(status, StatusCode::OK, "{url}");
        }
        tokio::time::sleep(5 * SECOND).await;
    }
    for (api, audience) in apis.iter().zip(audiences) {
        assert_eq!(api.accepted(), 121, "{audience}");
        assert_eq!(api.rejected_total(), 0, "{audience}");
        assert_only_own_tokens(&auth, api, audience);
        // Refreshed 46.8 to 48 s after each fetch (80 % of 60 s, jitter): fetches at 0 s and
        // then 12 more before 605 s.
        assert_eq!(issued_for(&auth, audience), 13, "{audience}");
    }
    assert_eq!(auth.token_requests(), 39);
    assert_eq!(set.status().len(), 3);
}

/// A key unused for the idle timeout is dropped and no longer refreshed; the next request for
/// it brings it back with a new token.
#[tokio::test(start_paused = true)]
async fn an_idle_key_stops_refreshing_and_comes_back_on_demand() {
    let auth = auth_server(Duration::from_secs(20));
    let (busy_url, idle_url) = ("http://127.0.0.1:8001", "http://127.0.0.1:8002");
    let busy = auth.api().expected_audience("busy");
    let idle = auth.api().expected_audience("idle");
    let set = builder(&auth)
        .build_set()
        .unwrap()
        .route(origin(busy_url), key("busy"))
        .unwrap()
        .route(origin(idle_url), key("idle"))
        .unwrap()
        .idle_timeout(60 * SECOND)
        .start()
        .await
        .unwrap();
    let client = TokenSetLayer::new(set.clone()).layer(router(vec![
        (busy_url, busy.clone()),
        (idle_url, idle.clone()),
    ]));
    let (status, _) = send(&client, get(&format!("{idle_url}/once")))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // Only the busy key is used from now on.
    let mut idle_tokens_at_120 = 0;
    for tick in 0..60 {
        let (status, _) = send(&client, get(&format!("{busy_url}/{tick}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(5 * SECOND).await;
        if tick == 23 {
            idle_tokens_at_120 = issued_for(&auth, "idle");
        }
    }
    // By 120 s (at most 1.5 idle timeouts after its last use) the idle key was dropped; it was
    // refreshed while it lived, and never after.
    assert!(idle_tokens_at_120 >= 2, "{idle_tokens_at_120}");
    assert_eq!(issued_for(&auth, "idle"), idle_tokens_at_120);
    // The busy key kept being refreshed: 300 s of 20-second tokens.
    assert!(issued_for(&auth, "busy") >= 15);
    let live: Vec<_> = set
        .status()
        .into_iter()
        .map(|(key, _)| key.audience_value().map(str::to_owned))
        .collect();
    assert_eq!(live, [Some("busy".to_owned())]);

    // Back on demand, with a new token.
    let before = issued_for(&auth, "idle");
    let (status, _) = send(&client, get(&format!("{idle_url}/again")))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(issued_for(&auth, "idle"), before + 1);
    assert_eq!(idle.accepted(), 2);
    assert_only_own_tokens(&auth, &idle, "idle");
    assert_eq!(set.status().len(), 2);
}

/// Without an origin route, a `TokenKey` extension picks the token, then the route function;
/// a routed origin keeps its own token whatever the extension says.
#[tokio::test(start_paused = true)]
async fn extension_and_function_routing() {
    let auth = auth_server(Duration::from_secs(60));
    let gateway = "http://127.0.0.1:9000";
    let orders = auth.api().expected_audience("orders");
    let billing = auth.api().expected_audience("billing");
    let other = auth.api();
    let routed_url = "http://127.0.0.1:8001";
    let routed = auth.api().expected_audience("routed");
    let set = builder(&auth)
        .build_set()
        .unwrap()
        .route(origin(routed_url), key("routed"))
        .unwrap()
        .route_with(|_method, uri, _headers| {
            uri.path()
                .starts_with("/orders")
                .then(|| TokenKey::new().audience("orders"))
        })
        .spawn();
    let client = TokenSetLayer::new(set.clone()).layer(router(vec![
        ("http://127.0.0.1:9000/orders", orders.clone()),
        ("http://127.0.0.1:9000/billing", billing.clone()),
        ("http://127.0.0.1:9000/", other.clone()),
        (routed_url, routed.clone()),
    ]));

    // The function decides.
    let (status, _) = send(&client, get(&format!("{gateway}/orders/1")))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(orders.accepted(), 1);

    // The extension decides, and is tried before the function.
    let mut request = get(&format!("{gateway}/billing/1"));
    request.extensions_mut().insert(key("billing"));
    let (status, _) = send(&client, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(billing.accepted(), 1);
    let mut request = get(&format!("{gateway}/orders/2"));
    request.extensions_mut().insert(key("billing"));
    let (status, _) = send(&client, request).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Refused, refreshed (the billing key's token, the one it carried) and refused again.
    assert_eq!(orders.rejected(RejectReason::WrongAudience), 2);
    assert_eq!(orders.accepted(), 1);

    // Nothing decides: no token.
    let (status, _) = send(&client, get(&format!("{gateway}/status")))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(other.rejected(RejectReason::Missing), 1);

    // A routed origin keeps its token: the extension cannot send it another API's token.
    let mut request = get(&format!("{routed_url}/x"));
    request.extensions_mut().insert(key("billing"));
    let (status, _) = send(&client, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_only_own_tokens(&auth, &routed, "routed");

    assert_eq!(issued_for(&auth, "orders"), 1);
    assert_eq!(issued_for(&auth, "billing"), 2);
    assert_eq!(issued_for(&auth, "routed"), 1);
    assert_eq!(set.status().len(), 3);
}

/// A 401 from one API discards and refreshes that key's token only.
#[tokio::test(start_paused = true)]
async fn a_401_on_one_api_refreshes_only_that_key() {
    let auth = auth_server(Duration::from_secs(3600));
    let urls = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"];
    let a = auth.api().expected_audience("api-a");
    let b = auth.api().expected_audience("api-b");
    let set: TokenSet = builder(&auth)
        .build_set()
        .unwrap()
        .route(origin(urls[0]), key("api-a"))
        .unwrap()
        .route(origin(urls[1]), key("api-b"))
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = TokenSetLayer::new(set.clone())
        .layer(router(vec![(urls[0], a.clone()), (urls[1], b.clone())]));
    for url in urls {
        let (status, _) = send(&client, get(url)).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    let token_a = auth
        .tokens()
        .into_iter()
        .find(|t| t.audience == "api-a")
        .unwrap();
    assert!(auth.revoke(&token_a.access_token));
    let (status, _) = send(&client, get(urls[0])).await.unwrap();
    assert_eq!(status, StatusCode::OK, "retried with a new token");
    assert_eq!(a.rejected(RejectReason::Revoked), 1);
    assert_eq!(issued_for(&auth, "api-a"), 2);
    assert_eq!(issued_for(&auth, "api-b"), 1);

    let (status, _) = send(&client, get(urls[1])).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.accepted(), 2);
    assert_eq!(auth.token_requests(), 3);
    let generations: Vec<_> = {
        let mut status = set.status();
        status.sort_by(|x, y| x.0.audience_value().cmp(&y.0.audience_value()));
        status.into_iter().map(|(_, s)| s.generation).collect()
    };
    assert_eq!(generations, [Some(2), Some(1)]);
}

/// Concurrent first requests of three keys, none created yet: one token request per key.
#[tokio::test(start_paused = true)]
async fn cold_keys_coalesce_their_first_requests() {
    let auth = auth_server(Duration::from_secs(60));
    auth.set_fault_plan(|_| {
        Some(tower_client_credentials_testkit::Fault::delay(
            Duration::from_millis(50),
        ))
    });
    let api = auth.api();
    let set = builder(&auth)
        .build_set()
        .unwrap()
        .route_with(|_, uri, _| {
            let audience = uri.path().trim_start_matches('/').split('/').next()?;
            Some(TokenKey::new().audience(audience))
        })
        .spawn();
    assert!(set.status().is_empty(), "no key before the first request");
    let client = TokenSetLayer::new(set.clone()).layer(api.service());

    let mut requests = JoinSet::new();
    for i in 0..300 {
        let client = client.clone();
        let url = format!("http://127.0.0.1:9000/{}/x", ["a", "b", "c"][i % 3]);
        requests.spawn(async move { send(&client, get(&url)).await });
    }
    while let Some(result) = requests.join_next().await {
        assert_eq!(result.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(auth.token_requests(), 3);
    for audience in ["a", "b", "c"] {
        assert_eq!(issued_for(&auth, audience), 1, "{audience}");
    }
    assert_eq!(api.accepted(), 300);
    assert_eq!(set.status().len(), 3);
}

/// A key that cannot go into a token request (a scope with a space) fails its request with
/// the configuration error; nothing is sent.
#[tokio::test(start_paused = true)]
async fn an_unusable_key_fails_its_request() {
    let auth = auth_server(Duration::from_secs(60));
    let api = auth.api();
    let set = builder(&auth).build_set().unwrap().spawn();
    let client = TokenSetLayer::new(set).layer(api.service());
    let mut request = get("http://127.0.0.1:9000/x");
    request
        .extensions_mut()
        .insert(TokenKey::new().scopes(["two words"]));
    let error = send(&client, request).await.unwrap_err();
    assert!(
        error
            .downcast_ref::<tower_client_credentials::ConfigError>()
            .is_some(),
        "{error:?}"
    );
    assert_eq!(api.requests(), 0);
    assert_eq!(auth.token_requests(), 0);

    // The same mistake in a route is refused when building.
    let refused = builder(&auth).build_set().unwrap().route(
        origin("http://127.0.0.1:9000"),
        TokenKey::new().scopes(["a b"]),
    );
    assert!(refused.is_err());
}
