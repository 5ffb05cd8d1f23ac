//! Soak: tokens of one second rotating for `SOAK_SECS` seconds (default 30) under steady load,
//! over real sockets on 127.0.0.1, with the protected API checking every token it gets.
//!
//! Ignored by default; CI runs it briefly:
//!
//! ```text
//! SOAK_SECS=5 cargo test --test soak -- --ignored --nocapture
//! ```
//!
//! It prints the requests sent, the token fetches, the requests that met an expired or
//! missing token (which must be 0) and the peak resident memory. This is the one test where
//! real time passes; it asserts counts, not timings.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{task::JoinSet, time::Instant};
use tower::{ServiceBuilder, ServiceExt};
use tower_client_credentials::{BearerAuthError, BearerAuthLayer, ClientCredentials};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer, RejectReason,
};

const WORKERS: u64 = 4;
/// Each worker sends a request, waits for the answer, then pauses this long.
const PAUSE: Duration = Duration::from_millis(2);

/// The process's peak resident set size, from `/proc/self/status`, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test, several seconds of real time: SOAK_SECS=5 cargo test --test soak -- --ignored"]
async fn one_second_tokens_rotate_under_steady_load() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    let duration = Duration::from_secs(secs);

    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let api = auth.api();
    api.serve().await.unwrap();

    // The crate's default transport for the token endpoint, hyper-util's client for the API.
    let handle =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(handle.clone()))
        .service(client);
    let url = format!("{}/orders", api.url());

    let sent = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..WORKERS {
        let (service, url) = (service.clone(), url.clone());
        let (sent, ok, unavailable) = (sent.clone(), ok.clone(), unavailable.clone());
        workers.spawn(async move {
            let mut n = 0_u64;
            while Instant::now() < deadline {
                let body = format!("{{\"worker\":{worker},\"n\":{n}}}");
                let request = Request::post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                match service.clone().oneshot(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let echoed = response.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(status, StatusCode::OK, "{echoed:?}");
                        assert_eq!(echoed, body.as_bytes());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        // A request may be refused a token, never sent without one.
                        assert!(
                            matches!(error, BearerAuthError::TokenUnavailable(_)),
                            "{error:?}"
                        );
                        unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                tokio::time::sleep(PAUSE).await;
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.unwrap();
    }
    let elapsed = started.elapsed();

    let sent = sent.load(Ordering::Relaxed);
    let ok = ok.load(Ordering::Relaxed);
    let unavailable = unavailable.load(Ordering::Relaxed);
    let expired = api.rejected(RejectReason::Expired);
    let missing = api.rejected(RejectReason::Missing);
    let fetches = auth.token_requests();
    println!("soak: {secs} s, {WORKERS} workers, 1 s tokens");
    println!(
        "soak: requests sent: {sent} ({ok} ok, {unavailable} without a token: TokenUnavailable)"
    );
    println!(
        "soak: token fetches: {fetches} ({} tokens issued)",
        auth.issued()
    );
    println!(
        "soak: requests that met an expired or missing token: {} ({expired} expired, {missing} \
         missing, {} rejected in all)",
        expired + missing,
        api.rejected_total()
    );
    match peak_rss_kib() {
        Some(kib) => println!("soak: peak RSS (VmHWM): {kib} KiB"),
        None => println!("soak: peak RSS (VmHWM): unavailable"),
    }

    assert_eq!(
        expired + missing,
        0,
        "requests met an expired or missing token"
    );
    assert_eq!(api.rejected_total(), 0);
    assert_eq!(api.accepted(), ok);
    assert_eq!(ok + unavailable, sent);
    assert!(sent >= secs * 100, "only {sent} requests in {elapsed:?}");
    // One fetch per 0.78 to 0.8 s, plus the first; a slow machine only makes fewer.
    let most = (elapsed.as_secs_f64() / 0.78) as u64 + 2;
    assert!(
        (1..=most).contains(&fetches),
        "{fetches} token fetches in {elapsed:?}"
    );
    assert!(handle.status().running);
}
