//! Outages over time, on the paused clock, with the in-memory servers: the endpoint down when
//! the service starts, down for longer than a token's lifetime, and flapping under 500
//! requests per second. Throughout, the API counts every request that came without a valid
//! token, and that count must stay 0.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::{task::JoinSet, time::Instant};
use tower::{Layer, Service, ServiceExt};
use tower_client_credentials::{
    BearerAuthLayer, BoxError, ClientCredentials, ClientCredentialsBuilder,
};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockApi, MockApiService, MockAuthServer,
    RejectReason,
};

use crate::{
    common::{self, auth_server, request},
    support::{SECOND, Schedule, refreshes_allowed},
};

/// A token endpoint that can be taken down: while down, every token request fails as a refused
/// connection does, and is counted.
#[derive(Clone)]
struct Outage {
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl Outage {
    fn new(down: bool) -> Self {
        Self {
            down: Arc::new(AtomicBool::new(down)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// A builder whose token requests go to `auth` in memory, through this switch.
    fn builder(&self, auth: &MockAuthServer) -> ClientCredentialsBuilder {
        let outage = self.clone();
        let server = auth.service();
        ClientCredentials::builder(
            "http://127.0.0.1/oauth/token",
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
        )
        .http_client(tower::service_fn(move |request: Request<Full<Bytes>>| {
            let outage = outage.clone();
            let mut server = server.clone();
            async move {
                if outage.down.load(Ordering::SeqCst) {
                    outage.refused.fetch_add(1, Ordering::SeqCst);
                    return Err(BoxError::from(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "connection refused",
                    )));
                }
                server.call(request).await
            }
        }))
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The API accepted it.
    Ok,
    /// It got a typed `TokenUnavailable` and never went out.
    Unavailable,
    /// The API refused its token, and the refusal came back to the caller.
    Refused,
}

/// Sends a request and classifies the outcome; anything else fails the test.
async fn outcome(service: &tower_client_credentials::BearerAuth<MockApiService>) -> Outcome {
    match service.clone().oneshot(request("x")).await {
        Ok(response) if response.status() == StatusCode::OK => Outcome::Ok,
        Ok(response) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            Outcome::Refused
        }
        Err(error) => {
            let tower_client_credentials::BearerAuthError::TokenUnavailable(unavailable) = error
            else {
                panic!("not TokenUnavailable: {error:?}");
            };
            assert!(unavailable.is_transient(), "{unavailable:?}");
            assert!(unavailable.token_error().is_some(), "{unavailable:?}");
            Outcome::Unavailable
        }
    }
}

/// Sends a request at each of `times` (offsets from `start`), concurrently, and returns each
/// request's send offset and outcome, in order.
async fn load(
    service: &tower_client_credentials::BearerAuth<MockApiService>,
    start: Instant,
    times: impl IntoIterator<Item = Duration>,
) -> Vec<(Duration, Outcome)> {
    let mut requests = JoinSet::new();
    for at in times {
        let service = service.clone();
        requests.spawn(async move {
            tokio::time::sleep_until(start + at).await;
            (at, outcome(&service).await)
        });
    }
    let mut outcomes = requests.join_all().await;
    outcomes.sort_by_key(|(at, _)| *at);
    outcomes
}

/// Offsets from 0 to `until`, `step` apart, shifted by a few odd microseconds.
///
/// The shift keeps requests off the exact instants at which the refresher's timers fire (a
/// token's expiry, the next attempt): on the paused clock such ties are common, and a request
/// that wins one goes out with a token that expires that very instant, which is the bug
/// `a_request_does_not_carry_a_token_past_its_expiry` shows on its own.
fn every(step: Duration, until: Duration) -> impl Iterator<Item = Duration> {
    const SHIFT: Duration = Duration::from_micros(1_013);
    (0..)
        .map(move |i| step * i + SHIFT)
        .take_while(move |at| *at < until)
}

fn assert_no_tokenless_request(api: &MockApi) {
    println!(
        "API: {} accepted, {} missing, {} expired, {} rejected",
        api.accepted(),
        api.rejected(RejectReason::Missing),
        api.rejected(RejectReason::Expired),
        api.rejected_total()
    );
    assert_eq!(api.rejected(RejectReason::Missing), 0);
    assert_eq!(api.rejected(RejectReason::Expired), 0);
    assert_eq!(api.rejected_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_endpoint_down_when_the_service_starts() {
    let outage_secs = Duration::from_secs(20);
    let auth = auth_server(Duration::from_secs(60));
    let api = auth.api();
    let outage = Outage::new(true);
    let start = Instant::now();
    let handle = outage.builder(&auth).build().unwrap().spawn();
    let service = common::client(&handle, &api);

    // A request every 500 ms during the outage.
    let requests = tokio::spawn({
        let service = service.clone();
        async move { load(&service, start, every(SECOND / 2, outage_secs)).await }
    });

    // The token requests stay within the backoff schedule.
    tokio::time::sleep_until(start + outage_secs).await;
    let (fewest, most) =
        Schedule::DEFAULT.attempts_allowed(outage_secs, true, None, Duration::ZERO);
    let refused = outage.refused();
    assert!(
        (fewest..=most).contains(&refused),
        "{refused} attempts in {outage_secs:?}, allowed {fewest}..={most}"
    );
    assert_eq!(api.requests(), 0, "a request went out without a token");

    // The endpoint comes up: the next attempt, within one backoff period, gets a token.
    let status = handle.status();
    assert!(status.running);
    let bound = Schedule::DEFAULT.longest_delay(true, None);
    assert!(status.next_attempt_in.unwrap() <= bound);
    outage.set_down(false);
    tokio::time::sleep(bound).await;
    assert_eq!(
        outage.refused(),
        refused,
        "no failed attempt after the endpoint came back"
    );
    assert_eq!(auth.token_requests(), 1);
    assert!(handle.current().is_some());

    // The requests made during the outage got a typed error, or, when their wait spanned the
    // endpoint's return, went out with the new token.
    let outcomes = requests.await.unwrap();
    assert_eq!(outcomes[0].1, Outcome::Unavailable);
    assert!(outcomes.iter().all(|(_, o)| *o != Outcome::Refused));
    let ok = outcomes.iter().filter(|(_, o)| *o == Outcome::Ok).count();
    assert_eq!(api.accepted(), ok as u64);

    let now = start.elapsed();
    let outcomes = load(
        &service,
        start,
        every(SECOND / 10, 5 * SECOND).map(|at| now + at),
    )
    .await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|(_, o)| *o == Outcome::Ok));
    assert_eq!(api.accepted(), (ok + outcomes.len()) as u64);
    assert_no_tokenless_request(&api);
}

#[tokio::test(start_paused = true)]
async fn down_for_longer_than_a_token_lifetime_then_back() {
    let lifetime = Duration::from_secs(10);
    let (down_at, up_at) = (SECOND, Duration::from_secs(31));
    let auth = auth_server(lifetime);
    let api = auth.api();
    let outage = Outage::new(false);
    let start = Instant::now();
    let handle = outage
        .builder(&auth)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let service = common::client(&handle, &api);

    let switch = tokio::spawn({
        let outage = outage.clone();
        async move {
            tokio::time::sleep_until(start + down_at).await;
            outage.set_down(true);
            tokio::time::sleep_until(start + up_at).await;
            outage.set_down(false);
        }
    });
    // A request every 100 ms for 70 s.
    let outcomes = load(&service, start, every(SECOND / 10, Duration::from_secs(70))).await;
    switch.await.unwrap();

    // Until just before the token expired (the safety margin: a tenth of its lifetime, at
    // most 1 s), requests went out with it although refreshing failed.
    let withdrawn_at = lifetime - (lifetime / 10).min(SECOND);
    let before_expiry = outcomes.iter().filter(|(at, _)| *at < withdrawn_at);
    assert!(before_expiry.clone().all(|(_, o)| *o == Outcome::Ok));
    // After it expired, they failed with a typed error until the endpoint came back.
    let unavailable: Vec<Duration> = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Unavailable)
        .map(|(at, _)| *at)
        .collect();
    // (How many depends on the jittered backoff: a request waits up to 30 s for the next
    // attempt, which may come after the endpoint is back.)
    assert!(!unavailable.is_empty());
    assert!(
        unavailable
            .iter()
            .all(|at| (withdrawn_at..up_at).contains(at))
    );
    // Within one backoff period of the endpoint's return, everything works again.
    let recovered_by = up_at + Schedule::DEFAULT.longest_delay(true, None);
    assert!(
        outcomes
            .iter()
            .filter(|(at, _)| *at >= recovered_by)
            .all(|(_, o)| *o == Outcome::Ok)
    );
    assert_eq!(
        api.accepted(),
        outcomes.iter().filter(|(_, o)| *o == Outcome::Ok).count() as u64
    );
    assert_no_tokenless_request(&api);

    // The failed attempts during the 30 s outage stayed within the backoff schedule (plus
    // one: a failure before expiry retries at the latest when the token expires).
    let (_, most) = Schedule::DEFAULT.attempts_allowed(up_at - down_at, true, None, Duration::ZERO);
    assert!(
        outage.refused() <= most + 1,
        "{} attempts",
        outage.refused()
    );
    assert!(handle.status().running);
}

#[tokio::test(start_paused = true)]
async fn flapping_endpoint_under_500_requests_per_second() {
    let duration = Duration::from_secs(20);
    let auth = auth_server(SECOND);
    let api = auth.api();
    let handle = common::builder(&auth)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // From now on every other token request fails.
    let flaps = auth.token_requests();
    auth.set_fault_plan(move |index| {
        (index - flaps)
            .is_multiple_of(2)
            .then(|| Fault::status(StatusCode::SERVICE_UNAVAILABLE))
    });
    let service = common::client(&handle, &api);
    let start = Instant::now();

    // 500 requests per second: one every 2 ms.
    let outcomes = load(&service, start, every(Duration::from_millis(2), duration)).await;
    assert_eq!(outcomes.len(), 10_000);
    let count = |outcome| outcomes.iter().filter(|(_, o)| *o == outcome).count();
    let (ok, unavailable) = (count(Outcome::Ok), count(Outcome::Unavailable));
    println!(
        "flapping: {ok} ok, {unavailable} typed errors, {} refused, {} token requests",
        count(Outcome::Refused),
        auth.token_requests()
    );
    assert_no_tokenless_request(&api);
    assert_eq!(ok + unavailable, outcomes.len());
    assert!(ok > 0);
    assert_eq!(api.accepted(), ok as u64);

    // A refresh at ~0.8 s fails and is retried when the token expires, at 1 s: about one
    // token per lifetime, never more than a healthy refresher fetches. Each costs at most one
    // failed attempt before it.
    let (_, most) = refreshes_allowed(duration, SECOND);
    let fewest = duration.as_secs() - 1;
    let issued = auth.issued() - 1;
    assert!(
        (fewest..=most).contains(&issued),
        "{issued} tokens in {duration:?}"
    );
    let attempts = auth.token_requests() - flaps;
    assert!(
        attempts <= 2 * issued + 1,
        "{attempts} token requests for {issued} tokens"
    );
}

/// A token response that takes a while to arrive after the server issued the token (network
/// latency, a slow proxy): the token expires at the server `latency` before the client thinks.
#[tokio::test(start_paused = true)]
async fn a_slow_token_response_does_not_send_expired_tokens() {
    let latency = Duration::from_millis(400);
    let auth = auth_server(SECOND);
    let api = auth.api();
    let server = auth.service();
    let handle = ClientCredentials::builder(
        "http://127.0.0.1/oauth/token",
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
    )
    .http_client(tower::service_fn(move |request: Request<Full<Bytes>>| {
        let mut server = server.clone();
        async move {
            let response = server.call(request).await;
            tokio::time::sleep(latency).await;
            response
        }
    }))
    .build()
    .unwrap()
    .start()
    .await
    .unwrap();
    let service = BearerAuthLayer::new(handle.clone()).layer(api.service());
    let start = Instant::now();
    let outcomes = load(
        &service,
        start,
        every(Duration::from_millis(10), 10 * SECOND),
    )
    .await;
    assert_no_tokenless_request(&api);
    assert!(outcomes.iter().all(|(_, o)| *o == Outcome::Ok));
}
