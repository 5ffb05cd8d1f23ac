//! One request through the layer, with a valid token, against what a static header costs.
//!
//! Every row sends the same request (method, URI, three headers) into the same inner
//! `service_fn`, which returns a ready response; the response future is polled once with a no-op
//! waker, so no runtime is in the measurement. Requests are built outside the timed section.
//!
//! | row | what |
//! |-----|------|
//! | 1 | the inner service alone (the floor) |
//! | 2 | `tower_http::auth::AddAuthorization::bearer`, a fixed token (the limit) |
//! | 3 | `BearerAuth`, valid token, retry off |
//! | 4 | `BearerAuth`, valid token, retry on, empty body |
//! | 5 | `BearerAuth`, valid token, retry on, 1 KiB `Full<Bytes>` body |
//! | 6 | naive: `Arc<RwLock<String>>` read and `format!("Bearer {}")` per request |
//! | 7 | naive, async: the same with `tokio::sync::RwLock`, `.await` in a boxed future |
//! | 8 | `BearerAuth` with a DPoP-bound token, ES256 proof per request, retry off |
//! | 9 | the same with an EdDSA key |
//! | 10 | the inner service plus one ES256 signature of a proof-sized message (the DPoP floor) |
//! | 11 | the same with Ed25519 |
//! | 12 | tower's `Retry` around row 2, its policy cloning each request for a replay after a 401 |
//!
//! Row 12 is the ecosystem's own way of making a request replayable: `tower::retry::Retry`
//! with a policy whose `clone_request` clones the request (`http::Request: Clone`). Against
//! row 4 it shows what keeping a copy of the request costs anywhere, not just in this crate.
//!
//! Rows 8 and 9 against 10 and 11 show what a DPoP request costs beyond its one signature:
//! the claims, base64url, the nonce lookup and the header.
//!
//! criterion measures each row on its own. The ratios are measured separately, in rounds: each
//! round times a batch of every row back to back (in a rotating order) and divides, so a ratio
//! only ever compares two measurements taken milliseconds apart; the table gives the median
//! ratio over all rounds and its interquartile range.
//!
//! `HOT_PATH_REPEAT=ROW:N` runs row `ROW` `N` times (request built in the loop) and exits,
//! without criterion, for `valgrind --tool=callgrind` (instructions per request) and
//! `valgrind --tool=dhat` (allocations per request); see BENCHMARKS.md.

mod common;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http::Request;
use http_body_util::Full;
use std::hint::black_box;
use tower::{Layer, Service};
use tower_client_credentials::{
    BearerAuthLayer, ClientCredentials, DpopAlgorithm, DpopKey, TokenHandle,
};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};
use tower_http::auth::AddAuthorization;

use common::{
    NaiveAsyncBearer, NaiveBearer, Summary, Template, bench_mode, call_now, inner, machine, ratios,
    timed_batch, verdict,
};

const ROWS: [&str; 12] = [
    "1_inner_only",
    "2_tower_http_static_header",
    "3_bearer_auth_retry_off",
    "4_bearer_auth_retry_on_empty_body",
    "5_bearer_auth_retry_on_1kib_body",
    "6_naive_rwlock_format",
    "7_naive_async_rwlock_boxed",
    "8_dpop_es256_retry_off",
    "9_dpop_eddsa_retry_off",
    "10_inner_plus_es256_signature",
    "11_inner_plus_ed25519_signature",
    "12_tower_retry_cloning_around_static_header",
];

/// The length of the message a proof signs (header with its JWK, claims with `ath`), about.
const PROOF_MESSAGE_LEN: usize = 420;

/// A token handle holding a valid token (one hour), fetched from the embedded authorization
/// server in memory. The runtime is kept but never driven again, so the refresher stays asleep.
struct Fixture {
    _runtime: tokio::runtime::Runtime,
    handle: TokenHandle,
    access_token: String,
    dpop_es256: TokenHandle,
    dpop_eddsa: TokenHandle,
}

impl Fixture {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let auth = MockAuthServer::builder()
            .lifetime(Duration::from_secs(3600))
            .build();
        let handle = runtime
            .block_on(
                ClientCredentials::builder(
                    "http://127.0.0.1/oauth/token",
                    DEFAULT_CLIENT_ID,
                    DEFAULT_CLIENT_SECRET,
                )
                .http_client(auth.service())
                .build()
                .expect("valid configuration")
                .start(),
            )
            .expect("first token");
        let access_token = handle.current().expect("a token").access_token().to_owned();
        let dpop = |algorithm| {
            let auth = MockAuthServer::builder()
                .lifetime(Duration::from_secs(3600))
                .token_type("DPoP")
                .build();
            runtime
                .block_on(
                    ClientCredentials::builder(
                        "http://127.0.0.1/oauth/token",
                        DEFAULT_CLIENT_ID,
                        DEFAULT_CLIENT_SECRET,
                    )
                    .http_client(auth.service())
                    .dpop(DpopKey::generate(algorithm).expect("a key"))
                    .build()
                    .expect("valid configuration")
                    .start(),
                )
                .expect("first DPoP token")
        };
        let dpop_es256 = dpop(DpopAlgorithm::ES256);
        let dpop_eddsa = dpop(DpopAlgorithm::EdDSA);
        Self {
            _runtime: runtime,
            handle,
            access_token,
            dpop_es256,
            dpop_eddsa,
        }
    }

    fn layer(&self) -> BearerAuthLayer {
        BearerAuthLayer::new(self.handle.clone())
    }

    fn naive_token(&self) -> Arc<RwLock<String>> {
        Arc::new(RwLock::new(self.access_token.clone()))
    }

    fn naive_async_token(&self) -> Arc<tokio::sync::RwLock<String>> {
        Arc::new(tokio::sync::RwLock::new(self.access_token.clone()))
    }
}

/// Calls `$body` with `$svc` bound to row `$row`'s service and `$template` to its request.
macro_rules! with_row {
    ($fixture:expr, $row:expr, |$svc:ident, $template:ident| $body:expr) => {{
        let fixture: &Fixture = $fixture;
        match $row {
            1 => {
                let mut $svc = inner();
                let $template = Template::new();
                $body
            }
            2 => {
                let mut $svc =
                    AddAuthorization::bearer(inner(), &fixture.access_token).as_sensitive(true);
                let $template = Template::new();
                $body
            }
            3 => {
                let mut $svc = fixture.layer().retry_unauthorized(false).layer(inner());
                let $template = Template::new();
                $body
            }
            4 => {
                let mut $svc = fixture.layer().layer(inner());
                let $template = Template::new();
                $body
            }
            5 => {
                let mut $svc = fixture.layer().layer(inner());
                let $template = Template::with_body(1024);
                $body
            }
            6 => {
                let mut $svc = NaiveBearer::new(inner(), fixture.naive_token());
                let $template = Template::new();
                $body
            }
            7 => {
                let mut $svc = NaiveAsyncBearer::new(inner(), fixture.naive_async_token());
                let $template = Template::new();
                $body
            }
            8 => {
                let mut $svc = BearerAuthLayer::new(fixture.dpop_es256.clone())
                    .retry_unauthorized(false)
                    .layer(inner());
                let $template = Template::new();
                $body
            }
            9 => {
                let mut $svc = BearerAuthLayer::new(fixture.dpop_eddsa.clone())
                    .retry_unauthorized(false)
                    .layer(inner());
                let $template = Template::new();
                $body
            }
            10 => {
                // The signer DPoP uses for ES256: aws-lc-rs's.
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let key = aws_lc_rs::signature::EcdsaKeyPair::generate(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                )
                .expect("a key");
                let mut $svc = SignThen::new(inner(), move |message: &[u8]| {
                    black_box(key.sign(&rng, message).expect("signature"));
                });
                let $template = Template::new();
                $body
            }
            11 => {
                let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32])
                    .expect("a key");
                let mut $svc = SignThen::new(inner(), move |message: &[u8]| {
                    black_box(key.sign(message));
                });
                let $template = Template::new();
                $body
            }
            12 => {
                let static_header =
                    AddAuthorization::bearer(inner(), &fixture.access_token).as_sensitive(true);
                let mut $svc = tower::retry::Retry::new(ReplayOn401, static_header);
                let $template = Template::new();
                $body
            }
            other => panic!("no row {other}"),
        }
    }};
}

/// A `tower::retry` policy that keeps a clone of every request, to send it again after a 401.
#[derive(Clone)]
struct ReplayOn401;

impl<B: Clone, E> tower::retry::Policy<Request<B>, common::Resp, E> for ReplayOn401 {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<B>,
        result: &mut Result<common::Resp, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) if response.status() == http::StatusCode::UNAUTHORIZED => {
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

/// The inner service after one signature of a proof-sized message: what a DPoP request cannot
/// avoid.
#[derive(Clone)]
struct SignThen<S, F> {
    inner: S,
    sign: F,
    message: Vec<u8>,
}

impl<S, F> SignThen<S, F> {
    fn new(inner: S, sign: F) -> Self {
        Self {
            inner,
            sign,
            message: vec![b'e'; PROOF_MESSAGE_LEN],
        }
    }
}

impl<S, F, B> Service<Request<B>> for SignThen<S, F>
where
    S: Service<Request<B>>,
    F: FnMut(&[u8]),
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        (self.sign)(black_box(&self.message));
        self.inner.call(request)
    }
}

/// The size of `S`'s response future: what `call` returns and the caller moves and pins.
fn future_size<S: Service<Request<Full<Bytes>>>>(_: &mut S) -> usize {
    std::mem::size_of::<S::Future>()
}

fn criterion_rows(c: &mut Criterion, fixture: &Fixture) {
    let mut group = c.benchmark_group("hot_path");
    for (index, name) in ROWS.iter().enumerate() {
        with_row!(fixture, index + 1, |service, template| {
            group.bench_function(*name, |b| {
                b.iter_batched(
                    || template.request(),
                    |request| call_now(&mut service, request),
                    BatchSize::SmallInput,
                )
            });
        });
    }
    group.finish();
}

/// One batch of `n` requests through row `row`, in nanoseconds per request.
struct Runner {
    run: Box<dyn FnMut(usize) -> f64>,
}

fn runner(fixture: &Fixture, row: usize) -> Runner {
    with_row!(fixture, row, |service, template| {
        let mut requests: Vec<Request<Full<Bytes>>> = Vec::new();
        Runner {
            run: Box::new(move |n| {
                requests.extend((0..n).map(|_| template.request()));
                timed_batch(&mut service, &mut requests).as_nanos() as f64 / n as f64
            }),
        }
    })
}

/// The paired measurement: `rounds` rounds of a batch of `batch` requests per row.
fn paired_ratios(fixture: &Fixture, rounds: usize, batch: usize) {
    let mut runners: Vec<Runner> = (1..=ROWS.len()).map(|row| runner(fixture, row)).collect();
    // Warm up every row (first clones of shared bytes, arc-swap's thread-local node, caches).
    // The signing rows cost ~100 times a bearer row: smaller batches of them take about as long.
    let batch_of = |row: usize| if row >= 8 { (batch / 64).max(1) } else { batch };
    for (i, runner) in runners.iter_mut().enumerate() {
        (runner.run)(batch_of(i + 1));
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); ROWS.len()];
    for round in 0..rounds {
        for i in 0..ROWS.len() {
            let row = (round + i) % ROWS.len();
            ns[row].push((runners[row].run)(batch_of(row + 1)));
        }
    }

    let sizes: Vec<usize> = (1..=ROWS.len())
        .map(|row| with_row!(fixture, row, |service, _template| future_size(&mut service)))
        .collect();
    let row = |n: usize| &ns[n - 1];
    let ratio = |a: usize, b: usize| Summary::of(&ratios(row(a), row(b)));
    let r3_2 = ratio(3, 2);
    let r6_3 = ratio(6, 3);
    println!();
    println!("## hot_path: paired ratios ({rounds} rounds x {batch} requests per row)");
    println!("machine: {}", machine());
    println!();
    println!("| row | median ns/request [IQR] | ratio (median [IQR]) | target | response future |");
    println!("|-----|-------------------------|----------------------|--------|-----------------|");
    for (i, name) in ROWS.iter().enumerate() {
        let n = i + 1;
        let ns = Summary::of(row(n));
        let (ratio, target) = match n {
            1 => ("floor".to_owned(), String::new()),
            2 => (format!("{} x row 1", ratio(2, 1)), String::new()),
            3 => (
                format!("{r3_2} x row 2"),
                format!("<= 1.10 x row 2: {}", verdict(r3_2.median <= 1.10)),
            ),
            4 => (
                format!("{} x row 3; {} x row 2", ratio(4, 3), ratio(4, 2)),
                format!(
                    "report: +{:.1} ns over row 3",
                    Summary::of(row(4)).median - Summary::of(row(3)).median
                ),
            ),
            5 => (
                format!("{} x row 3; {} x row 4", ratio(5, 3), ratio(5, 4)),
                format!(
                    "report: +{:.1} ns over row 3",
                    Summary::of(row(5)).median - Summary::of(row(3)).median
                ),
            ),
            6 => (
                format!("{r6_3} x row 3"),
                format!(">= 2 x row 3: {}", verdict(r6_3.median >= 2.0)),
            ),
            7 => (
                format!("{} x row 3", ratio(7, 3)),
                "(not in the issue: the async variant)".to_owned(),
            ),
            8 => (
                format!("{} x row 10; {} x row 3", ratio(8, 10), ratio(8, 3)),
                format!(
                    "report: +{:.0} ns over its signature (row 10)",
                    Summary::of(row(8)).median - Summary::of(row(10)).median
                ),
            ),
            9 => (
                format!("{} x row 11; {} x row 3", ratio(9, 11), ratio(9, 3)),
                format!(
                    "report: +{:.0} ns over its signature (row 11)",
                    Summary::of(row(9)).median - Summary::of(row(11)).median
                ),
            ),
            12 => (
                format!("{} x row 2; {} x row 4", ratio(12, 2), ratio(12, 4)),
                "report: a replayable request the ecosystem's way".to_owned(),
            ),
            _ => (
                format!("{} x row 1", ratio(n, 1)),
                "floor of a DPoP row".to_owned(),
            ),
        };
        println!(
            "| {name} | {:.1} [{:.1}–{:.1}] | {ratio} | {target} | {} bytes |",
            ns.median, ns.q1, ns.q3, sizes[i]
        );
    }
}

/// `HOT_PATH_REPEAT=ROW:N`: row `ROW`, `N` times, request built in the loop. For valgrind.
fn repeat(fixture: &Fixture, spec: &str) {
    let (row, n) = spec
        .split_once(':')
        .and_then(|(row, n)| Some((row.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .expect("HOT_PATH_REPEAT=ROW:N, e.g. 3:100000");
    with_row!(fixture, row, |service, template| {
        for _ in 0..n {
            black_box(call_now(&mut service, template.request()));
        }
    });
}

fn main() {
    let fixture = Fixture::new();
    if let Ok(spec) = std::env::var("HOT_PATH_REPEAT") {
        repeat(&fixture, &spec);
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_rows(&mut criterion, &fixture);
    criterion.final_summary();
    if bench_mode() {
        paired_ratios(&fixture, 1001, 2048);
    } else {
        // Smoke test: every row runs and the table prints.
        paired_ratios(&fixture, 1, 16);
    }
}
