//! End to end: a hyper server on `127.0.0.1:0`, hyper-util's client, 64 requests in flight at
//! all times (so 64 connections), requests per second through the layer against without it,
//! and against tower-http's `AddAuthorization` with the same token as a static header. The
//! layer runs twice: as configured by default (retry on) and with retry off.
//!
//! Client and server share this machine's cores; so do all three cases. Each round runs every
//! case for one window, in a rotating order; ratios are taken within a round and the table
//! gives their median over rounds. Besides requests per second (which falls whenever another
//! process takes a core), the table gives the process's CPU time per request, client and server
//! together, which does not.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, header::AUTHORIZATION};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpListener, task::JoinSet};
use tower::{Layer, Service, ServiceExt};
use tower_client_credentials::{BearerAuthLayer, BoxError, ClientCredentials};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};
use tower_http::auth::AddAuthorization;

use common::{Summary, Template, bench_mode, machine, process_cpu_time, ratios};

/// Requests in flight at all times.
const CONCURRENCY: usize = 64;

/// Requests that arrived with and without an `Authorization` header.
#[derive(Default)]
struct Seen {
    authorized: AtomicU64,
    anonymous: AtomicU64,
}

/// An HTTP/1 server that answers `200 ok` to everything.
async fn serve(seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let counter = if request.headers().contains_key(AUTHORIZATION) {
                        &seen.authorized
                    } else {
                        &seen.anonymous
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Requests per second, and CPU time per request of the whole process (client and server).
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    cpu_us: f64,
}

/// Keeps [`CONCURRENCY`] requests in flight through `service` for `window`, reading every
/// response body.
async fn drive<S>(service: S, template: &Template, window: Duration) -> Rate
where
    S: Service<Request<Full<Bytes>>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let cpu = process_cpu_time();
    let start = Instant::now();
    let deadline = start + window;
    let mut tasks = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let service = service.clone();
        let template = template.clone();
        tasks.spawn(async move {
            let mut done = 0_u64;
            while Instant::now() < deadline {
                let response = service
                    .clone()
                    .oneshot(template.request())
                    .await
                    .map_err(Into::into)
                    .expect("request");
                response.into_body().collect().await.expect("body");
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.expect("task");
    }
    let elapsed = start.elapsed();
    Rate {
        per_second: total as f64 / elapsed.as_secs_f64(),
        cpu_us: (process_cpu_time() - cpu).as_secs_f64() * 1e6 / total as f64,
    }
}

const CASES: [&str; 4] = [
    "without the layer (baseline)",
    "tower-http AddAuthorization, static token",
    "BearerAuthLayer (retry on, the default)",
    "BearerAuthLayer, retry off",
];

fn main() {
    // `E2E_ROUNDS=N`: more rounds, for medians tighter than the run-to-run spread.
    let rounds = std::env::var("E2E_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse::<usize>().ok())
        .map_or(25, |rounds| rounds.clamp(1, 10_000));
    let (rounds, window) = if bench_mode() {
        (rounds, Duration::from_millis(500))
    } else {
        (1, Duration::from_millis(50))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seen = Arc::new(Seen::default());
    let rates = runtime.block_on(async {
        let addr = serve(Arc::clone(&seen)).await;
        let template = Template::to(format!("http://{addr}/api/orders?limit=10"));

        let auth = MockAuthServer::builder()
            .lifetime(Duration::from_secs(3600))
            .build();
        let handle = ClientCredentials::builder(
            "http://127.0.0.1/oauth/token",
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
        )
        .http_client(auth.service())
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("first token");
        let token = handle.current().expect("token").access_token().to_owned();

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(CONCURRENCY)
            .build::<_, Full<Bytes>>(connector);
        let plain = client.clone();
        let fixed = AddAuthorization::bearer(client.clone(), &token).as_sensitive(true);
        let layer = BearerAuthLayer::new(handle.clone()).layer(client.clone());
        let retry_off = BearerAuthLayer::new(handle.clone())
            .retry_unauthorized(false)
            .layer(client);

        let run = |case: usize, window: Duration| {
            let (plain, fixed, layer, retry_off, template) = (
                plain.clone(),
                fixed.clone(),
                layer.clone(),
                retry_off.clone(),
                template.clone(),
            );
            async move {
                match case {
                    0 => drive(plain, &template, window).await,
                    1 => drive(fixed, &template, window).await,
                    2 => drive(layer, &template, window).await,
                    _ => drive(retry_off, &template, window).await,
                }
            }
        };
        // Warm-up: open the connections, fill the pool.
        for case in 0..CASES.len() {
            run(case, window / 2).await;
        }
        // `E2E_ONLY=CASE:SECONDS`: that case alone, for a profiler, then exit.
        if let Some((case, secs)) = std::env::var("E2E_ONLY").ok().and_then(|spec| {
            let (case, secs) = spec.split_once(':')?;
            let case = case.parse::<usize>().ok()?.min(CASES.len() - 1);
            Some((case, secs.parse::<u64>().ok()?))
        }) {
            let rate = run(case, Duration::from_secs(secs)).await;
            println!(
                "{}: {:.0} req/s, {:.1} CPU µs/request",
                CASES[case], rate.per_second, rate.cpu_us
            );
            std::process::exit(0);
        }
        let mut rates: Vec<Vec<Rate>> = vec![Vec::new(); CASES.len()];
        for round in 0..rounds {
            for i in 0..CASES.len() {
                let case = (round + i) % CASES.len();
                rates[case].push(run(case, window).await);
            }
        }
        rates
    });
    assert!(seen.anonymous.load(Ordering::Relaxed) > 0);
    assert!(seen.authorized.load(Ordering::Relaxed) > 0);

    let rps: Vec<Vec<f64>> = rates
        .iter()
        .map(|case| case.iter().map(|rate| rate.per_second).collect())
        .collect();
    let cpu: Vec<Vec<f64>> = rates
        .iter()
        .map(|case| case.iter().map(|rate| rate.cpu_us).collect())
        .collect();
    let layer_vs_plain = Summary::of(&ratios(&rps[2], &rps[0]));
    let fixed_vs_plain = Summary::of(&ratios(&rps[1], &rps[0]));
    let layer_vs_fixed = Summary::of(&ratios(&rps[2], &rps[1]));
    // Requests per CPU-second, relative: the inverse ratio of CPU time per request.
    let cpu_ratio = |a: usize, b: usize| Summary::of(&ratios(&cpu[b], &cpu[a]));
    println!();
    println!(
        "## e2e: {CONCURRENCY} connections over 127.0.0.1, {} s windows, {rounds} rounds",
        window.as_secs_f64()
    );
    println!("machine: {}", machine());
    println!();
    println!(
        "| case | median req/s | req/s ratio (median [IQR]) | CPU µs/request (client + server) | req per CPU-second ratio (median [IQR]) | target |"
    );
    println!(
        "|------|--------------|----------------------------|----------------------------------|------------------------------------------|--------|"
    );
    println!(
        "| {} | {:.0} | 1 | {:.1} | 1 | |",
        CASES[0],
        Summary::of(&rps[0]).median,
        Summary::of(&cpu[0]).median
    );
    println!(
        "| {} | {:.0} | {fixed_vs_plain} x without | {:.1} | {} x without | |",
        CASES[1],
        Summary::of(&rps[1]).median,
        Summary::of(&cpu[1]).median,
        cpu_ratio(1, 0)
    );
    println!(
        "| {} | {:.0} | {layer_vs_plain} x without; {layer_vs_fixed} x static | {:.1} | {} x without; {} x static | >= 0.98 x without (req/s): {} |",
        CASES[2],
        Summary::of(&rps[2]).median,
        Summary::of(&cpu[2]).median,
        cpu_ratio(2, 0),
        cpu_ratio(2, 1),
        common::verdict(layer_vs_plain.median >= 0.98)
    );
    println!(
        "| {} | {:.0} | {} x without; {} x static | {:.1} | {} x without; {} x static | |",
        CASES[3],
        Summary::of(&rps[3]).median,
        Summary::of(&ratios(&rps[3], &rps[0])),
        Summary::of(&ratios(&rps[3], &rps[1])),
        Summary::of(&cpu[3]).median,
        cpu_ratio(3, 0),
        cpu_ratio(3, 1),
    );
}
