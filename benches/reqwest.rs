//! The reqwest middleware's per-request cost against a middleware that sets a fixed header.
//!
//! Every row sends the same `POST` with a small bytes body through a
//! `reqwest_middleware::ClientWithMiddleware` whose last middleware answers `200 OK` at once
//! (no socket, no connection pool): what is measured is the middleware stack. The response
//! future is polled once with a no-op waker, so no runtime is in the measurement. Requests are
//! built outside the timed section.
//!
//! | row | what |
//! |-----|------|
//! | 1 | the answering middleware alone (the floor) |
//! | 2 | a middleware that inserts a prebuilt `Authorization` header (the limit) |
//! | 3 | `BearerAuthMiddleware`, valid token, retry off |
//! | 4 | `BearerAuthMiddleware`, valid token, retry on (the default: `try_clone` per request) |
//!
//! The ratios come from rounds, as in `benches/hot_path.rs`: each round times a batch of every
//! row back to back in a rotating order, and the table gives the median ratio over the rounds
//! with its interquartile range.

#![allow(missing_docs)]

mod common;

use std::{
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use criterion::{BatchSize, Criterion};
use http::{Extensions, HeaderValue, Method, header::AUTHORIZATION};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tower_client_credentials::{BearerAuthMiddleware, ClientCredentials, TokenHandle};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};

use common::{Summary, bench_mode, machine, ratios};

const ROWS: [&str; 4] = [
    "1_answer_only",
    "2_fixed_header",
    "3_bearer_auth_middleware_retry_off",
    "4_bearer_auth_middleware_retry_on",
];

/// Answers every request with `200 OK` without sending it.
struct Answer;

#[async_trait]
impl Middleware for Answer {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new("ok")))
    }
}

/// What a hand-written reqwest middleware with a static token does.
struct FixedHeader(HeaderValue);

#[async_trait]
impl Middleware for FixedHeader {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        request.headers_mut().insert(AUTHORIZATION, self.0.clone());
        next.run(request, extensions).await
    }
}

fn stack(middleware: Option<impl Middleware>) -> ClientWithMiddleware {
    let builder = ClientBuilder::new(reqwest::Client::new());
    let builder = match middleware {
        Some(middleware) => builder.with(middleware),
        None => builder,
    };
    builder.with(Answer).build()
}

/// A token handle with a valid one-hour token from the embedded server in memory. The runtime
/// is kept but not driven again, so the refresher stays asleep.
fn handle() -> (tokio::runtime::Runtime, TokenHandle) {
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
    (runtime, handle)
}

fn clients(handle: &TokenHandle) -> [ClientWithMiddleware; 4] {
    let token = handle.current().expect("a token");
    [
        stack(None::<Answer>),
        stack(Some(FixedHeader(token.header_value().clone()))),
        stack(Some(
            BearerAuthMiddleware::new(handle.clone()).retry_unauthorized(false),
        )),
        stack(Some(BearerAuthMiddleware::new(handle.clone()))),
    ]
}

fn request() -> reqwest::Request {
    let mut request = reqwest::Request::new(
        Method::POST,
        "http://127.0.0.1:8080/api/orders".parse().expect("a URL"),
    );
    *request.body_mut() = Some(reqwest::Body::from("payload"));
    request
}

/// Sends `request` and polls the response future once: every middleware here is ready at once.
fn send_now(client: &ClientWithMiddleware, request: reqwest::Request) -> reqwest::Response {
    let mut future = pin!(client.execute(request));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(response) => response.expect("an answer"),
        Poll::Pending => panic!("the stack did not answer at once"),
    }
}

fn timed_batch(client: &ClientWithMiddleware, n: usize) -> Duration {
    let requests: Vec<_> = (0..n).map(|_| request()).collect();
    let started = Instant::now();
    for request in requests {
        black_box(send_now(client, request));
    }
    started.elapsed()
}

fn paired_ratios(clients: &[ClientWithMiddleware; 4], rounds: usize, batch: usize) {
    let mut ns = [const { Vec::new() }; 4];
    for round in 0..rounds {
        for k in 0..4 {
            let row = (round + k) % 4;
            let elapsed = timed_batch(&clients[row], batch);
            ns[row].push(elapsed.as_nanos() as f64 / batch as f64);
        }
    }
    println!(
        "\nreqwest middleware, {rounds} rounds of {batch} requests per row ({})",
        machine()
    );
    for (row, name) in ROWS.iter().enumerate() {
        println!("{name}: {} ns/request", Summary::of(&ns[row]));
    }
    println!(
        "row 3 / row 2: {}; row 4 / row 2: {}; row 2 / row 1: {}",
        Summary::of(&ratios(&ns[2], &ns[1])),
        Summary::of(&ratios(&ns[3], &ns[1])),
        Summary::of(&ratios(&ns[1], &ns[0])),
    );
}

fn main() {
    let (_runtime, handle) = handle();
    let clients = clients(&handle);
    // Every row answers at once.
    for (row, client) in clients.iter().enumerate() {
        let response = send_now(client, request());
        assert_eq!(response.status(), http::StatusCode::OK, "row {}", row + 1);
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for (name, client) in ROWS.iter().zip(&clients) {
        criterion.bench_function(&format!("reqwest/{name}"), |b| {
            b.iter_batched(
                request,
                |request| black_box(send_now(client, request)),
                BatchSize::SmallInput,
            );
        });
    }
    criterion.final_summary();
    if bench_mode() {
        paired_ratios(&clients, 501, 2048);
    } else {
        // Smoke test: every row runs and the table prints.
        paired_ratios(&clients, 1, 16);
    }
}
