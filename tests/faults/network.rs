//! Network faults, over real sockets on 127.0.0.1 with the real clock and the crate's default
//! hyper-util transport: connections refused, reset mid-response, accepted and never
//! answered, names that do not resolve, TLS spoken to a plain-HTTP port.
//!
//! Timeouts are short so that the rows stay fast. The assertions are about classification,
//! messages and counts; elapsed times are only bounded by a guard against hangs.

use std::{
    future::IntoFuture,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector, connect::dns::Name},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::Instant,
};
use tower::Layer;
use tower_client_credentials::{
    BearerAuthLayer, ClientCredentials, ClientCredentialsBuilder, TokenError, TokenHandle,
    TokenUnavailable,
};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer, TOKEN_PATH,
};

use crate::support::{
    FetchCounter, Recorder, Schedule, assert_error_has_no_secret, assert_no_secret, call,
    chain_text, display_chain,
};

/// The token request timeout of these rows.
const TIMEOUT: Duration = Duration::from_millis(300);
/// The retry schedule of these rows: short, so that recovery is quick on the real clock.
const SCHEDULE: Schedule = Schedule {
    base: Duration::from_millis(20),
    max: Duration::from_millis(200),
    permanent: Duration::from_secs(60),
};
/// How long a request may wait for a token.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Nothing in these rows may take this long: if it does, something hangs.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn builder(url: &str) -> ClientCredentialsBuilder {
    ClientCredentials::builder(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        .timeout(TIMEOUT)
        .backoff(SCHEDULE.base, SCHEDULE.max)
        .max_wait(MAX_WAIT)
}

async fn guarded<F: IntoFuture>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {HANG_GUARD:?}"))
}

/// What a faulty endpoint does with the connections it accepts.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Reads the request, sends the head and part of the body, then resets the connection.
    ResetMidResponse,
    /// Accepts and never answers.
    Silent,
    /// Passes the connection through to a healthy server.
    Proxy(SocketAddr),
}

/// A listener on 127.0.0.1 whose behaviour can be changed, counting the connections it gets.
struct FaultyEndpoint {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultyEndpoint {
    async fn start(behaviour: Behaviour) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), behaviour)
    }

    fn start_on(listener: TcpListener, behaviour: Behaviour) -> Self {
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let behaviour = Arc::clone(&behaviour);
            let connections = Arc::clone(&connections);
            async move {
                // Silent connections are held here until the endpoint is dropped.
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let behaviour = *behaviour.lock().unwrap();
                    match behaviour {
                        Behaviour::Silent => held.push(stream),
                        Behaviour::ResetMidResponse => {
                            tokio::spawn(reset_mid_response(stream));
                        }
                        Behaviour::Proxy(target) => {
                            tokio::spawn(proxy(stream, target));
                        }
                    }
                }
            }
        });
        Self {
            addr,
            behaviour,
            connections,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reset_mid_response(mut stream: TcpStream) {
    let mut request = vec![0; 8192];
    let _ = stream.read(&mut request).await;
    let partial = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n\
                   {\"access_token\":\"opaque-token-0123";
    let _ = stream.write_all(partial.as_bytes()).await;
    let _ = stream.flush().await;
    // Let the client read the head and the start of the body, then send a RST.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn proxy(mut client: TcpStream, target: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(target).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// What a network fault must look like.
struct Expected {
    kind: &'static str,
    /// Substrings (any of them, case-insensitive) that the error chain, as an error reporter
    /// prints it, must contain.
    cause: &'static [&'static str],
}

fn check(row: &str, error: &TokenError, expected: &Expected, tokens: &[String]) {
    assert_eq!(error.kind(), expected.kind, "[{row}] {error:?}");
    assert!(error.is_transient(), "[{row}] {error}");
    assert_eq!(error.status(), None, "[{row}]");
    let chain = display_chain(error).to_lowercase();
    assert!(
        expected.cause.iter().any(|needle| chain.contains(needle)),
        "[{row}] {chain:?} names none of {:?}",
        expected.cause
    );
    assert_error_has_no_secret(row, error, tokens);
}

/// Runs a network row: `start()` fails with the expected error; then through the layer a
/// request gets a typed error and nothing reaches the API; the count of attempts seen by
/// `attempts` (connections at the listener, lookups, or the refresher's own token requests)
/// stays within the schedule; and once `heal` has run the refresher recovers.
async fn run_row<A, H>(
    row: &str,
    url: &str,
    customize: impl Fn(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
    expected: Expected,
    attempts: A,
    heal: H,
) -> String
where
    A: Fn() -> u64,
    H: AsyncFnOnce(),
{
    let error = guarded(row, customize(builder(url)).build().unwrap().start())
        .await
        .expect_err(row);
    check(row, &error, &expected, &[]);
    let observed = format!("{}: {}", error.kind(), display_chain(&error));

    let (handle, refresher) = customize(builder(url)).build().unwrap().into_parts();
    let started = Instant::now();
    let refresher = tokio::spawn(refresher.into_future());
    let recorder = Recorder::default();
    let service = BearerAuthLayer::new(handle.clone()).layer(recorder.clone());
    let before = attempts();
    for _ in 0..3 {
        let error = guarded(row, call(&service)).await.expect_err(row);
        let unavailable = error
            .downcast_ref::<TokenUnavailable>()
            .unwrap_or_else(|| panic!("[{row}] not TokenUnavailable: {error:?}"));
        assert!(unavailable.is_transient(), "[{row}]");
        check(
            row,
            unavailable.token_error().expect("the cause"),
            &expected,
            &[],
        );
        assert_no_secret(row, &chain_text(&*error), &[]);
    }
    assert_eq!(
        recorder.requests(),
        0,
        "[{row}] a request went out without a token"
    );

    // No hot loop: attempts are spaced by the backoff, however fast they fail.
    assert_no_hot_loop(row, attempts() - before, started);

    // The refresher is alive, and recovers once the endpoint works.
    assert!(
        handle.status().running && !refresher.is_finished(),
        "[{row}]"
    );
    heal().await;
    let token = guarded(row, recover(&handle)).await;
    guarded(row, call(&service)).await.unwrap();
    assert_eq!(
        recorder.last().unwrap(),
        format!("Bearer {}", token.access_token()).as_str()
    );
    assert_eq!(recorder.without_token(), 0, "[{row}]");

    drop(service);
    drop(handle);
    guarded(row, refresher).await.unwrap();
    observed
}

/// Asserts that `made` attempts since `started` are at least one and no more than the schedule
/// allows, however fast each attempt failed.
fn assert_no_hot_loop(row: &str, made: u64, started: Instant) {
    let elapsed = started.elapsed();
    let (_, most) = SCHEDULE.attempts_allowed(elapsed, true, None, Duration::ZERO);
    assert!(
        (1..=most).contains(&made),
        "[{row}] {made} attempts in {elapsed:?}, at most {most} allowed"
    );
}

/// Waits for the refresher's next token. A request that was already waiting may still see the
/// last failure, so ask until a token comes (the hang guard bounds this).
async fn recover(handle: &TokenHandle) -> Arc<tower_client_credentials::Token> {
    loop {
        if let Ok(token) = handle.token().await {
            return token;
        }
        tokio::time::sleep(SCHEDULE.base).await;
    }
}

#[tokio::test]
async fn connection_refused() {
    let auth = MockAuthServer::start().await.unwrap();
    let addr = closed_port().await;
    let revived = Arc::new(Mutex::new(None));
    // Nothing listens to count connections at: count the refresher's token requests.
    let fetches = FetchCounter::install();
    let observed = run_row(
        "connection refused",
        &format!("http://{addr}{TOKEN_PATH}"),
        |b| b,
        Expected {
            kind: "transport",
            cause: &["connection refused"],
        },
        || fetches.fetches(),
        async || {
            // The endpoint comes up on the same port.
            let listener = TcpListener::bind(addr).await.unwrap();
            let proxy = Behaviour::Proxy(auth.local_addr().unwrap());
            *revived.lock().unwrap() = Some(FaultyEndpoint::start_on(listener, proxy));
        },
    )
    .await;
    println!("connection refused | {observed}");
}

#[tokio::test]
async fn connection_reset_mid_response() {
    let auth = MockAuthServer::start().await.unwrap();
    let endpoint = FaultyEndpoint::start(Behaviour::ResetMidResponse).await;
    let observed = run_row(
        "connection reset mid-response",
        &endpoint.url(),
        |b| b,
        Expected {
            kind: "transport",
            cause: &["connection reset", "closed before message completed"],
        },
        || endpoint.connections(),
        async || endpoint.set(Behaviour::Proxy(auth.local_addr().unwrap())),
    )
    .await;
    println!("connection reset mid-response | {observed}");
}

#[tokio::test]
async fn connection_accepted_and_never_answered() {
    let auth = MockAuthServer::start().await.unwrap();
    let endpoint = FaultyEndpoint::start(Behaviour::Silent).await;
    let observed = run_row(
        "never answers",
        &endpoint.url(),
        |b| b,
        Expected {
            kind: "timeout",
            cause: &["did not complete within 300ms"],
        },
        || endpoint.connections(),
        async || endpoint.set(Behaviour::Proxy(auth.local_addr().unwrap())),
    )
    .await;
    println!("never answers | {observed}");
}

/// `auth.invalid` through hyper-util's `HttpConnector` (the crate's default connector) with a
/// resolver that answers as the system resolver does for a `.invalid` name, without asking
/// it: this machine's resolver is not on loopback, and a real lookup would send a query off
/// the machine. When "healed", the name resolves to the mock server.
#[tokio::test]
async fn dns_name_that_does_not_resolve() {
    let auth = MockAuthServer::start().await.unwrap();
    let resolves = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let resolver = tower::service_fn({
        let resolves = Arc::clone(&resolves);
        let lookups = Arc::clone(&lookups);
        move |name: Name| {
            lookups.fetch_add(1, Ordering::SeqCst);
            let found = resolves.load(Ordering::SeqCst) && name.as_str() == "auth.invalid";
            async move {
                if found {
                    Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter())
                } else {
                    Err(io::Error::other(
                        "failed to lookup address information: Name or service not known",
                    ))
                }
            }
        }
    });
    let mut connector = HttpConnector::new_with_resolver(resolver);
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build::<_, Full<Bytes>>(connector);
    let port = auth.local_addr().unwrap().port();
    let observed = run_row(
        "DNS name that does not resolve",
        &format!("http://auth.invalid:{port}{TOKEN_PATH}"),
        |b| b.allow_insecure_http(true).http_client(client.clone()),
        Expected {
            kind: "transport",
            cause: &["dns error"],
        },
        || lookups.load(Ordering::SeqCst),
        async || resolves.store(true, Ordering::SeqCst),
    )
    .await;
    println!("DNS name that does not resolve | {observed}");
}

/// `https://` to the mock server's plain-HTTP port, with the default rustls transport. This is
/// a configuration mistake, so there is nothing to heal: the row checks the error and that the
/// refresher keeps retrying (with backoff) without taking anything down.
#[tokio::test]
async fn tls_to_a_plain_http_port() {
    let auth = MockAuthServer::start().await.unwrap();
    let url = auth.token_url().replace("http://", "https://");
    let row = "TLS to a plain-HTTP port";
    let expected = Expected {
        kind: "transport",
        cause: &["tls", "corrupt message", "invalidcontenttype"],
    };
    let error = guarded(row, builder(&url).build().unwrap().start())
        .await
        .expect_err(row);
    check(row, &error, &expected, &[]);
    println!("{row} | {}: {}", error.kind(), display_chain(&error));

    let fetches = FetchCounter::install();
    let (handle, refresher) = builder(&url).build().unwrap().into_parts();
    let started = Instant::now();
    let refresher = tokio::spawn(refresher.into_future());
    let recorder = Recorder::default();
    let service = BearerAuthLayer::new(handle.clone()).layer(recorder.clone());
    for _ in 0..3 {
        let error = guarded(row, call(&service)).await.expect_err(row);
        let unavailable = error.downcast_ref::<TokenUnavailable>().unwrap();
        check(row, unavailable.token_error().unwrap(), &expected, &[]);
    }
    assert_no_hot_loop(row, fetches.fetches(), started);
    assert_eq!(recorder.requests(), 0);
    assert_eq!(auth.issued(), 0);
    assert!(handle.status().running && !refresher.is_finished());
    drop(service);
    drop(handle);
    guarded(row, refresher).await.unwrap();
}

/// The API guidelines' rule: `Display` is the error's own message and the cause is reached
/// through `source()` only, so a reporter walking the chain (`anyhow`'s `{:#}`) names the
/// root cause exactly once.
#[tokio::test]
async fn a_transport_error_names_its_root_cause_once() {
    let addr = closed_port().await;
    let error = guarded(
        "refused",
        builder(&format!("http://{addr}{TOKEN_PATH}"))
            .build()
            .unwrap()
            .start(),
    )
    .await
    .unwrap_err();
    let display = error.to_string().to_lowercase();
    assert!(display.starts_with("token request failed"), "{display}");
    assert!(!display.contains("connection refused"), "{display}");
    let chain = display_chain(&error).to_lowercase();
    assert_eq!(chain.matches("connection refused").count(), 1, "{chain}");
    assert_eq!(
        chain.matches("client error (connect)").count(),
        1,
        "{chain}"
    );
}
