//! Storms: 10,000 concurrent requests that all need the same token at once.
//!
//! - Cold start: no token yet, a token endpoint that takes 5 ms. All 10,000 requests wait for
//!   the one token request (asserted: exactly one), then go out. Compared with the same 10,000
//!   requests sent with a warm token.
//! - Revocation: 10,000 requests are in flight with a token the API has just revoked; the
//!   inner service holds every first attempt until all 10,000 have arrived, then answers each
//!   with 401. One refresh (asserted: exactly one more token request), and every request is
//!   retried once (asserted: 10,000 retries, 10,000 `200 OK`). Compared with the same 10,000
//!   held-then-answered requests when the token is accepted.
//!
//! The assertions are about counts; times are only reported. Each round builds a fresh
//! authorization server and handle, runs both cases of a pair back to back, and the ratio is
//! taken within the round; the table gives the median over rounds.

mod common;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::Full;
use tokio::{sync::watch, task::JoinSet};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_client_credentials::{BearerAuthLayer, BoxError, ClientCredentials};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockAuthServer,
};

use common::{Summary, Template, bench_mode, inner, machine, ratios};

/// Token endpoint latency.
const LATENCY: Duration = Duration::from_millis(5);

/// An authorization server in memory whose token endpoint answers after [`LATENCY`].
fn slow_auth() -> MockAuthServer {
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(3600))
        .build();
    auth.set_fault_plan(|_| Some(Fault::delay(LATENCY)));
    auth
}

fn credentials(auth: &MockAuthServer) -> ClientCredentials {
    ClientCredentials::builder(
        "http://127.0.0.1/oauth/token",
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
    )
    .http_client(auth.service())
    .build()
    .expect("valid configuration")
}

/// Sends `n` requests concurrently (one task each) and waits for all of them. Returns how many
/// came back `200 OK`.
async fn storm<S>(service: S, n: usize) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send + 'static,
{
    let template = Template::new();
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let service = service.clone();
        let request = template.request();
        tasks.spawn(async move { service.oneshot(request).await.map_err(Into::into) });
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        let response = joined.expect("task").expect("request");
        ok += usize::from(response.status() == StatusCode::OK);
    }
    ok
}

/// Cold start: the clock starts before the refresher is spawned.
async fn cold(n: usize) -> Duration {
    let auth = slow_auth();
    let start = Instant::now();
    let handle = credentials(&auth).spawn();
    let ok = storm(BearerAuthLayer::new(handle.clone()).layer(inner()), n).await;
    let elapsed = start.elapsed();
    assert_eq!(ok, n, "every request succeeds");
    assert_eq!(
        auth.token_requests(),
        1,
        "one token request for {n} requests"
    );
    elapsed
}

/// The same requests with a token already held.
async fn warm(n: usize) -> Duration {
    let auth = slow_auth();
    let handle = credentials(&auth).start().await.expect("first token");
    let start = Instant::now();
    let ok = storm(BearerAuthLayer::new(handle.clone()).layer(inner()), n).await;
    let elapsed = start.elapsed();
    assert_eq!(ok, n, "every request succeeds");
    assert_eq!(auth.token_requests(), 1);
    elapsed
}

/// An API that holds every request carrying `first` until `n` of them have arrived, then
/// answers them all: 401 when `revoked`, 200 otherwise. Requests with any other token get 200
/// at once (the retries).
struct Gate {
    first: HeaderValue,
    n: usize,
    revoked: bool,
    arrived: AtomicUsize,
    open: watch::Sender<bool>,
    unauthorized: AtomicUsize,
    retried: AtomicUsize,
}

impl Gate {
    fn new(first: HeaderValue, n: usize, revoked: bool) -> Arc<Self> {
        Arc::new(Self {
            first,
            n,
            revoked,
            arrived: AtomicUsize::new(0),
            open: watch::Sender::new(false),
            unauthorized: AtomicUsize::new(0),
            retried: AtomicUsize::new(0),
        })
    }

    fn service(
        self: &Arc<Self>,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        let gate = Arc::clone(self);
        service_fn(move |request: Request<Full<Bytes>>| {
            let gate = Arc::clone(&gate);
            async move {
                let status = if request.headers().get(AUTHORIZATION) == Some(&gate.first) {
                    let mut open = gate.open.subscribe();
                    if gate.arrived.fetch_add(1, Ordering::SeqCst) + 1 == gate.n {
                        gate.open.send_replace(true);
                    }
                    let _ = open.wait_for(|open| *open).await;
                    if gate.revoked {
                        gate.unauthorized.fetch_add(1, Ordering::SeqCst);
                        StatusCode::UNAUTHORIZED
                    } else {
                        StatusCode::OK
                    }
                } else {
                    gate.retried.fetch_add(1, Ordering::SeqCst);
                    StatusCode::OK
                };
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        })
    }
}

/// `n` requests in flight with a token the API rejects (`revoked`) or accepts.
async fn in_flight(n: usize, revoked: bool) -> Duration {
    let auth = slow_auth();
    let handle = credentials(&auth).start().await.expect("first token");
    let first = handle.current().expect("token").header_value().clone();
    let gate = Gate::new(first, n, revoked);
    let service = BearerAuthLayer::new(handle.clone()).layer(gate.service());
    let start = Instant::now();
    let ok = storm(service, n).await;
    let elapsed = start.elapsed();
    assert_eq!(ok, n, "every request ends in 200 OK");
    assert_eq!(gate.arrived.load(Ordering::SeqCst), n);
    if revoked {
        assert_eq!(
            auth.token_requests(),
            2,
            "one refresh for {n} rejected requests"
        );
        assert_eq!(gate.unauthorized.load(Ordering::SeqCst), n);
        assert_eq!(gate.retried.load(Ordering::SeqCst), n, "each retried once");
    } else {
        assert_eq!(auth.token_requests(), 1);
        assert_eq!(gate.retried.load(Ordering::SeqCst), 0);
    }
    elapsed
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let (n, rounds) = if bench_mode() { (10_000, 31) } else { (200, 1) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut times: [Vec<f64>; 4] = Default::default();
    runtime.block_on(async {
        // Warm-up: thread pools, allocator.
        warm(n).await;
        for round in 0..rounds {
            // Alternate which case of a pair goes first.
            let (c, w) = if round % 2 == 0 {
                let c = cold(n).await;
                (c, warm(n).await)
            } else {
                let w = warm(n).await;
                (cold(n).await, w)
            };
            let (r, g) = if round % 2 == 0 {
                let r = in_flight(n, true).await;
                (r, in_flight(n, false).await)
            } else {
                let g = in_flight(n, false).await;
                (in_flight(n, true).await, g)
            };
            for (series, value) in times.iter_mut().zip([c, w, r, g]) {
                series.push(ms(value));
            }
        }
    });
    let [cold, warm, revoked, accepted] = &times;
    println!();
    println!("## storm: {n} concurrent requests, token endpoint latency 5 ms, {rounds} rounds");
    println!("machine: {}", machine());
    println!();
    println!(
        "| case | token requests | median ms to drain [IQR] | ratio to its baseline (median [IQR]) |"
    );
    println!(
        "|------|----------------|--------------------------|--------------------------------------|"
    );
    println!("| warm token (baseline) | 1 | {} | 1 |", Summary::of(warm));
    println!(
        "| cold start | 1 (asserted) | {} | {} x warm |",
        Summary::of(cold),
        Summary::of(&ratios(cold, warm))
    );
    println!(
        "| held, token accepted (baseline) | 1 | {} | 1 |",
        Summary::of(accepted)
    );
    println!(
        "| held, token revoked: 401, one refresh, all retried | 2 (asserted) | {} | {} x accepted |",
        Summary::of(revoked),
        Summary::of(&ratios(revoked, accepted))
    );
}
