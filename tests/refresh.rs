//! The token store and refresher: single flight, refresh timing, backoff, shutdown. All on
//! tokio's paused clock, against the embedded authorization server in memory.

mod common;

use std::time::Duration;

use http::StatusCode;
use tokio::{task::JoinSet, time::Instant};
use tower_client_credentials::{TokenError, TokenUnavailable};
use tower_client_credentials_testkit::{ExpiresIn, Fault, MockAuthServer};

use common::{auth_server, builder, client, request, send, unavailable};

const SECOND: Duration = Duration::from_secs(1);

async fn sleep_until_offset(start: Instant, offset: Duration) {
    tokio::time::sleep_until(start + offset).await;
}

#[tokio::test(start_paused = true)]
async fn cold_start_with_1000_concurrent_requests_makes_one_token_request() {
    let auth = auth_server(Duration::from_secs(60));
    auth.set_fault_plan(|_| Some(Fault::delay(Duration::from_millis(50))));
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().spawn();
    let service = client(&handle, &api);

    let mut requests = JoinSet::new();
    for _ in 0..1000 {
        let service = service.clone();
        requests.spawn(async move { send(&service, request("x")).await });
    }
    let mut ok = 0;
    while let Some(result) = requests.join_next().await {
        let (status, _) = result.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 1000);
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(api.accepted(), 1000);
    assert_eq!(api.rejected_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_5_second_token_is_refreshed_at_about_4_seconds() {
    let auth = auth_server(Duration::from_secs(5));
    let start = Instant::now();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(handle.current().unwrap().lifetime(), Duration::from_secs(5));

    // Jitter makes the refresh up to 10 % of the 1-second margin earlier: [3.9 s, 4.0 s].
    sleep_until_offset(start, Duration::from_millis(3_880)).await;
    assert_eq!(auth.token_requests(), 1);
    sleep_until_offset(start, Duration::from_millis(4_010)).await;
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(handle.current().unwrap().generation(), 2);
    // And again, 3.9 to 4 s after that.
    sleep_until_offset(start, Duration::from_millis(7_780)).await;
    assert_eq!(auth.token_requests(), 2);
    sleep_until_offset(start, Duration::from_millis(8_030)).await;
    assert_eq!(auth.token_requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_24_hour_token_is_refreshed_about_a_minute_early() {
    let day = Duration::from_secs(86_400);
    let auth = auth_server(day);
    let start = Instant::now();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();

    // Margin 60 s, jitter up to 6 s more: refresh within [86 334 s, 86 340 s].
    sleep_until_offset(start, Duration::from_secs(86_333)).await;
    assert_eq!(auth.token_requests(), 1);
    assert!(handle.current().is_some());
    sleep_until_offset(start, Duration::from_secs(86_341)).await;
    assert_eq!(auth.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn lifetime_comes_from_the_jwt_when_expires_in_is_missing() {
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(5))
        .expires_in(ExpiresIn::Omitted)
        .build();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    assert_eq!(handle.current().unwrap().lifetime(), Duration::from_secs(5));

    // expires_in sent as a string works too.
    auth.set_expires_in(ExpiresIn::String);
    auth.set_lifetime(Duration::from_secs(7));
    // The refresh is due at 80 % of the 5 s (up to 10 % earlier): by 4 s, or a little later
    // when the lifetime read from `exp` against the wall clock is a hair over 5 s. At 4.5 s the
    // 7 s token is current and far from its own refresh (at 5.6 s or later after it).
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert_eq!(handle.current().unwrap().lifetime(), Duration::from_secs(7));
}

/// A JWT whose `iat`/`exp` are from a server whose clock is an hour behind ours: its lifetime is
/// `exp - iat`, not `exp - now`.
#[tokio::test(start_paused = true)]
async fn jwt_lifetime_is_immune_to_clock_skew() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(r#"{{"iat":{},"exp":{}}}"#, now - 3600, now - 3600 + 600);
    let jwt = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let auth = auth_server(SECOND);
    let body = format!(r#"{{"access_token":"{jwt}","token_type":"Bearer"}}"#);
    auth.fail_next(1, Fault::json(StatusCode::OK, body));
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    assert_eq!(
        handle.current().unwrap().lifetime(),
        Duration::from_secs(600)
    );
}

#[tokio::test(start_paused = true)]
async fn an_opaque_token_without_expires_in_gets_the_default_lifetime() {
    let auth = auth_server(SECOND);
    auth.fail_next(
        1,
        Fault::json(
            StatusCode::OK,
            r#"{"access_token":"opaque-123","token_type":"bearer"}"#,
        ),
    );
    let handle = builder(&auth)
        .default_lifetime(Duration::from_secs(42))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let token = handle.current().unwrap();
    assert_eq!(token.lifetime(), Duration::from_secs(42));
    assert_eq!(token.access_token(), "opaque-123");
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_keeps_the_old_token_and_backs_off() {
    let auth = auth_server(Duration::from_secs(10));
    let api = auth.api();
    let start = Instant::now();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = client(&handle, &api);
    auth.set_fault_plan(|_| Some(Fault::status(StatusCode::SERVICE_UNAVAILABLE)));

    // The refresh at ~8 s fails; requests keep going out with the old token until just
    // before it expires (a safety margin of a tenth of the lifetime, at most 1 s: 9 s here).
    sleep_until_offset(start, Duration::from_millis(8_990)).await;
    let (status, _) = send(&service, request("a")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(handle.current().unwrap().generation(), 1);
    let failed_attempts = auth.token_requests() - 1;
    // Backoff 0.25–0.5 s, 0.5–1 s… in about a second: a handful of attempts, no hot loop.
    assert!(
        (1..=5).contains(&failed_attempts),
        "{failed_attempts} attempts"
    );
    let status = handle.status();
    let (error, _) = status.last_error.expect("last error recorded");
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(error.is_transient());

    // Then the token is withdrawn: requests get a typed error, never go out tokenless.
    sleep_until_offset(start, Duration::from_millis(9_001)).await;
    assert!(handle.current().is_none());
    let error = send(&service, request("b")).await.unwrap_err();
    assert!(unavailable(&error).is_transient());
    assert_eq!(api.rejected_total(), 0);

    // A minute of outage: the backoff grows to its 30 s cap, so only a few more attempts.
    let before = auth.token_requests();
    sleep_until_offset(start, Duration::from_secs(70)).await;
    let during = auth.token_requests() - before;
    assert!(during <= 8, "{during} attempts in 60 s");

    // The endpoint comes back: the refresher recovers within one backoff period.
    auth.clear_faults();
    sleep_until_offset(start, Duration::from_secs(101)).await;
    assert!(handle.current().is_some());
    let (status, _) = send(&service, request("c")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(handle.status().last_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let auth = auth_server(Duration::from_secs(60));
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("7"),
    );
    auth.fail_next(
        1,
        Fault::response(StatusCode::TOO_MANY_REQUESTS, headers, ""),
    );
    let start = Instant::now();
    let handle = builder(&auth).build().unwrap().spawn();
    let error = handle.token().await.unwrap_err();
    assert_eq!(
        error.token_error().and_then(TokenError::status),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    sleep_until_offset(start, Duration::from_millis(6_900)).await;
    assert_eq!(auth.token_requests(), 1);
    sleep_until_offset(start, Duration::from_millis(7_100)).await;
    assert_eq!(auth.token_requests(), 2);
    assert!(handle.current().is_some());
}

#[tokio::test(start_paused = true)]
async fn bad_credentials_fail_at_start() {
    let auth = auth_server(SECOND);
    let error = tower_client_credentials::ClientCredentials::builder(
        "http://127.0.0.1/oauth/token",
        "demo-client",
        "wrong-secret",
    )
    .http_client(auth.service())
    .build()
    .unwrap()
    .start()
    .await
    .unwrap_err();
    assert_eq!(error.oauth_error(), Some("invalid_client"));
    assert!(!error.is_transient());
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_fails_waiting_requests_fast() {
    let auth = auth_server(Duration::from_secs(3600));
    auth.set_fault_plan(|_| {
        Some(Fault::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "unknown scope",
        ))
    });
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().spawn();
    let service = client(&handle, &api);

    let start = Instant::now();
    let error = send(&service, request("a")).await.unwrap_err();
    let cause = unavailable(&error);
    assert!(
        matches!(cause, TokenUnavailable::FetchFailed(e) if e.oauth_error() == Some("invalid_scope"))
    );
    assert!(!cause.is_transient());
    assert_eq!(start.elapsed(), Duration::ZERO);

    // The next attempt is a minute away, beyond the 30 s wait: fail at once, fetch nothing.
    let error = send(&service, request("b")).await.unwrap_err();
    assert!(unavailable(&error).token_error().is_some());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(api.requests(), 0);

    // It keeps trying, slowly, and recovers once the configuration is fixed on the server.
    auth.clear_faults();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(auth.token_requests(), 2);
    let (status, _) = send(&service, request("c")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_at_most_max_wait() {
    let auth = auth_server(SECOND);
    auth.set_fault_plan(|_| Some(Fault::hang()));
    let api = auth.api();
    let handle = builder(&auth)
        .timeout(Duration::from_secs(60))
        .max_wait(Duration::from_secs(2))
        .build()
        .unwrap()
        .spawn();
    let start = Instant::now();
    let error = send(&client(&handle, &api), request("a"))
        .await
        .unwrap_err();
    assert!(
        matches!(unavailable(&error), TokenUnavailable::TimedOut { waited, .. } if *waited == Duration::from_secs(2))
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_endpoint_times_out() {
    let auth = auth_server(SECOND);
    auth.fail_next(1, Fault::hang());
    let start = Instant::now();
    let error = builder(&auth)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Timeout { after } if after == Duration::from_secs(3)));
    assert!(error.is_transient());
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn the_refresher_stops_when_the_last_handle_drops() {
    let auth = auth_server(Duration::from_secs(5));
    let api = auth.api();
    let (handle, refresher) = builder(&auth).build().unwrap().into_parts();
    let task = tokio::spawn(refresher.into_future());
    let service = client(&handle, &api);
    let (status, _) = send(&service, request("a")).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    drop(handle);
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "a layer still holds a handle");
    drop(service);
    tokio::time::timeout(SECOND, task)
        .await
        .expect("the refresher stopped")
        .unwrap();
    // No more token requests after that.
    let fetched = auth.token_requests();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(auth.token_requests(), fetched);
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_requests_with_a_typed_error() {
    let auth = auth_server(Duration::from_secs(5));
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = client(&handle, &api);
    handle.shutdown();
    tokio::task::yield_now().await;
    let error = send(&service, request("a")).await.unwrap_err();
    assert!(matches!(unavailable(&error), TokenUnavailable::Shutdown));
    assert!(!handle.status().running);
    assert_eq!(api.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refresher_that_is_never_run_fails_requests_instead_of_hanging() {
    let auth = auth_server(SECOND);
    let (handle, refresher) = builder(&auth).build().unwrap().into_parts();
    drop(refresher);
    let error = handle.token().await.unwrap_err();
    assert!(matches!(error, TokenUnavailable::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_while_waiting_affects_nobody_else() {
    let auth = auth_server(Duration::from_secs(60));
    auth.fail_next(1, Fault::delay(SECOND));
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().spawn();
    let service = client(&handle, &api);

    let impatient = tokio::time::timeout(Duration::from_millis(100), send(&service, request("a")));
    assert!(impatient.await.is_err());
    let (status, _) = send(&service, request("b")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(api.accepted(), 1);
}

/// Tokens of one second, rotating for a minute under steady load from 10 workers: the API
/// never sees an expired or missing token.
#[tokio::test(start_paused = true)]
async fn no_request_reaches_the_api_without_a_valid_token_while_tokens_rotate() {
    let auth = auth_server(SECOND);
    let api = auth.api();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let service = client(&handle, &api);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = JoinSet::new();
    for worker in 0..10_u64 {
        let service = service.clone();
        workers.spawn(async move {
            let mut sent = 0_u64;
            tokio::time::sleep(Duration::from_millis(worker * 3)).await;
            while Instant::now() < deadline {
                let (status, _) = send(&service, request("x")).await.unwrap();
                assert_eq!(status, StatusCode::OK);
                sent += 1;
                tokio::time::sleep(Duration::from_millis(23)).await;
            }
            sent
        });
    }
    let mut sent = 0;
    while let Some(count) = workers.join_next().await {
        sent += count.unwrap();
    }
    assert!(sent > 20_000, "{sent}");
    assert_eq!(api.accepted(), sent);
    assert_eq!(api.rejected_total(), 0);
    // One fetch per ~0.8 s: 60 / 0.8 = 75, plus the first, give or take the jitter.
    let fetched = auth.token_requests();
    assert!((70..=85).contains(&fetched), "{fetched} token requests");
}

/// A refresher that is never polled past its token's usable end (a starved runtime, a task
/// that a busy executor never gets to) does not let the expired token out: the request path
/// checks the token's end itself, and the request waits for a new token instead.
#[tokio::test(start_paused = true)]
async fn a_starved_refresher_never_lets_an_expired_token_out() {
    use std::future::IntoFuture;

    let auth = auth_server(Duration::from_secs(10));
    let api = auth.api();
    let (handle, refresher) = builder(&auth)
        .max_wait(SECOND)
        .build()
        .unwrap()
        .into_parts();
    let mut refresher = Box::pin(refresher.into_future());
    // Drive the refresher until the first token is in, then stop polling it (it is not
    // dropped: a dropped refresher shuts the handle down, a starved one does not).
    tokio::select! {
        () = &mut refresher => panic!("the refresher stopped"),
        token = handle.token() => { token.unwrap(); }
    }
    let service = client(&handle, &api);
    let (status, _) = send(&service, request("fresh")).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // Past the token's end: the store still holds it, since nothing withdrew it.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(handle.current().is_none(), "expired, by the clock");
    let error = send(&service, request("late")).await.unwrap_err();
    assert!(
        matches!(unavailable(&error), TokenUnavailable::TimedOut { .. }),
        "{error:?}"
    );
    // Only the fresh request reached the API: none went out with the expired token.
    assert_eq!(api.requests(), 1);
    assert_eq!(api.rejected_total(), 0);

    // Once the refresher runs again, requests get a new token.
    let (status, _) = tokio::select! {
        () = &mut refresher => panic!("the refresher stopped"),
        sent = send(&service, request("again")) => sent.unwrap(),
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(auth.token_requests(), 2);
}

/// A server whose tokens are dead on arrival (`expires_in: 0.001`) gets a few token requests a
/// second, not a loop: after each success the next fetch waits at least 250 ms.
#[tokio::test(start_paused = true)]
async fn tokens_that_die_at_once_do_not_make_the_refresher_loop() {
    let auth = auth_server(Duration::from_secs(60));
    auth.set_fault_plan(|_| {
        Some(Fault::json(
            StatusCode::OK,
            r#"{"access_token":"short-lived","token_type":"Bearer","expires_in":0.001}"#,
        ))
    });
    let handle = builder(&auth).build().unwrap().spawn();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let requests = auth.token_requests();
    assert!(
        (35..=41).contains(&requests),
        "{requests} token requests in 10 s: one per 250 ms at most"
    );
    drop(handle);
}

/// `invalidate` acts on the handle's own current token only: a token of another handle (even
/// of the same generation) or one already replaced changes nothing.
#[tokio::test(start_paused = true)]
async fn invalidate_takes_only_the_handle_s_own_current_token() {
    let auth = auth_server(Duration::from_secs(3600));
    let first = builder(&auth).build().unwrap().start().await.unwrap();
    let other = builder(&auth).build().unwrap().start().await.unwrap();
    assert_eq!(auth.token_requests(), 2);
    let foreign = other.current().unwrap();
    assert_eq!(foreign.generation(), first.current().unwrap().generation());
    assert!(!first.invalidate(&foreign), "another handle's token");
    tokio::time::sleep(SECOND).await;
    assert_eq!(auth.token_requests(), 2);

    let own = first.current().unwrap();
    first.accepted(&own);
    assert!(first.invalidate(&own));
    let next = first.token().await.unwrap();
    assert_eq!(next.generation(), 2);
    assert_eq!(auth.token_requests(), 3);
    assert!(!first.invalidate(&own), "already replaced");
    tokio::time::sleep(SECOND).await;
    assert_eq!(auth.token_requests(), 3);
}
