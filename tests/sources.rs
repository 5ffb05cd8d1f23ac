//! Token sources other than the built-in client-credentials request, behind the same refresher
//! and layer: a closure source ([`source_fn`]) through `BearerAuthLayer`, and lazy start
//! against the embedded authorization server. On tokio's paused clock.

mod common;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};
use tower_client_credentials::{
    BearerAuthLayer, BoxError, ClientCredentials, ConfigError, IssuedToken, TokenError,
    TokenHandle, TokenUnavailable, source_fn,
};

const SECOND: Duration = Duration::from_secs(1);

/// What a scripted source answers on its nth fetch (from 0).
type Script = dyn Fn(usize) -> Result<IssuedToken, TokenError> + Send + Sync;

/// A closure source that answers by `script` and records when each fetch happened.
#[derive(Clone)]
struct Scripted {
    fetches: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn start(
        script: impl Fn(usize) -> Result<IssuedToken, TokenError> + Send + Sync + 'static,
    ) -> (Self, tower_client_credentials::TokenSourceBuilder) {
        let this = Self {
            fetches: Arc::default(),
        };
        let fetches = Arc::clone(&this.fetches);
        let script: Arc<Script> = Arc::new(script);
        let builder = ClientCredentials::from_source(source_fn(move || {
            let n = {
                let mut fetches = fetches.lock().unwrap();
                fetches.push(Instant::now());
                fetches.len() - 1
            };
            let script = Arc::clone(&script);
            async move { script(n) }
        }));
        (this, builder)
    }

    fn count(&self) -> usize {
        self.fetches.lock().unwrap().len()
    }

    fn at(&self) -> Vec<Instant> {
        self.fetches.lock().unwrap().clone()
    }
}

/// Sends one request through the layer to an API that answers 200 with the `Authorization`
/// header it got as the body.
async fn call(handle: &TokenHandle) -> Result<(StatusCode, String), BoxError> {
    let api = service_fn(|request: Request<Full<Bytes>>| async move {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(authorization))
    });
    let service = BearerAuthLayer::new(handle.clone()).layer(api);
    let request = Request::get("http://127.0.0.1/api")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.oneshot(request).await?;
    Ok((response.status(), response.into_body()))
}

#[tokio::test(start_paused = true)]
async fn a_closure_source_is_refreshed_before_expiry_through_the_layer() {
    let (source, builder) =
        Scripted::start(|n| Ok(IssuedToken::bearer(format!("tok-{n}"), 10 * SECOND)));
    let start = Instant::now();
    let handle = builder.build().unwrap().start().await.unwrap();
    assert_eq!(call(&handle).await.unwrap().1, "Bearer tok-0");

    // A 10-second token: margin min(60 s, 20 % = 2 s), up to 10 % earlier: at [7.8 s, 8 s].
    tokio::time::sleep_until(start + Duration::from_millis(7_790)).await;
    assert_eq!(source.count(), 1);
    assert_eq!(call(&handle).await.unwrap().1, "Bearer tok-0");
    tokio::time::sleep_until(start + Duration::from_millis(8_010)).await;
    assert_eq!(source.count(), 2);
    assert_eq!(call(&handle).await.unwrap().1, "Bearer tok-1");
    // Never sent expired: at 10 s the first token would have died; the second lives on.
    tokio::time::sleep_until(start + 12 * SECOND).await;
    assert_eq!(call(&handle).await.unwrap().1, "Bearer tok-1");
    assert_eq!(source.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_transient_error_is_retried_with_backoff_while_the_token_is_served() {
    // Fetch 0 succeeds, 1 to 3 fail transiently, 4 succeeds.
    let (source, builder) = Scripted::start(|n| match n {
        1..=3 => Err(TokenError::transient("token service overloaded")),
        _ => Ok(IssuedToken::bearer(format!("tok-{n}"), 60 * SECOND)),
    });
    let start = Instant::now();
    let handle = builder
        .backoff(SECOND, 8 * SECOND)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // The refresh is due at [46.8 s, 48 s]; the retries follow it.
    tokio::time::sleep_until(start + 50 * SECOND).await;
    assert!(source.count() >= 2, "{}", source.count());
    // The old token is still served while the refresher backs off.
    assert_eq!(call(&handle).await.unwrap().1, "Bearer tok-0");
    let status = handle.status();
    assert!(status.valid);
    assert!(
        status
            .last_error
            .as_ref()
            .is_some_and(|(error, _)| error.is_transient() && error.kind() == "source"),
        "{status:?}"
    );

    tokio::time::sleep_until(start + 59 * SECOND).await;
    assert_eq!(source.count(), 5);
    assert_eq!(call(&handle).await.unwrap().1, "Bearer tok-4");
    // Equal jitter: the nth retry waits between half and all of 1 s doubling.
    let at = source.at();
    for (retry, full) in [(2, SECOND), (3, 2 * SECOND), (4, 4 * SECOND)] {
        let waited = at[retry] - at[retry - 1];
        assert!(
            waited >= full / 2 && waited <= full,
            "retry {retry}: {waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_surfaces_to_requests_and_start() {
    let (source, builder) =
        Scripted::start(|_| Err(TokenError::permanent("no credentials configured")));
    let error = builder.build().unwrap().start().await.unwrap_err();
    assert!(!error.is_transient());
    // The source's own error is the cause, reached through `source()` only.
    assert_eq!(error.to_string(), "the token source failed (permanent)");
    assert_eq!(
        std::error::Error::source(&error).unwrap().to_string(),
        "no credentials configured"
    );
    assert_eq!(source.count(), 1);

    // Through the layer: the request fails with the source's error and is not sent.
    let (source, builder) = Scripted::start(|_| Err(TokenError::permanent("revoked")));
    let handle = builder.build().unwrap().spawn();
    let error = call(&handle).await.unwrap_err();
    let unavailable = error.downcast_ref::<TokenUnavailable>().unwrap();
    let cause = unavailable.token_error().unwrap();
    assert!(!cause.is_transient());
    assert_eq!(cause.kind(), "source");
    assert!(
        std::error::Error::source(cause)
            .unwrap()
            .to_string()
            .contains("revoked")
    );
    // Retried slowly: the permanent retry delay (60 s, up to 20 % less), not the backoff.
    tokio::time::sleep(47 * SECOND).await;
    assert_eq!(source.count(), 1);
    tokio::time::sleep(14 * SECOND).await;
    assert_eq!(source.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_that_cannot_be_a_header_is_a_permanent_error() {
    for bad in ["", "has space", "line\nbreak", "ünïcode"] {
        let (_, builder) = Scripted::start(move |_| Ok(IssuedToken::bearer(bad, 60 * SECOND)));
        let error = builder.build().unwrap().start().await.unwrap_err();
        assert!(!error.is_transient(), "{bad:?}");
        assert!(
            !error.to_string().contains(bad) || bad.is_empty(),
            "{error}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_slower_than_the_timeout_fails_transiently() {
    let handle = ClientCredentials::from_source(source_fn(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(IssuedToken::bearer("late", 60 * SECOND))
    }))
    .timeout(2 * SECOND)
    .build()
    .unwrap()
    .start()
    .await
    .unwrap_err();
    assert!(
        matches!(handle, TokenError::Timeout { after } if after == 2 * SECOND),
        "{handle:?}"
    );
}

#[test]
fn source_options_are_checked_at_build() {
    let builder = || {
        ClientCredentials::from_source(source_fn(|| async { Ok(IssuedToken::bearer("t", SECOND)) }))
    };
    let name = |error: ConfigError| match error {
        ConfigError::InvalidTiming { name, .. } => name,
        other => panic!("{other}"),
    };
    assert_eq!(
        name(builder().timeout(Duration::ZERO).build().unwrap_err()),
        "timeout"
    );
    assert_eq!(
        name(builder().refresh_ratio(f64::NAN).build().unwrap_err()),
        "refresh_ratio"
    );
    assert_eq!(
        name(
            builder()
                .backoff(Duration::MAX, Duration::MAX)
                .build()
                .unwrap_err()
        ),
        "backoff"
    );
    assert_eq!(
        name(
            builder()
                .permanent_retry(Duration::ZERO)
                .build()
                .unwrap_err()
        ),
        "permanent_retry"
    );
    assert!(
        builder()
            .timeout(Duration::MAX)
            .max_wait(Duration::MAX)
            .refresh_before(Duration::MAX)
            .build()
            .is_ok()
    );
}

#[test]
fn issued_tokens_never_show_the_token() {
    let token = IssuedToken::bearer("s3cr3t-token-value", Duration::MAX).with_scope("orders:read");
    let debug = format!("{token:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(debug.contains("orders:read"), "{debug}");
    // Lifetimes saturate at a year.
    assert_eq!(token.lifetime(), Duration::from_secs(365 * 24 * 60 * 60));
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(token.scope(), Some("orders:read"));
}

#[tokio::test(start_paused = true)]
async fn lazy_start_makes_no_request_before_the_first_and_one_for_2000_concurrent_firsts() {
    let auth = common::auth_server(60 * SECOND);
    // The token request takes a while, so that all 2,000 requests meet it in flight.
    auth.set_fault_plan(|_| {
        Some(tower_client_credentials_testkit::Fault::delay(
            Duration::from_millis(50),
        ))
    });
    let api = auth.api();
    let handle = common::builder(&auth)
        .lazy(true)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // A day passes without a request: no token is asked for.
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert_eq!(auth.token_requests(), 0);
    assert!(handle.current().is_none());
    assert!(handle.status().next_attempt_in.is_none());

    let service = common::client(&handle, &api);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..2000 {
        let service = service.clone();
        requests.spawn(async move { common::send(&service, common::request("x")).await });
    }
    while let Some(result) = requests.join_next().await {
        assert_eq!(result.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(api.accepted(), 2000);

    // From then on, the usual refresh: a 60-second token is renewed at [46.8 s, 48 s].
    let first = Instant::now();
    tokio::time::sleep_until(first + 46 * SECOND).await;
    assert_eq!(auth.token_requests(), 1);
    tokio::time::sleep_until(first + 49 * SECOND).await;
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(handle.current().unwrap().generation(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lazy_handle_fetches_on_token_and_a_shut_down_one_never() {
    let (source, builder) =
        Scripted::start(|n| Ok(IssuedToken::bearer(format!("t{n}"), 60 * SECOND)));
    let handle = builder.lazy(true).build().unwrap().start().await.unwrap();
    tokio::time::sleep(3600 * SECOND).await;
    assert_eq!(source.count(), 0);
    assert_eq!(handle.token().await.unwrap().access_token(), "t0");
    assert_eq!(source.count(), 1);

    let (source, builder) =
        Scripted::start(|n| Ok(IssuedToken::bearer(format!("t{n}"), 60 * SECOND)));
    let handle = builder.lazy(true).build().unwrap().spawn();
    handle.shutdown();
    assert!(matches!(
        handle.token().await,
        Err(TokenUnavailable::Shutdown)
    ));
    tokio::time::sleep(3600 * SECOND).await;
    assert_eq!(source.count(), 0);
    assert!(!handle.status().running);
}

#[tokio::test(start_paused = true)]
async fn a_lazy_token_set_fetches_no_routed_key_at_start() {
    let auth = common::auth_server(60 * SECOND);
    let origin: tower_client_credentials::Origin = "http://127.0.0.1:1".parse().unwrap();
    let set = common::builder(&auth)
        .lazy(true)
        .build_set()
        .unwrap()
        .route(origin, tower_client_credentials::TokenKey::new())
        .unwrap()
        .start()
        .await
        .unwrap();
    tokio::time::sleep(3600 * SECOND).await;
    assert_eq!(auth.token_requests(), 0);
    assert!(set.status().is_empty());
}

/// A federated client assertion in a file that is rewritten between refreshes: each token
/// request carries the file's content at that moment, as the embedded server records it.
#[tokio::test(start_paused = true)]
async fn each_token_request_carries_the_assertion_file_as_it_is_then() {
    let dir = std::env::temp_dir().join(format!("tcc-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("projected-token");
    let jwt = |n: u32| format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2QtMSIsInJvdCI6{n}fQ.c2ln{n}");
    std::fs::write(&path, format!("{}\n", jwt(1))).unwrap();

    // The embedded server does not verify federated assertions: it records the request and
    // answers with a 10-second token.
    let auth = tower_client_credentials_testkit::MockAuthServer::new();
    auth.set_fault_plan(|_| {
        Some(tower_client_credentials_testkit::Fault::json(
            StatusCode::OK,
            r#"{"access_token":"issued","token_type":"Bearer","expires_in":10}"#,
        ))
    });
    let start = Instant::now();
    let handle = ClientCredentials::builder_with_assertion(
        "http://127.0.0.1/oauth/token",
        "workload-client",
        tower_client_credentials::ClientAssertion::from_file(&path),
    )
    .http_client(auth.service())
    .build()
    .unwrap()
    .start()
    .await
    .unwrap();
    let check = |n: u32| {
        let request = auth.last_request().unwrap();
        assert_eq!(request.param("client_assertion"), Some(jwt(n).as_str()));
        assert_eq!(
            request.param("client_assertion_type"),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        assert_eq!(request.param("client_id"), Some("workload-client"));
        assert_eq!(request.param("grant_type"), Some("client_credentials"));
        assert_eq!(request.param("client_secret"), None);
        assert!(request.headers.get(header::AUTHORIZATION).is_none());
    };
    assert_eq!(auth.token_requests(), 1);
    check(1);

    // The kubelet rotates the token; the refresh (at [7.8 s, 8 s]) sends the new one.
    std::fs::write(&path, jwt(2)).unwrap();
    tokio::time::sleep_until(start + 9 * SECOND).await;
    assert_eq!(auth.token_requests(), 2);
    check(2);
    std::fs::write(&path, jwt(3)).unwrap();
    tokio::time::sleep_until(start + 17 * SECOND).await;
    assert_eq!(auth.token_requests(), 3);
    check(3);
    assert!(handle.current().is_some());

    // A file that is gone fails transiently, and names the file but no content.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep_until(start + 25 * SECOND).await;
    let (error, _) = handle.status().last_error.expect("the refresh failed");
    assert!(error.is_transient(), "{error}");
    let cause = std::error::Error::source(&error)
        .expect("the read error")
        .to_string();
    assert!(cause.contains("projected-token"), "{error}: {cause}");
    assert_eq!(
        auth.token_requests(),
        3,
        "nothing is sent without an assertion"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token set of custom sources: each key gets its own source, made from the key, on the
/// first request for it; requests to each origin carry their key's token.
#[tokio::test(start_paused = true)]
async fn a_token_set_makes_one_custom_source_per_key() {
    use tower_client_credentials::{Origin, TokenKey, TokenSetLayer};

    let made = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = Arc::clone(&made);
    let set = ClientCredentials::from_source_per_key(move |key: &TokenKey| {
        let audience = key.audience_value().unwrap_or("none").to_owned();
        record.lock().unwrap().push(audience.clone());
        source_fn(move || {
            let token = format!("for-{audience}");
            async move { Ok(IssuedToken::bearer(token, 60 * SECOND)) }
        })
    })
    .build_set()
    .unwrap()
    .route(
        "http://127.0.0.1:1".parse::<Origin>().unwrap(),
        TokenKey::new().audience("orders"),
    )
    .unwrap()
    .route(
        "http://127.0.0.1:2".parse::<Origin>().unwrap(),
        TokenKey::new().audience("billing"),
    )
    .unwrap()
    .start()
    .await
    .unwrap();
    let mut made_at_start = made.lock().unwrap().clone();
    made_at_start.sort();
    assert_eq!(made_at_start, ["billing", "orders"]);

    let api = service_fn(|request: Request<Full<Bytes>>| async move {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(authorization))
    });
    let service = TokenSetLayer::new(set.clone()).layer(api);
    for (port, expected) in [(1, "Bearer for-orders"), (2, "Bearer for-billing")] {
        let request = Request::get(format!("http://127.0.0.1:{port}/x"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.into_body(), expected);
    }
    assert_eq!(
        made.lock().unwrap().len(),
        2,
        "one source per key, made once"
    );

    // A builder of one source does not make a set, nor one of a source per key a handle.
    let one = ClientCredentials::from_source(source_fn(|| async {
        Ok(IssuedToken::bearer("t", SECOND))
    }));
    assert!(matches!(
        one.build_set(),
        Err(ConfigError::InvalidParameter { name, .. }) if name == "source"
    ));
    let per_key = ClientCredentials::from_source_per_key(|_: &TokenKey| {
        source_fn(|| async { Ok(IssuedToken::bearer("t", SECOND)) })
    });
    assert!(matches!(
        per_key.build(),
        Err(ConfigError::InvalidParameter { name, .. }) if name == "source"
    ));
}
