//! The shared token cache against a real Redis (`redis-server`), with the embedded
//! authorization server over 127.0.0.1 sockets. Each "replica" is its own `ClientCredentials`
//! handle with its own store, refresher and Redis connection, as separate processes would be.
//!
//! The tests use the Redis at `REDIS_URL` (each with its own key prefix) or start their own
//! `redis-server` on a free loopback port; the ones that stop and restart Redis always start
//! their own. Those that need Redis are `ignore`d, with that reason, so that plain `cargo test`
//! does not count them as passed on a machine without it:
//! `cargo test --all-features --test shared_cache -- --ignored` runs them, and each fails,
//! saying what is missing, if no Redis can be had (`.ci/run` installs `redis-server`). The
//! tests of the in-memory store run always, on tokio's paused clock. Redis is another process,
//! so the Redis tests run in real time; they assert counts, never durations.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use std::future::IntoFuture;

use http::StatusCode;
use std::future::Future;
use tokio::{task::JoinSet, time::Instant};
use tower_client_credentials::{
    BearerAuth, ClientCredentials, ClientCredentialsBuilder, RedisCache, TokenHandle,
    shared_cache::{Entry, Listener, MemoryStore, SharedCache, StoreError, TokenStore},
};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockApi, MockApiService, MockAuthServer,
};

const LIFETIME: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Redis for the tests

/// Writes past libtest's capture, so the line shows for a passing test too.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Fails a test that needs Redis on a machine where it cannot be had. Such tests are
/// `ignore`d, so the run that reaches this asked for them.
fn unavailable(test: &str, reason: &str) -> ! {
    panic!("{test}: {reason}")
}

/// A `redis-server` process on a loopback port, without persistence. Killed on drop.
struct RedisProcess {
    child: Option<Child>,
    port: u16,
}

impl RedisProcess {
    /// Starts `redis-server` on a free port; `None` when it is not installed.
    fn start() -> Option<Self> {
        let port = free_port();
        let mut redis = Self { child: None, port };
        redis.restart().ok()?;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on the same port (empty: no persistence).
    fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(std::io::Error::other("redis-server did not answer PING"))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0_u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// The Redis a test uses: `REDIS_URL`, or a server of its own.
struct Redis {
    url: String,
    _own: Option<RedisProcess>,
}

impl Redis {
    /// `REDIS_URL` if set, else a new `redis-server`.
    fn get(test: &str) -> Self {
        keep_callsites_live();
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.is_empty()
        {
            return Self { url, _own: None };
        }
        let process = Self::own(test);
        Self {
            url: process.url(),
            _own: Some(process),
        }
    }

    /// A `redis-server` of the test's own, which it may stop and restart.
    fn own(test: &str) -> RedisProcess {
        RedisProcess::start().unwrap_or_else(|| {
            unavailable(
                test,
                "cannot start `redis-server` (install it: apt-get install -y redis-server)",
            )
        })
    }
}

/// Installs, once, a global subscriber that records nothing but keeps every `tracing` callsite
/// "sometimes" interesting. Without it, a callsite first reached by a test on a thread with no
/// subscriber can be cached as "never" while `logs_hold_no_token_and_no_secret` installs its
/// thread's capture (a race in the interest cache), and that test misses the event.
fn keep_callsites_live() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let silent =
            tracing_subscriber::registry().with(tracing_subscriber::filter::filter_fn(|_| false));
        // Another test binary's global subscriber cannot be here: each binary is a process.
        tracing::subscriber::set_global_default(silent).expect("the first global subscriber");
    });
}

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    format!("tcc-test:{test}:{:016x}:", fastrand::u64(..))
}

/// A plain connection for looking at (and spoiling) what the replicas stored.
async fn inspect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The token keys under `prefix` (not the leases).
async fn token_keys(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(connection)
        .await
        .unwrap();
    keys.into_iter()
        .filter(|k| !k.ends_with(":lease"))
        .collect()
}

async fn get_value(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Replicas

async fn auth_server() -> MockAuthServer {
    MockAuthServer::builder()
        .lifetime(LIFETIME)
        .start()
        .await
        .unwrap()
}

fn builder(auth: &MockAuthServer) -> ClientCredentialsBuilder {
    ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        .scopes(["orders:read"])
}

/// The cache options of the tests: generous Redis timeouts for a loaded machine.
fn cache(url: &str, prefix: &str) -> RedisCache {
    RedisCache::new(url)
        .unwrap()
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .lease_timeout(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(20))
}

fn replica(auth: &MockAuthServer, cache: RedisCache) -> TokenHandle {
    builder(auth).shared_cache(cache).build().unwrap().spawn()
}

fn access_token(handle: &TokenHandle) -> Option<String> {
    handle.current().map(|t| t.access_token().to_owned())
}

/// The token every one of `handles` holds; fails unless they all hold the same one.
fn shared_token(handles: &[TokenHandle]) -> String {
    let token = access_token(&handles[0]).expect("a token");
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(access_token(handle).as_ref(), Some(&token), "replica {i}");
    }
    token
}

/// Waits (up to 10 s) until `condition` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Requests through every replica, one every 50 ms each, until stopped. Counts successes and
/// failures (errors and non-200 answers).
struct Traffic {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Traffic {
    fn start(services: Vec<BearerAuth<MockApiService>>) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for service in services {
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tasks.spawn(async move {
                loop {
                    match common::send(&service, common::request("x")).await {
                        Ok((StatusCode::OK, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok((status, _)) => {
                            eprintln!("request answered {status}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(error) => {
                            eprintln!("request failed: {error}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        Self { ok, failed, tasks }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    async fn stop(mut self) -> (u64, u64) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        (self.ok(), self.failed())
    }
}

fn services(handles: &[TokenHandle], api: &MockApi) -> Vec<BearerAuth<MockApiService>> {
    handles.iter().map(|h| common::client(h, api)).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// 20 replicas, 2-second tokens, 20 s of requests: with the shared cache about one token
/// request per lifetime; without it (a second fleet, same run) about twenty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn twenty_replicas_make_about_one_token_request_per_lifetime() {
    let redis = Redis::get("twenty_replicas_make_about_one_token_request_per_lifetime");
    const REPLICAS: usize = 20;
    let run = Duration::from_secs(20);
    let lifetimes = run.as_secs_f64() / LIFETIME.as_secs_f64();

    let shared_auth = auth_server().await;
    let alone_auth = auth_server().await;
    let prefix = prefix("fleet");
    let shared: Vec<_> = (0..REPLICAS)
        .map(|_| replica(&shared_auth, cache(&redis.url, &prefix)))
        .collect();
    let alone: Vec<_> = (0..REPLICAS)
        .map(|_| builder(&alone_auth).build().unwrap().spawn())
        .collect();
    let shared_api = shared_auth.api();
    let alone_api = alone_auth.api();
    let shared_traffic = Traffic::start(services(&shared, &shared_api));
    let alone_traffic = Traffic::start(services(&alone, &alone_api));
    tokio::time::sleep(run).await;
    let (shared_ok, shared_failed) = shared_traffic.stop().await;
    let (alone_ok, alone_failed) = alone_traffic.stop().await;

    let with_cache = shared_auth.token_requests();
    let without = alone_auth.token_requests();
    announce(&format!(
        "shared cache, {REPLICAS} replicas, {}-second tokens, {} s: {with_cache} token requests \
         with the cache ({:.2} per lifetime), {without} without ({:.2} per lifetime); \
         {shared_ok} and {alone_ok} requests served",
        LIFETIME.as_secs(),
        run.as_secs(),
        with_cache as f64 / lifetimes,
        without as f64 / lifetimes,
    ));
    assert_eq!((shared_failed, alone_failed), (0, 0));
    assert_eq!(shared_api.rejected_total(), 0);
    assert_eq!(alone_api.rejected_total(), 0);
    assert!(
        shared_ok > 1000 && alone_ok > 1000,
        "{shared_ok} {alone_ok}"
    );
    // A refresh at 80 % of the lifetime makes 1.25 per lifetime; allow for a few extra.
    assert!(
        (with_cache as f64) <= 2.0 * lifetimes + 1.0,
        "{with_cache} token requests in {lifetimes} lifetimes"
    );
    // Each replica on its own refreshes at least once per lifetime.
    assert!(
        (without as f64) >= REPLICAS as f64 * lifetimes,
        "{without} token requests without the cache"
    );
}

/// 20 replicas starting at once make exactly one token request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn cold_start_of_twenty_replicas_makes_one_token_request() {
    let redis = Redis::get("cold_start_of_twenty_replicas_makes_one_token_request");
    let auth = auth_server().await;
    // A slow token endpoint, so that the others really wait for the lease holder.
    auth.set_fault_plan(|_| Some(Fault::delay(Duration::from_millis(200))));
    let prefix = prefix("cold");
    let configs: Vec<_> = (0..20)
        .map(|_| {
            builder(&auth)
                .shared_cache(cache(&redis.url, &prefix))
                .build()
                .unwrap()
        })
        .collect();
    let mut starting = JoinSet::new();
    for config in configs {
        starting.spawn(config.start());
    }
    let mut handles = Vec::new();
    while let Some(started) = starting.join_next().await {
        handles.push(started.unwrap().expect("every replica gets a token"));
    }
    assert_eq!(auth.token_requests(), 1);
    shared_token(&handles);
    // The token is used: the API accepts it from every replica.
    let api = auth.api();
    for service in services(&handles, &api) {
        let (status, _) = common::send(&service, common::request("x")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
}

/// The lease holder dies while its token request hangs: after the lease timeout another
/// replica takes the lease and fetches for all; no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_crashed_lease_holder_is_taken_over_after_the_lease_timeout() {
    let redis = Redis::get("a_crashed_lease_holder_is_taken_over_after_the_lease_timeout");
    let auth = auth_server().await;
    auth.fail_next(1, Fault::hang());
    let prefix = prefix("crash");
    let cache = || cache(&redis.url, &prefix).lease_timeout(Duration::from_secs(1));

    let (doomed, refresher) = builder(&auth)
        .shared_cache(cache())
        .build()
        .unwrap()
        .into_parts();
    let doomed_task = tokio::spawn(refresher.into_future());
    eventually("the lease holder's token request", || {
        auth.token_requests() == 1
    })
    .await;

    // The others find the lease taken and wait; their requests wait for a token.
    let others: Vec<_> = (0..5).map(|_| replica(&auth, cache())).collect();
    let api = auth.api();
    let mut requests = JoinSet::new();
    for service in services(&others, &api) {
        requests.spawn(async move { common::send(&service, common::request("x")).await });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        auth.token_requests(),
        1,
        "nobody else fetched while the lease was held"
    );
    doomed_task.abort();
    assert!(doomed_task.await.unwrap_err().is_cancelled());
    drop(doomed);

    while let Some(result) = requests.join_next().await {
        let (status, _) = result.unwrap().expect("no request fails");
        assert_eq!(status, StatusCode::OK);
    }
    // The hung request, and one more by whichever replica took over.
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(auth.issued(), 1);
    shared_token(&others);
}

/// A token endpoint five times slower than the lease timeout: the holder renews its lease
/// while its token request runs, so the other replica waits for that token instead of taking
/// the expired lease (or giving up) and fetching a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_token_request_slower_than_the_lease_timeout_is_made_once() {
    let redis = Redis::get("a_token_request_slower_than_the_lease_timeout_is_made_once");
    // Tokens that outlive the slow request (their lifetime counts from when it was sent).
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let lease_timeout = Duration::from_millis(600);
    auth.set_fault_plan(move |_| Some(Fault::delay(5 * lease_timeout)));
    let prefix = prefix("slow");
    let replica = || {
        builder(&auth)
            .shared_cache(cache(&redis.url, &prefix).lease_timeout(lease_timeout))
            .build()
            .unwrap()
    };

    let holder = tokio::spawn(replica().start());
    eventually("the lease holder's token request", || {
        auth.token_requests() == 1
    })
    .await;
    let waiter = tokio::spawn(replica().start());
    let handles = [
        holder.await.unwrap().expect("the holder gets its token"),
        waiter.await.unwrap().expect("the waiter adopts it"),
    ];
    assert_eq!(auth.token_requests(), 1, "only the lease holder fetched");
    shared_token(&handles);
}

/// Redis stops while requests flow, then comes back on the same port: no request fails, the
/// replicas fetch on their own while it is away and share again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn redis_going_away_and_coming_back_fails_no_request() {
    const TEST: &str = "redis_going_away_and_coming_back_fails_no_request";
    let mut redis = Redis::own(TEST);
    const REPLICAS: u64 = 10;
    let auth = auth_server().await;
    let prefix = prefix("outage");
    let handles: Vec<_> = (0..REPLICAS)
        .map(|_| {
            replica(
                &auth,
                cache(&redis.url(), &prefix)
                    .timeout(Duration::from_millis(500))
                    .outage_backoff(Duration::from_millis(500)),
            )
        })
        .collect();
    let api = auth.api();
    let traffic = Traffic::start(services(&handles, &api));

    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = auth.token_requests();

    redis.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = auth.token_requests() - before;

    redis.restart().unwrap();
    // One lifetime for the replicas to meet the shared token again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = auth.token_requests();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = auth.token_requests() - resumed;
    let (ok, failed) = traffic.stop().await;

    announce(&format!(
        "redis outage, {REPLICAS} replicas: {before} token requests in the first 3 s, {during} \
         in 5 s without Redis, {after} in 6 s after it came back; {ok} requests served"
    ));
    assert_eq!(failed, 0);
    assert_eq!(api.rejected_total(), 0);
    assert!(ok > 500, "{ok}");
    // Without Redis each replica refreshes its own token (at least twice in 5 s).
    assert!(
        during >= 2 * REPLICAS,
        "{during} token requests during the outage"
    );
    // After it, about one per lifetime again (3 lifetimes; each replica alone would make 30).
    assert!(after <= 7, "{after} token requests after Redis came back");
}

/// An API refuses the shared token: one token request brings a new token to every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_revoked_shared_token_is_replaced_once_for_all() {
    let redis = Redis::get("a_revoked_shared_token_is_replaced_once_for_all");
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let prefix = prefix("revoke");
    let handles: Vec<_> = (0..10)
        .map(|_| replica(&auth, cache(&redis.url, &prefix)))
        .collect();
    let mut first = None;
    for handle in &handles {
        let token = handle.token().await.unwrap().access_token().to_owned();
        assert_eq!(first.get_or_insert_with(|| token.clone()), &token);
    }
    assert_eq!(auth.token_requests(), 1);

    assert!(auth.revoke(first.as_ref().unwrap()));
    let api = auth.api();
    let mut requests = JoinSet::new();
    for service in services(&handles, &api) {
        requests.spawn(async move { common::send(&service, common::request("x")).await });
    }
    while let Some(result) = requests.join_next().await {
        let (status, _) = result.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK, "retried with the new token");
    }
    assert_eq!(auth.token_requests(), 2, "one new token for all replicas");
    let new = shared_token(&handles);
    assert_ne!(Some(&new), first.as_ref());
}

/// A replica that learns late that a token was refused does not delete the newer token
/// another replica already put in its place; it adopts that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_stale_invalidation_does_not_delete_a_newer_token() {
    let redis = Redis::get("a_stale_invalidation_does_not_delete_a_newer_token");
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let prefix = prefix("cad");
    let a = replica(&auth, cache(&redis.url, &prefix));
    let old = a.token().await.unwrap();
    let b = replica(&auth, cache(&redis.url, &prefix));
    let b_old = b.token().await.unwrap();
    assert_eq!(old.access_token(), b_old.access_token());
    assert_eq!(auth.token_requests(), 1);

    // A's token is refused: A deletes it from Redis (it is still the stored one) and fetches.
    assert!(a.invalidate(&old));
    eventually("a new token on A", || {
        access_token(&a).is_some_and(|t| t != old.access_token())
    })
    .await;
    assert_eq!(auth.token_requests(), 2);
    let new = access_token(&a).unwrap();
    let mut connection = inspect(&redis.url).await;
    let keys = token_keys(&mut connection, &prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let stored = get_value(&mut connection, &keys[0]).await.unwrap();
    assert!(String::from_utf8_lossy(&stored).contains(&new));

    // B reports the old token refused later: Redis no longer holds it, so nothing is deleted,
    // and B adopts A's new token without a token request.
    assert!(b.invalidate(&b_old));
    eventually("the new token on B", || {
        access_token(&b).as_ref() == Some(&new)
    })
    .await;
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(
        get_value(&mut connection, &keys[0]).await.as_ref(),
        Some(&stored)
    );
}

/// With an encryption key, Redis holds no plaintext token; a replica with the wrong key, or
/// garbage under the key, is a miss: that replica fetches, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn encrypted_values_wrong_keys_and_garbage() {
    let redis = Redis::get("encrypted_values_wrong_keys_and_garbage");
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let api = auth.api();
    let prefix = prefix("sealed");
    let sealed = |key: u8| cache(&redis.url, &prefix).encryption_key(1, [key; 32]);

    let handles: Vec<_> = (0..3).map(|_| replica(&auth, sealed(0x11))).collect();
    for handle in &handles {
        handle.token().await.unwrap();
    }
    assert_eq!(auth.token_requests(), 1);
    let token = access_token(&handles[0]).unwrap();
    let mut connection = inspect(&redis.url).await;
    let keys = token_keys(&mut connection, &prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let stored = get_value(&mut connection, &keys[0]).await.unwrap();
    assert_eq!(&stored[..2], &[0x02, 1]);
    assert!(
        !stored.windows(token.len()).any(|w| w == token.as_bytes()),
        "the stored value holds the plaintext token"
    );
    assert!(!String::from_utf8_lossy(&stored).contains("orders:read"));

    // The same key id with other key bytes: a miss; that replica fetches its own token.
    let wrong = replica(&auth, sealed(0x22));
    let wrong_token = wrong.token().await.unwrap();
    assert_ne!(wrong_token.access_token(), token);
    assert_eq!(auth.token_requests(), 2);
    let service = common::client(&wrong, &api);
    let (status, _) = common::send(&service, common::request("x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // Garbage under the key (with a TTL, as the replicas write): a miss with a warning.
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(b"\x02\x01garbage that is not a sealed token".as_slice())
        .arg("PX")
        .arg(60_000)
        .query_async(&mut connection)
        .await
        .unwrap();
    let after_garbage = replica(&auth, sealed(0x11));
    after_garbage.token().await.unwrap();
    assert_eq!(auth.token_requests(), 3);
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("plain garbage")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut connection)
        .await
        .unwrap();
    let plain = replica(&auth, cache(&redis.url, &prefix));
    plain.token().await.unwrap();
    assert_eq!(auth.token_requests(), 4);
    let service = common::client(&plain, &api);
    let (status, _) = common::send(&service, common::request("x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// Nothing listens at the Redis address: each replica fetches its own token, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_means_each_replica_fetches_its_own() {
    let auth = auth_server().await;
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let handles: Vec<_> = (0..3)
        .map(|_| replica(&auth, cache(&url, "unreachable:")))
        .collect();
    for handle in &handles {
        handle.token().await.unwrap();
    }
    assert_eq!(auth.token_requests(), 3);
}

/// A Redis that accepts connections and never answers: after the timeout the replica fetches
/// its own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_times_out_and_the_replica_fetches_alone() {
    let auth = auth_server().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let handle = builder(&auth)
        .shared_cache(
            RedisCache::new(&format!("redis://{addr}/"))
                .unwrap()
                .timeout(Duration::from_millis(200)),
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert!(handle.current().is_some());
    assert_eq!(auth.token_requests(), 1);
    accepting.abort();
}

/// The metrics tell hits, waits, leases won and fallbacks apart.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn metrics_count_hits_leases_and_fallbacks() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let redis = Redis::get("metrics_count_hits_leases_and_fallbacks");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let auth = auth_server().await;
    let prefix = prefix("metrics");
    let first = replica(&auth, cache(&redis.url, &prefix));
    first.token().await.unwrap();
    let second = replica(&auth, cache(&redis.url, &prefix));
    second.token().await.unwrap();
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    let alone = replica(&auth, cache(&dead, &prefix));
    alone.token().await.unwrap();
    assert_eq!(auth.token_requests(), 2);

    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |outcome: &str| {
        snapshot
            .iter()
            .filter(|(key, ..)| {
                key.key().name() == "tower_client_credentials_shared_cache_refreshes_total"
                    && key.key().labels().any(|l| l.value() == outcome)
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => *n,
                other => panic!("{other:?}"),
            })
            .sum::<u64>()
    };
    assert_eq!(counter("lease_won"), 1);
    assert_eq!(counter("hit"), 1);
    assert_eq!(counter("fallback"), 1);
    assert_eq!(counter("waited"), 0);
}

/// A TRACE capture of the shared cache's paths (adoption, lease, 401 compare-and-delete, an
/// unusable value, an unreachable Redis) holds no token and no secret. One thread, so that the
/// thread's subscriber sees every task.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn logs_hold_no_token_and_no_secret() {
    let redis = Redis::get("logs_hold_no_token_and_no_secret");
    let captured = common::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let api = auth.api();
    let prefix = prefix("logs");
    let handles: Vec<_> = (0..3)
        .map(|_| replica(&auth, cache(&redis.url, &prefix)))
        .collect();
    for handle in &handles {
        handle.token().await.unwrap();
    }
    auth.revoke_all();
    for service in services(&handles, &api) {
        let (status, _) = common::send(&service, common::request("x")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let mut connection = inspect(&redis.url).await;
    let keys = token_keys(&mut connection, &prefix).await;
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(b"\x01{\"access_token\":not-json".as_slice())
        .arg("PX")
        .arg(60_000)
        .query_async(&mut connection)
        .await
        .unwrap();
    replica(&auth, cache(&redis.url, &prefix))
        .token()
        .await
        .unwrap();
    let dead = format!("redis://:hunter2-redis-password@127.0.0.1:{}/", free_port());
    replica(&auth, cache(&dead, &prefix)).token().await.unwrap();

    let text = captured.text();
    for expected in [
        "took the shared token lease",
        "adopted the shared access token",
        "refused token deleted from the shared cache",
        "unusable value in the shared token cache",
        "shared token cache unavailable",
    ] {
        assert!(text.contains(expected), "no `{expected}` in the capture");
    }
    let tokens = auth.tokens();
    assert_eq!(tokens.len(), 4);
    for token in tokens {
        assert!(!text.contains(&token.access_token), "a token in the logs");
        // Not even its signature, the part no two tokens share.
        let signature = token.access_token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token signature in the logs");
    }
    assert!(!text.contains(DEFAULT_CLIENT_SECRET));
    assert!(!text.contains("hunter2-redis-password"));
    assert!(!text.contains("not-json"));
}

/// Each key of a token set has its own shared token: two replicas of a set with two keys make
/// two token requests, one per key, not four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn token_set_keys_are_shared_one_by_one() {
    use tower_client_credentials::TokenKey;

    let redis = Redis::get("token_set_keys_are_shared_one_by_one");
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let prefix = prefix("set");
    let set = || {
        builder(&auth)
            .shared_cache(cache(&redis.url, &prefix))
            .build_set()
            .unwrap()
            .route(
                "http://127.0.0.1:1".parse().unwrap(),
                TokenKey::new().audience("https://orders.example"),
            )
            .unwrap()
            .route(
                "http://127.0.0.1:2".parse().unwrap(),
                TokenKey::new().audience("https://billing.example"),
            )
            .unwrap()
            .start()
    };
    let first = set().await.unwrap();
    let second = set().await.unwrap();
    assert_eq!(auth.token_requests(), 2);
    let mut audiences: Vec<_> = auth.tokens().into_iter().map(|t| t.audience).collect();
    audiences.sort();
    assert_eq!(
        audiences,
        ["https://billing.example", "https://orders.example"]
    );
    let mut connection = inspect(&redis.url).await;
    assert_eq!(token_keys(&mut connection, &prefix).await.len(), 2);
    assert!(
        first
            .status()
            .iter()
            .chain(&second.status())
            .all(|(_, s)| s.valid)
    );
}

/// DPoP-bound tokens are shared only between replicas that hold the same DPoP key: those
/// share one token (and each sends its own proofs with it), a replica with another key gets a
/// token of its own under another Redis key, and a bearer replica never adopts a DPoP token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn dpop_tokens_are_shared_only_with_the_same_key() {
    use tower_client_credentials::{DpopAlgorithm, DpopKey};

    let redis = Redis::get("dpop_tokens_are_shared_only_with_the_same_key");
    let auth = auth_server().await;
    let prefix = prefix("dpop");
    let pem = tower_client_credentials_testkit::keys::TestKey::p256()
        .private_pem()
        .into_bytes();
    let shared_key = DpopKey::from_pem(DpopAlgorithm::ES256, &pem).unwrap();
    let dpop_replica = |key: &DpopKey| {
        builder(&auth)
            .dpop(key.clone())
            .shared_cache(cache(&redis.url, &prefix))
            .build()
            .unwrap()
    };
    let a = dpop_replica(&shared_key).start().await.unwrap();
    let b = dpop_replica(&shared_key).start().await.unwrap();
    assert_eq!(auth.token_requests(), 1, "same key: one token");
    assert_eq!(access_token(&a), access_token(&b));
    assert_eq!(a.current().unwrap().token_type(), "DPoP");

    let other_key = DpopKey::generate(DpopAlgorithm::EdDSA).unwrap();
    let c = dpop_replica(&other_key).start().await.unwrap();
    let bearer = builder(&auth)
        .shared_cache(cache(&redis.url, &prefix))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(
        auth.token_requests(),
        3,
        "another key and bearer: a token each"
    );
    assert_ne!(access_token(&c), access_token(&a));
    assert_eq!(bearer.current().unwrap().token_type(), "Bearer");
    let mut connection = inspect(&redis.url).await;
    assert_eq!(token_keys(&mut connection, &prefix).await.len(), 3);

    // Every replica's requests are accepted with its own proofs.
    let api = auth.api();
    for service in services(&[a, b, c, bearer], &api) {
        let (status, _) = common::send(&service, common::request("x")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(api.accepted(), 4);
    assert_eq!(api.seen_proof_jtis().len(), 3);
}

/// Any token source shares through Redis: replicas of a closure source under the same name
/// make one fetch between them; a source under another name makes its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_custom_source_is_shared_by_name() {
    let redis = Redis::get("a_custom_source_is_shared_by_name");
    let prefix = prefix("source");
    let fetches = Arc::new(AtomicU64::new(0));
    let replica = |name: &'static str| {
        let fetches = Arc::clone(&fetches);
        ClientCredentials::from_source(tower_client_credentials::source_fn(move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            async move {
                // Slow, so that the other replicas wait for the lease holder.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(tower_client_credentials::IssuedToken::bearer(
                    format!("{name}-{n}"),
                    Duration::from_secs(60),
                ))
            }
        }))
        .shared_cache(cache(&redis.url, &prefix), name)
        .build()
        .unwrap()
    };
    let mut starting = JoinSet::new();
    for _ in 0..5 {
        starting.spawn(replica("orders-api").start());
    }
    let mut handles = Vec::new();
    while let Some(started) = starting.join_next().await {
        handles.push(started.unwrap().expect("every replica gets a token"));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert!(shared_token(&handles).starts_with("orders-api-"));
    let other = replica("billing-api").start().await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert!(access_token(&other).unwrap().starts_with("billing-api-"));
    assert_eq!(
        token_keys(&mut inspect(&redis.url).await, &prefix)
            .await
            .len(),
        2
    );
}

/// A token set of custom sources shares each key's token under the source's name: replicas
/// started together make one fetch per key between them, and the keys' tokens stay apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_token_set_of_custom_sources_is_shared_per_key() {
    use tower_client_credentials::{Origin, TokenKey};

    let redis = Redis::get("a_token_set_of_custom_sources_is_shared_per_key");
    let prefix = prefix("source-set");
    let fetches = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let replica = || {
        let fetches = Arc::clone(&fetches);
        ClientCredentials::from_source_per_key(move |key: &TokenKey| {
            let audience = key.audience_value().unwrap_or("none").to_owned();
            let fetches = Arc::clone(&fetches);
            tower_client_credentials::source_fn(move || {
                fetches.lock().unwrap().push(audience.clone());
                let token = format!("for-{audience}-{}", fastrand::u32(..));
                async move {
                    // Slow, so that the other replicas wait for the lease holder.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(tower_client_credentials::IssuedToken::bearer(
                        token,
                        Duration::from_secs(60),
                    ))
                }
            })
        })
        .shared_cache(cache(&redis.url, &prefix), "apis")
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
    };
    let mut starting = JoinSet::new();
    for _ in 0..4 {
        starting.spawn(replica().start());
    }
    let mut sets = Vec::new();
    while let Some(started) = starting.join_next().await {
        sets.push(started.unwrap().expect("every replica gets its tokens"));
    }
    let mut fetched = fetches.lock().unwrap().clone();
    fetched.sort();
    assert_eq!(fetched, ["billing", "orders"], "one fetch per key in all");
    let mut keys = token_keys(&mut inspect(&redis.url).await, &prefix).await;
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 2, "{keys:?}");
    drop(sets);
}

/// The calls of each command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
async fn command_calls(
    connection: &mut redis::aio::MultiplexedConnection,
) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The commands the shared cache sends for a refresh (not the connection set-up, not
/// `SUBSCRIBE`, which a process sends once per key, and not this test's own `INFO`/`CONFIG`).
const REFRESH_COMMANDS: [&str; 9] = [
    "get", "pttl", "set", "publish", "evalsha", "eval", "del", "pexpire", "exec",
];

async fn reset_stats(connection: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(connection)
        .await
        .unwrap();
}

/// Replicas waiting for the lease holder cost O(1) Redis commands per refresh, whatever the
/// token endpoint's latency: they wake on the holder's publication instead of polling.
/// Counted from Redis's `INFO commandstats` (so on a `redis-server` of the test's own). The
/// fallback poll is set to 30 s, so the replicas only get their token within the 10 s allowed
/// if the publication wakes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn waiting_costs_a_few_commands_per_replica_whatever_the_endpoint_latency() {
    const TEST: &str = "waiting_costs_a_few_commands_per_replica_whatever_the_endpoint_latency";
    let redis = Redis::own(TEST);
    const REPLICAS: usize = 20;
    // The lease holder's commands: read (2), lease (1), read (2), store and publish (2),
    // release (EVALSHA, and the GET and DEL it runs).
    const HOLDER: u64 = 10;
    let mut connection = inspect(&redis.url()).await;
    for latency in [Duration::from_millis(200), Duration::from_secs(1)] {
        let auth = MockAuthServer::builder()
            .lifetime(Duration::from_secs(4))
            .start()
            .await
            .unwrap();
        auth.set_fault_plan(move |_| Some(Fault::delay(latency)));
        let prefix = prefix("commands");
        let configs: Vec<_> = (0..REPLICAS)
            .map(|_| {
                let cache = cache(&redis.url(), &prefix)
                    .lease_timeout(Duration::from_secs(30))
                    .poll_interval(Duration::from_secs(30));
                builder(&auth).shared_cache(cache).build().unwrap()
            })
            .collect();

        // Cold start: every replica's first wait also subscribes, and reads once more.
        reset_stats(&mut connection).await;
        let mut starting = JoinSet::new();
        for config in configs {
            starting.spawn(config.start());
        }
        let handles = tokio::time::timeout(Duration::from_secs(10), async {
            let mut handles = Vec::new();
            while let Some(started) = starting.join_next().await {
                handles.push(started.unwrap().expect("every replica gets a token"));
            }
            handles
        })
        .await
        .expect("the publication wakes the waiting replicas");
        assert_eq!(auth.token_requests(), 1);
        let first = shared_token(&handles);
        let cold = command_calls(&mut connection).await;

        // The next refresh, about 3.1 s later: the replicas' refresh points fall within the
        // holder's token request, so they wait.
        reset_stats(&mut connection).await;
        eventually("the next token on every replica", || {
            handles
                .iter()
                .all(|h| access_token(h).is_some_and(|t| t != first))
        })
        .await;
        let refresh = command_calls(&mut connection).await;
        assert_eq!(auth.token_requests(), 2);
        shared_token(&handles);

        let total = |calls: &std::collections::BTreeMap<String, u64>| {
            REFRESH_COMMANDS
                .iter()
                .map(|name| calls.get(*name).copied().unwrap_or(0))
                .sum::<u64>()
        };
        // A process's first wait also sends SUBSCRIBE and reads once more (2): once per
        // process, not per refresh.
        let subscriptions = |calls: &std::collections::BTreeMap<String, u64>| {
            calls.get("subscribe").copied().unwrap_or(0)
        };
        let per_waiter = |calls| {
            (total(calls) - HOLDER - 2 * subscriptions(calls)) as f64 / (REPLICAS - 1) as f64
        };
        announce(&format!(
            "waiting, {REPLICAS} replicas, token endpoint {} ms: {:.2} commands per waiting \
             replica at the next refresh ({refresh:?}); cold start {:.2}, plus {} first \
             subscriptions ({cold:?})",
            latency.as_millis(),
            per_waiter(&refresh),
            per_waiter(&cold),
            subscriptions(&cold),
        ));
        // Read and lease; the publication carries the token, so no second read.
        assert!(per_waiter(&refresh) <= 3.0, "{refresh:?}");
        // A replica subscribes at its first wait only: at the cold start, or at the next
        // refresh (the first lease holder, if it waits then).
        assert!(
            subscriptions(&cold) + subscriptions(&refresh) <= REPLICAS as u64,
            "at most one subscription per process"
        );
    }
}

/// A fleet in one process (`FLEET_REPLICAS`, default 200; BENCHMARKS.md has 1,000), 5-second
/// tokens from the in-memory authorization server, a request every `FLEET_REQUEST_MS` (default
/// 200) per replica. Redis runs for two lifetimes, is stopped when a refresh starts, and stays
/// away for four lifetimes. Reports the token requests per lifetime with Redis, per replica per
/// refresh period (the fleet's, with Redis) and per lifetime without it, and the peak per
/// second and per 100 ms; asserts that no request failed, that no replica made more than one
/// token request per refresh, at most 1.2 per replica per refresh period without Redis, and
/// that while Redis was away each replica kept serving its token until its own refresh point
/// (no burst at the stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a fleet of replicas for about 35 s; .ci/run runs it"]
async fn a_fleet_rides_out_redis_stopping_at_a_refresh_point() {
    use tower::ServiceBuilder;

    const TEST: &str = "a_fleet_rides_out_redis_stopping_at_a_refresh_point";
    let mut redis = Redis::own(TEST);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let replicas = env("FLEET_REPLICAS", 200) as usize;
    let every = Duration::from_millis(env("FLEET_REQUEST_MS", 200));
    let lifetime = Duration::from_secs(5);
    let auth = common::auth_server(lifetime);
    // `FLEET_TOKEN_MS`: how long each token request takes (default: answered at once).
    let token_latency = Duration::from_millis(env("FLEET_TOKEN_MS", 0));
    if !token_latency.is_zero() {
        auth.set_fault_plan(move |_| Some(Fault::delay(token_latency)));
    }
    let api = auth.api();
    let prefix = prefix("fleet-outage");

    // Each replica counts its own token requests.
    let counts: Vec<Arc<AtomicU64>> = (0..replicas).map(|_| Arc::default()).collect();
    let handles: Vec<TokenHandle> = counts
        .iter()
        .map(|count| {
            let count = Arc::clone(count);
            let client = ServiceBuilder::new()
                .map_request(move |request| {
                    count.fetch_add(1, Ordering::Relaxed);
                    request
                })
                .service(auth.service());
            let cache = RedisCache::new(&redis.url())
                .unwrap()
                .prefix(&prefix)
                .timeout(Duration::from_secs(2));
            common::builder(&auth)
                .http_client(client)
                .shared_cache(cache)
                .build()
                .unwrap()
                .spawn()
        })
        .collect();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for handle in &handles {
        let service = common::client(handle, &api);
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match common::send(&service, common::request("x")).await {
                    Ok((StatusCode::OK, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    // The token requests, sampled every 100 ms by a thread of its own, so that a busy
    // runtime does not skew the samples.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (samples, sampling, auth) = (Arc::clone(&samples), Arc::clone(&sampling), auth.clone());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut n = 0_u32;
            while sampling.load(Ordering::Relaxed) {
                samples.lock().unwrap().push(auth.token_requests());
                n += 1;
                let next = start + Duration::from_millis(100) * n;
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
        })
    };
    let total = |counts: &[Arc<AtomicU64>]| -> Vec<u64> {
        counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    };
    // When each replica's token changes, sampled every 2 ms by a thread of its own (a pointer
    // comparison per replica), and when the lease holders publish, heard by a plain pub/sub
    // connection of the test's: the time from a publication to the last replica holding the
    // new token.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let changes = {
        let (watching, handles) = (Arc::clone(&watching), handles.clone());
        std::thread::spawn(move || {
            let mut held: Vec<Option<Arc<tower_client_credentials::Token>>> =
                handles.iter().map(TokenHandle::current).collect();
            let mut changes = vec![Vec::<std::time::Instant>::new(); handles.len()];
            while watching.load(Ordering::Relaxed) {
                let now = std::time::Instant::now();
                for (i, handle) in handles.iter().enumerate() {
                    // A new token, not its withdrawal at expiry (with a slow token endpoint
                    // the store may be empty for a moment before the new one arrives).
                    let Some(current) = handle.current() else {
                        continue;
                    };
                    if !held[i]
                        .as_ref()
                        .is_some_and(|held| Arc::ptr_eq(held, &current))
                    {
                        changes[i].push(now);
                        held[i] = Some(current);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            changes
        })
    };
    let publications = {
        let (watching, url, pattern) = (
            Arc::clone(&watching),
            redis.url(),
            format!("{prefix}*:published"),
        );
        let (ready, subscribed) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut heard = Vec::<std::time::Instant>::new();
            let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut pubsub = connection.as_pubsub();
            pubsub.psubscribe(&pattern).unwrap();
            pubsub
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let _ = ready.send(());
            while watching.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(_) => heard.push(std::time::Instant::now()),
                    Err(error) if error.is_timeout() => {}
                    // Redis stopped: nothing more to hear.
                    Err(_) => break,
                }
            }
            heard
        });
        subscribed.recv().unwrap();
        thread
    };

    // Two lifetimes with Redis (the cold start included). The second holds one refresh of
    // the fleet (at about 1.56 lifetimes: every replica refreshes at 78-80 % of the shared
    // token's lifetime), whose Redis commands are counted. Then Redis is stopped when the
    // next refresh starts.
    let mut stats = inspect(&redis.url()).await;
    tokio::time::sleep(lifetime).await;
    let before_round = auth.token_requests();
    reset_stats(&mut stats).await;
    let round_started = std::time::Instant::now();
    tokio::time::sleep(lifetime).await;
    let round_ended = std::time::Instant::now();
    let calls = command_calls(&mut stats).await;
    let round = auth.token_requests() - before_round;
    let commands: u64 = REFRESH_COMMANDS
        .iter()
        .chain(&["subscribe"])
        .map(|name| calls.get(*name).copied().unwrap_or(0))
        .sum();
    let per_refresh = commands as f64 / replicas as f64 / round.max(1) as f64;
    drop(stats);
    let with_redis = auth.token_requests();
    eventually("a refresh", || auth.token_requests() > with_redis).await;
    redis.stop();
    let stopped_at = std::time::Instant::now();
    let at_stop = total(&counts);
    let outage = 4 * lifetime;
    tokio::time::sleep(outage).await;
    let at_end = total(&counts);
    let ended_at = std::time::Instant::now();
    let served = ok.load(Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    watching.store(false, Ordering::Relaxed);
    let changes = changes.join().unwrap();
    let publications = publications.join().unwrap();
    let failed = failed.load(Ordering::Relaxed);

    // The counted lifetime's publication, and when each replica first held a new token after
    // it (the lease holder may install its token a moment before the test hears the message:
    // that counts as no delay).
    let published = publications
        .iter()
        .copied()
        .find(|at| (round_started..round_ended).contains(at))
        .expect("a publication in the counted lifetime");
    let mut delays: Vec<Duration> = changes
        .iter()
        .filter_map(|changed| {
            changed
                .iter()
                .find(|at| **at + Duration::from_millis(100) >= published)
                .filter(|at| **at < published + lifetime / 2)
                .map(|at| at.saturating_duration_since(published))
        })
        .collect();
    delays.sort_unstable();
    let reached = delays.len();
    let delay_p50 = delays.get(reached / 2).copied().unwrap_or_default();
    let delay_max = delays.last().copied().unwrap_or_default();

    let during: Vec<u64> = at_end.iter().zip(&at_stop).map(|(e, s)| e - s).collect();
    let during_total: u64 = during.iter().sum();
    let lifetimes = outage.as_secs_f64() / lifetime.as_secs_f64();
    let per_replica = during_total as f64 / replicas as f64 / lifetimes;
    let most = during.iter().copied().max().unwrap_or(0);
    // The rate once the outage is under way: without Redis each new token is a replica's own
    // request, so the time between two of a replica's token changes is its refresh interval.
    // The window count above also holds the refresh that was due when Redis stopped and the
    // window's edges; this is the rate a long outage settles at.
    // The times between consecutive instants, and their mean.
    let gaps = |times: Vec<&std::time::Instant>| -> Vec<Duration> {
        times
            .windows(2)
            .map(|pair| pair[1].duration_since(*pair[0]))
            .collect()
    };
    let mean =
        |durations: &[Duration]| durations.iter().sum::<Duration>() / durations.len().max(1) as u32;
    let intervals: Vec<Duration> = changes
        .iter()
        .flat_map(|changed| {
            gaps(
                changed
                    .iter()
                    .filter(|at| (stopped_at..ended_at).contains(*at))
                    .collect(),
            )
        })
        .collect();
    let mean_interval = mean(&intervals);
    let steady = lifetime.as_secs_f64() / mean_interval.as_secs_f64().max(f64::EPSILON);
    // The fleet's refresh period with Redis: the time between two publications of a new
    // token before the stop. A refresh comes at about 80 % of a 5-second token's lifetime
    // (the default ratio; a one-hour token is refreshed a minute early), so with Redis too the
    // fleet makes 1.25 token requests per lifetime, one per period: the issue's "one token
    // request per lifetime". Without Redis, the same cadence is one request per replica per
    // period.
    let periods = gaps(publications.iter().filter(|at| **at < stopped_at).collect());
    let period = mean(&periods);
    let outage_periods = outage.as_secs_f64() / period.as_secs_f64().max(f64::EPSILON);
    let per_period = during_total as f64 / replicas as f64 / outage_periods;
    let steady_per_period = period.as_secs_f64() / mean_interval.as_secs_f64().max(f64::EPSILON);
    let samples = samples.lock().unwrap().clone();
    let peak = |window: usize| {
        samples
            .windows(window + 1)
            .map(|w| w[window] - w[0])
            .max()
            .unwrap_or(0)
    };
    if std::env::var_os("FLEET_TRACE").is_some() {
        let deltas: Vec<u64> = samples.windows(2).map(|w| w[1] - w[0]).collect();
        announce(&format!("token requests per 100 ms: {deltas:?}"));
        announce(&format!(
            "Redis commands in the counted lifetime: {calls:?}"
        ));
    }
    announce(&format!(
        "fleet, {replicas} replicas, 5-second tokens taking {} ms to get, a request every {} ms \
         each: {with_redis} \
         token requests in 2 lifetimes with Redis (cold start included), {round} in the \
         counted one, {per_refresh:.2} Redis commands per replica per refresh, publication to \
         replicas holding the new token: p50 {} ms, max {} ms ({reached} replicas); Redis stopped at a \
         refresh: {during_total} token requests in {lifetimes} lifetimes without it = \
         {per_replica:.2} per replica per lifetime (at most {most} by one replica), {steady:.2} \
         once under way (a replica's own refreshes {} ms apart on average, {} intervals); \
         per replica per refresh period of the fleet with Redis ({} ms): {per_period:.2} in \
         the outage, {steady_per_period:.2} once under way; \
         peak {} per second, {} per 100 ms; {served} requests served, \
         {failed} failed, {} refused by the API and retried",
        token_latency.as_millis(),
        every.as_millis(),
        delay_p50.as_millis(),
        delay_max.as_millis(),
        mean_interval.as_millis(),
        intervals.len(),
        period.as_millis(),
        peak(10),
        peak(1),
        api.rejected_total(),
    ));
    // A 401 is retried with a new token: only answers other than 200 count as failures.
    assert_eq!(failed, 0, "no request fails");
    // With Redis: one token request for the fleet's refresh, and a few commands per replica.
    assert_eq!(round, 1, "token requests in the counted lifetime");
    // Every replica took up the published token (within half a lifetime of it).
    assert_eq!(reached, replicas, "replicas that held the new token");
    assert!(
        per_refresh <= 5.0,
        "{per_refresh:.2} commands per replica per refresh"
    );
    // Alone, a replica refreshes 3.9 s or more after its last token request (78 % of the
    // lifetime at the earliest): at most 6 refreshes in 20 s, one token request each.
    assert!(
        most <= 6,
        "a replica made {most} token requests in {lifetimes} lifetimes"
    );
    // Without Redis a replica refreshes at the cadence the fleet had with it: at most 1.2
    // token requests per replica per refresh period over the outage (the refresh that was due
    // at the stop included), and about one once the outage is under way.
    assert!(
        !periods.is_empty() && per_period <= 1.2,
        "{per_period:.2} token requests per replica per refresh period ({} ms) without Redis",
        period.as_millis()
    );
    assert!(
        !intervals.is_empty() && steady_per_period <= 1.1,
        "{steady_per_period:.2} token requests per replica per refresh period once under way \
         ({} intervals, {steady:.2} per lifetime)",
        intervals.len()
    );
    // The replicas that held the shared token when Redis stopped spread their own requests
    // over what was left of it (about 0.5 s here) instead of sending them together.
    // (At least 10: a small fleet's peak is mostly chance.)
    assert!(
        peak(1) as f64 <= (0.4 * replicas as f64).max(10.0),
        "{} token requests within 100 ms",
        peak(1)
    );
}

/// A `redis-server` that speaks only TLS (`--tls-port`, no plain port) on a loopback port,
/// with certificates the openssl CLI makes for the test: a CA, a server certificate it signed
/// for `127.0.0.1`, and another CA that signed nothing. Killed, and its files removed, on
/// drop.
struct TlsRedis {
    process: RedisProcess,
    dir: std::path::PathBuf,
}

impl TlsRedis {
    fn start(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tcc-tls-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        if let Err(error) = make_certificates(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            unavailable(
                test,
                &format!("cannot make certificates with `openssl`: {error}"),
            );
        }
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path("server.crt")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.crt")])
            .args(["--tls-auth-clients", "no"])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            let _ = std::fs::remove_dir_all(&dir);
            unavailable(test, "cannot start `redis-server`");
        };
        let process = RedisProcess {
            child: Some(child),
            port,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                let _ = std::fs::remove_dir_all(&dir);
                unavailable(
                    test,
                    "`redis-server --tls-port` did not listen (built without TLS?)",
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { process, dir }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.process.port)
    }

    fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_certificates(dir: &std::path::Path) -> std::io::Result<()> {
    let openssl = |args: &[&str]| -> std::io::Result<()> {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("openssl {args:?}: {status}")))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subject) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN={ca}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
        ]);
        openssl(&args)?;
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&args)?;
    std::fs::write(
        dir.join("server.ext"),
        // clientAuth too: the nodes of a TLS cluster present it to each other on the bus.
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])
}

/// `rediss://`: replicas share one token through a TLS-only Redis whose certificate the
/// given CA signed. With another CA the certificate does not verify: the replica logs a `warn`
/// that says so and fetches its own token; nothing panics. A PEM without a certificate is
/// refused by `build()`, naming the option.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn rediss_shares_over_tls_and_an_untrusted_certificate_falls_back() {
    const TEST: &str = "rediss_shares_over_tls_and_an_untrusted_certificate_falls_back";
    keep_callsites_live();
    let redis = TlsRedis::start(TEST);
    let captured = common::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let prefix = prefix("tls");
    let tls = |ca: &str| cache(&redis.url(), &prefix).tls_root_certificates(redis.pem(ca));
    let mut handles = Vec::new();
    for _ in 0..3 {
        let handle = builder(&auth).shared_cache(tls("ca.crt")).build().unwrap();
        handles.push(handle.start().await.unwrap());
    }
    assert_eq!(auth.token_requests(), 1, "one token, shared over TLS");
    shared_token(&handles);
    assert_eq!(captured.text(), "", "no warning");

    let untrusted = builder(&auth)
        .shared_cache(tls("other-ca.crt"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(auth.token_requests(), 2, "fetched without Redis");
    assert_ne!(access_token(&untrusted), access_token(&handles[0]));
    let text = captured.text();
    assert!(
        text.contains("shared token cache unavailable")
            && text.contains("TLS: invalid peer certificate"),
        "{text}"
    );

    for (pem, url) in [
        (b"not a certificate".to_vec(), redis.url()),
        (
            redis.pem("ca.crt"),
            redis.url().replace("rediss:", "redis:"),
        ),
    ] {
        let refused = builder(&auth)
            .shared_cache(RedisCache::new(&url).unwrap().tls_root_certificates(pem))
            .build()
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("shared_cache.tls_root_certificates"),
            "{refused}"
        );
    }
}

/// A three-node Redis Cluster on loopback ports (no replicas, no persistence), made with
/// `redis-cli --cluster create`. Each node keeps its `nodes.conf` in a temporary directory, so
/// a restarted node rejoins with its slots (empty). Killed, and the directory removed, on drop.
struct RedisCluster {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    /// Whether the nodes speak only TLS (clients and cluster bus), with the certificates of
    /// `make_certificates` in `dir`.
    tls: bool,
}

impl RedisCluster {
    fn start(test: &str) -> Self {
        Self::start_with(test, false)
    }

    /// A cluster whose nodes speak only TLS, to clients and to each other.
    fn start_tls(test: &str) -> Self {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("tcc-cluster-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        if tls && let Err(error) = make_certificates(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            unavailable(
                test,
                &format!("cannot make certificates with `openssl`: {error}"),
            );
        }
        // A node's cluster bus listens on its port + 10000, which must be a port too.
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                loop {
                    let port = free_port();
                    if port < 55_000 {
                        break port;
                    }
                }
            })
            .collect();
        let mut cluster = Self {
            dir,
            ports: ports.clone(),
            nodes: vec![None, None, None],
            tls,
        };
        for node in 0..3 {
            if cluster.start_node(node).is_err() {
                unavailable(test, "cannot start `redis-server --cluster-enabled yes`");
            }
        }
        let mut create = Command::new("redis-cli");
        create.args(cluster.cli_tls());
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let created = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        // `redis-cli` waits for ever for nodes that cannot meet: at most 30 s.
        let created = created.is_ok_and(|mut child| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.success(),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break false;
                    }
                }
            }
        });
        if !created {
            unavailable(test, "`redis-cli --cluster create` failed");
        }
        if !cluster.wait_ok() {
            unavailable(test, "the cluster did not reach cluster_state:ok");
        }
        cluster
    }

    /// `redis-cli`'s TLS arguments, if the cluster speaks TLS.
    fn cli_tls(&self) -> Vec<String> {
        if !self.tls {
            return Vec::new();
        }
        let ca = self.dir.join("ca.crt").to_string_lossy().into_owned();
        vec!["--tls".into(), "--cacert".into(), ca]
    }

    fn start_node(&mut self, node: usize) -> std::io::Result<()> {
        let port = self.ports[node].to_string();
        let path = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
        let listen: Vec<String> = if self.tls {
            [
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cluster",
                "yes",
                "--tls-auth-clients",
                "no",
                "--tls-cert-file",
                &path("server.crt"),
                "--tls-key-file",
                &path("server.key"),
                "--tls-ca-cert-file",
                &path("ca.crt"),
            ]
            .map(String::from)
            .to_vec()
        } else {
            vec!["--port".into(), port.clone()]
        };
        let child = Command::new("redis-server")
            .args(&listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            // The nodes that remain serve their slots while another is away.
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.nodes[node] = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let port = self.ports[node];
        let up = || {
            if self.tls {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                ping(port)
            }
        };
        while !up() {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other("no PONG"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop_node(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (up to 20 s) until every node says `cluster_state:ok`.
    fn wait_ok(&self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let ok = self.ports.iter().all(|port| {
                Command::new("redis-cli")
                    .args(self.cli_tls())
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|out| {
                        String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
                    })
            });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| {
                let scheme = if self.tls { "rediss" } else { "redis" };
                format!("{scheme}://127.0.0.1:{port}/")
            })
            .collect()
    }

    fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.stop_node(node);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Redis Cluster: replicas share one token through a three-node cluster; the token key and
/// its lease hash to one slot. The node that holds the token is restarted mid-run (empty):
/// no request fails, the replicas fetch without Redis while the cluster is down, and share
/// one token again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_cluster_shares_the_token_and_survives_a_node_restart() {
    const TEST: &str = "a_cluster_shares_the_token_and_survives_a_node_restart";
    let mut cluster = RedisCluster::start(TEST);
    const REPLICAS: usize = 5;
    let auth = auth_server().await;
    let prefix = prefix("cluster");
    let urls = cluster.urls();
    let handles: Vec<_> = (0..REPLICAS)
        .map(|_| {
            let cache = RedisCache::cluster(urls.iter().map(String::as_str))
                .unwrap()
                .prefix(&prefix)
                .timeout(Duration::from_secs(1))
                .outage_backoff(Duration::from_millis(500))
                .lease_timeout(Duration::from_secs(5));
            replica(&auth, cache)
        })
        .collect();
    let api = auth.api();
    let traffic = Traffic::start(services(&handles, &api));
    eventually("a token on every replica", || {
        handles.iter().all(|h| h.current().is_some())
    })
    .await;
    assert_eq!(auth.token_requests(), 1, "one token for the fleet");
    shared_token(&handles);

    // The node that holds the token key, and the slot of the key and of its lease.
    let mut owner = None;
    let mut key = String::new();
    for (node, url) in urls.iter().enumerate() {
        let mut connection = inspect(url).await;
        let keys = token_keys(&mut connection, &prefix).await;
        if let [found] = keys.as_slice() {
            owner = Some(node);
            key = found.clone();
            let slot = |name: String| {
                let mut connection = connection.clone();
                async move {
                    redis::cmd("CLUSTER")
                        .arg("KEYSLOT")
                        .arg(name)
                        .query_async::<i64>(&mut connection)
                        .await
                        .unwrap()
                }
            };
            assert_eq!(slot(key.clone()).await, slot(format!("{key}:lease")).await);
        }
    }
    let owner = owner.expect("one node holds the token key");
    assert!(key.contains('{') && key.ends_with('}'), "{key}");

    tokio::time::sleep(LIFETIME).await;
    cluster.stop_node(owner);
    tokio::time::sleep(2 * LIFETIME).await;
    cluster.start_node(owner).unwrap();
    assert!(cluster.wait_ok(), "the cluster is whole again");
    // Two lifetimes to meet again, then three counted.
    tokio::time::sleep(2 * LIFETIME).await;
    let resumed = auth.token_requests();
    tokio::time::sleep(3 * LIFETIME).await;
    let after = auth.token_requests() - resumed;
    let (ok, failed) = traffic.stop().await;
    announce(&format!(
        "cluster, {REPLICAS} replicas, node restart: {after} token requests in 3 lifetimes \
         after the cluster was whole again ({} in all); {ok} requests served, {failed} failed",
        auth.token_requests()
    ));
    assert_eq!(failed, 0);
    assert_eq!(api.rejected_total(), 0);
    // About one per lifetime again (each replica alone would make 3 × 5 × 1.25).
    assert!(after <= 6, "{after} token requests after the restart");
}

/// Waiters whose publication cannot arrive still get the lease holder's token, without a
/// token request of their own: one whose pub/sub connection is killed while it waits
/// subscribes again, and one whose Redis user may not `SUBSCRIBE` (ACL) polls every
/// `poll_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn waiters_without_publications_fall_back_to_polling() {
    const TEST: &str = "waiters_without_publications_fall_back_to_polling";
    let redis = Redis::own(TEST);
    let mut admin = inspect(&redis.url()).await;
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "nopubsub",
                "on",
                ">nopubsub-pw",
                "~*",
                "&*",
                "+@all",
                "-@pubsub",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let no_pubsub = format!("redis://nopubsub:nopubsub-pw@127.0.0.1:{}/", redis.port);
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let delay = Duration::from_millis(1500);
    auth.set_fault_plan(move |_| Some(Fault::delay(delay)));
    let prefix = prefix("fallback");
    let replica = |url: &str| {
        let cache = cache(url, &prefix).poll_interval(Duration::from_millis(200));
        builder(&auth).shared_cache(cache).build().unwrap()
    };

    let holder = tokio::spawn(replica(&redis.url()).start());
    eventually("the lease holder's token request", || {
        auth.token_requests() == 1
    })
    .await;
    let listening = tokio::spawn(replica(&redis.url()).start());
    let polling = tokio::spawn(replica(&no_pubsub).start());
    // Once the listening waiter subscribed, kill its pub/sub connection.
    let mut subscribed = false;
    for _ in 0..50 {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        if clients.lines().any(|line| line.contains("sub=1")) {
            subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(subscribed, "the waiter subscribed");
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1);

    let handles = [
        holder.await.unwrap().unwrap(),
        listening.await.unwrap().unwrap(),
        polling.await.unwrap().unwrap(),
    ];
    assert_eq!(auth.token_requests(), 1, "only the lease holder fetched");
    shared_token(&handles);
}

// ---------------------------------------------------------------------------------------------
// The store contract (`TokenStore`), for every store: Redis here, the in-memory store on
// tokio's paused clock below.

/// Checks what `TokenStore` promises: values and leases with expiry, leases taken by one
/// holder only and touched only by it, compare-and-delete, publications on store and on a
/// release that wakes. `sleep` lets the store's expiry pass (paused or real time).
async fn contract<S: TokenStore>(store: &S, prefix: &str) {
    let key = format!("{prefix}{{contract}}");
    let lease = format!("{key}:lease");
    let channel = format!("{key}:published");
    let minute = Duration::from_secs(60);

    assert_eq!(store.read(&key).await.unwrap(), None);
    // Values are opaque bytes, any of them.
    let value: Vec<u8> = (0..=255).collect();
    store.store(&key, &value, minute, &channel).await.unwrap();
    let entry = store.read(&key).await.unwrap().expect("read your writes");
    assert_eq!(entry.value, value);
    let ttl = entry.time_to_live.expect("a time to live");
    assert!(!ttl.is_zero() && ttl <= minute, "{ttl:?}");

    // The lease: one holder; only it renews and releases.
    assert!(store.take_lease(&lease, "a", minute).await.unwrap());
    assert!(!store.take_lease(&lease, "b", minute).await.unwrap());
    assert!(!store.renew_lease(&lease, "b", minute).await.unwrap());
    assert!(store.renew_lease(&lease, "a", minute).await.unwrap());
    assert!(!store.release_lease(&lease, "b", None).await.unwrap());
    assert!(store.release_lease(&lease, "a", None).await.unwrap());
    assert!(!store.release_lease(&lease, "a", None).await.unwrap());
    assert!(store.take_lease(&lease, "b", minute).await.unwrap());

    // Compare-and-delete deletes only the very value.
    assert!(!store.compare_and_delete(&key, b"another").await.unwrap());
    assert_eq!(store.read(&key).await.unwrap().unwrap().value, value);
    assert!(store.compare_and_delete(&key, &value).await.unwrap());
    assert_eq!(store.read(&key).await.unwrap(), None);
    assert!(!store.compare_and_delete(&key, &value).await.unwrap());

    // Publications: a store wakes the listeners; so does a release that asks to, and only
    // when it released.
    let mut listener = store.listen(&channel).await.unwrap();
    let mut second = store.listening(&channel).expect("listening after listen");
    store.store(&key, b"v2", minute, &channel).await.unwrap();
    assert_eq!(published(&mut listener).await, Some(true));
    assert_eq!(published(&mut second).await, Some(true));
    // Both stores here carry the value and its time to live in the publication.
    for listener in [&listener, &second] {
        let entry = listener.value().expect("the value published");
        assert_eq!(entry.value, b"v2");
        let ttl = entry.time_to_live.expect("a time to live");
        assert!(!ttl.is_zero() && ttl <= minute, "{ttl:?}");
    }
    assert!(
        !store
            .release_lease(&lease, "a", Some(&channel))
            .await
            .unwrap()
    );
    assert!(
        store
            .release_lease(&lease, "b", Some(&channel))
            .await
            .unwrap()
    );
    assert_eq!(published(&mut listener).await, Some(true));
    assert_eq!(listener.value(), None, "a lease given up carries no value");
    // Nothing more was published.
    let quiet = tokio::time::timeout(Duration::from_millis(300), listener.published()).await;
    assert!(quiet.is_err(), "no publication");

    // Expiry: values and leases are gone once their time to live has passed.
    let short = Duration::from_millis(50);
    store.store(&key, b"v3", short, &channel).await.unwrap();
    assert!(store.take_lease(&lease, "c", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.read(&key).await.unwrap(), None);
    assert!(!store.renew_lease(&lease, "c", minute).await.unwrap());
    assert!(store.take_lease(&lease, "d", minute).await.unwrap());
    assert!(store.release_lease(&lease, "d", None).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn redis_keeps_the_store_contract() {
    let redis = Redis::get("redis_keeps_the_store_contract");
    let cache = RedisCache::new(&redis.url).unwrap();
    contract(cache.store(), &prefix("contract")).await;
}

#[tokio::test(start_paused = true)]
async fn the_memory_store_keeps_the_store_contract() {
    contract(&MemoryStore::new(), "memory:").await;
}

/// A replica of a closure source whose token requests take `latency` and are counted, sharing
/// through `cache` under one name.
fn counted_replica<S: TokenStore + Clone>(
    cache: &SharedCache<S>,
    fetches: &Arc<AtomicU64>,
    latency: Duration,
    lifetime: Duration,
) -> ClientCredentials {
    let fetches = Arc::clone(fetches);
    ClientCredentials::from_source(tower_client_credentials::source_fn(move || {
        let n = fetches.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(latency).await;
            Ok(tower_client_credentials::IssuedToken::bearer(
                format!("token-{n}"),
                lifetime,
            ))
        }
    }))
    .shared_cache(cache.clone(), "orders-api")
    .build()
    .unwrap()
}

/// Starts `count` replicas made by `replica` at once, and their handles once every one has
/// its first token.
async fn start_together(
    count: usize,
    mut replica: impl FnMut() -> ClientCredentials,
) -> Vec<TokenHandle> {
    let mut starting = JoinSet::new();
    for _ in 0..count {
        starting.spawn(replica().start());
    }
    let mut handles = Vec::new();
    while let Some(started) = starting.join_next().await {
        handles.push(started.unwrap().expect("every replica gets a token"));
    }
    handles
}

/// The in-memory store is a store like Redis: twenty replicas of a slow token endpoint
/// starting at once make one token request, then about one per lifetime, all on the paused
/// clock.
#[tokio::test(start_paused = true)]
async fn replicas_share_through_the_memory_store() {
    let store = MemoryStore::new();
    let cache = SharedCache::with_store(store.clone())
        .lease_timeout(Duration::from_secs(5))
        .poll_interval(Duration::from_secs(1));
    let fetches = Arc::new(AtomicU64::new(0));
    let lifetime = Duration::from_secs(60);
    let handles = start_together(20, || {
        counted_replica(&cache, &fetches, Duration::from_secs(2), lifetime)
    })
    .await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(shared_token(&handles), "token-0");
    // One key, and no lease left behind.
    assert_eq!(store.names().len(), 1, "{:?}", store.names());

    // Ten lifetimes: a refresh at 78 to 80 % of each token's lifetime (the default margin and
    // jitter), one token request each; twenty replicas on their own would make 250 or more.
    tokio::time::sleep(lifetime * 10).await;
    let fetched = fetches.load(Ordering::SeqCst);
    assert!((13..=15).contains(&fetched), "{fetched} token requests");
    let token = shared_token(&handles);
    assert_ne!(token, "token-0");
}

/// A store that fails every operation: each replica falls back to a token request of its own,
/// and no refresh fails.
#[derive(Clone, Default)]
struct FailingStore {
    /// When each read was tried: when each refresh began.
    reads: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl TokenStore for FailingStore {
    async fn read(&self, _: &str) -> Result<Option<Entry>, StoreError> {
        self.reads.lock().unwrap().push(Instant::now());
        Err(StoreError::new("down"))
    }
    async fn take_lease(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::new("down"))
    }
    async fn renew_lease(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::new("down"))
    }
    async fn release_lease(&self, _: &str, _: &str, _: Option<&str>) -> Result<bool, StoreError> {
        Err(StoreError::new("down"))
    }
    async fn store(&self, _: &str, _: &[u8], _: Duration, _: &str) -> Result<(), StoreError> {
        Err(StoreError::new("down"))
    }
    async fn compare_and_delete(&self, _: &str, _: &[u8]) -> Result<bool, StoreError> {
        Err(StoreError::new("down"))
    }
    async fn listen(&self, _: &str) -> Result<Listener, StoreError> {
        Err(StoreError::new("down"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_means_each_replica_fetches_its_own() {
    let cache = SharedCache::with_store(FailingStore::default());
    let fetches = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..5 {
        let replica = counted_replica(&cache, &fetches, Duration::ZERO, Duration::from_secs(60));
        handles.push(replica.start().await.expect("a token without the store"));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 5);
    for handle in &handles {
        assert!(access_token(handle).is_some());
    }
}

/// Without the store, a replica that still holds a usable token waits a random part of what
/// is left of it before its own token request; the new token's lifetime, and so the next
/// refresh point, counts from that request, not from when the refresh began. Otherwise every
/// refresh would come early by the previous delay, and a fleet without its store would
/// refresh more often than with it.
#[tokio::test(start_paused = true)]
async fn without_the_store_the_next_refresh_counts_from_the_delayed_request() {
    let store = FailingStore::default();
    // The store is tried at every refresh (no backoff), so each read marks a refresh's start.
    let cache = SharedCache::with_store(store.clone()).outage_backoff(Duration::ZERO);
    let lifetime = Duration::from_secs(100);
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    let replica = ClientCredentials::from_source(tower_client_credentials::source_fn(move || {
        recorded.lock().unwrap().push(Instant::now());
        async move {
            Ok(tower_client_credentials::IssuedToken::bearer(
                "alone", lifetime,
            ))
        }
    }))
    .shared_cache(cache, "orders-api")
    .build()
    .unwrap();
    let handle = replica.start().await.unwrap();
    tokio::time::sleep(lifetime * 20).await;
    drop(handle);

    let requests = requests.lock().unwrap().clone();
    let refreshes = store.reads.lock().unwrap().clone();
    assert!(requests.len() >= 20, "{} token requests", requests.len());
    let mut delayed = 0;
    for (request, (refresh, next)) in requests.iter().zip(refreshes.iter().zip(&refreshes[1..])) {
        // Each request comes within the margin after its refresh began: at most three
        // quarters of what the previous token had left, at most 22 s (its refresh margin,
        // jitter included) less its 1-s expiry margin...
        let delay = *request - *refresh;
        assert!(delay <= Duration::from_millis(15_750), "{delay:?}");
        if !delay.is_zero() {
            delayed += 1;
        }
        // ... and the next refresh begins 78 to 80 % of a lifetime after the request.
        let after = *next - *request;
        assert!(
            after >= lifetime.mul_f64(0.78) && after <= lifetime.mul_f64(0.80),
            "the next refresh {after:?} after the token request"
        );
    }
    // The first request has nothing to wait for; the others wait.
    assert!(
        delayed >= requests.len() - 2,
        "{delayed} of {}",
        requests.len()
    );
}

/// The in-memory store, observed: its reads are counted, and when `deaf` its publications
/// never arrive (its listeners stay open and silent, woken by nothing).
#[derive(Clone)]
struct Observed {
    inner: MemoryStore,
    reads: Arc<AtomicU64>,
    /// Kept, never sent on: the listeners of a deaf store.
    deaf: Option<Arc<tokio::sync::watch::Sender<()>>>,
}

impl Observed {
    fn new(deaf: bool) -> Self {
        Self {
            inner: MemoryStore::new(),
            reads: Arc::default(),
            deaf: deaf.then(|| Arc::new(tokio::sync::watch::channel(()).0)),
        }
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl TokenStore for Observed {
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(key)
    }
    fn take_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.take_lease(lease, holder, ttl)
    }
    fn renew_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.renew_lease(lease, holder, ttl)
    }
    fn release_lease(
        &self,
        lease: &str,
        holder: &str,
        wake: Option<&str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.release_lease(lease, holder, wake)
    }
    fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.inner.store(key, value, ttl, channel)
    }
    fn compare_and_delete(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.compare_and_delete(key, value)
    }
    /// A deaf store is never found already listening (as the store it replaced was not): a
    /// waiter listens after its first read, and reads once more.
    fn listening(&self, channel: &str) -> Option<Listener> {
        match &self.deaf {
            Some(_) => None,
            None => self.inner.listening(channel),
        }
    }
    async fn listen(&self, channel: &str) -> Result<Listener, StoreError> {
        match &self.deaf {
            Some(silence) => Ok(Listener::new(silence.subscribe())),
            None => self.inner.listen(channel).await,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn lost_publications_are_covered_by_the_fallback_poll() {
    let cache = SharedCache::with_store(Observed::new(true))
        .lease_timeout(Duration::from_secs(10))
        .poll_interval(Duration::from_secs(1));
    let fetches = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles = start_together(5, || {
        counted_replica(&cache, &fetches, Duration::from_secs(3), LIFETIME * 30)
    })
    .await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    shared_token(&handles);
    // The waiters found the token by polling, within one poll of its publication.
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A waiting replica adopts the token the holder's publication carries, without reading the
/// store again: at a refresh of twenty replicas, the holder reads twice (before and after
/// taking the lease) and every other replica once. The fallback poll is out of reach (30 s).
#[tokio::test(start_paused = true)]
async fn waiters_adopt_the_published_token_without_reading_it() {
    const REPLICAS: u64 = 20;
    let store = Observed::new(false);
    let cache = SharedCache::with_store(store.clone())
        .lease_timeout(Duration::from_secs(30))
        .poll_interval(Duration::from_secs(30));
    let fetches = Arc::new(AtomicU64::new(0));
    let lifetime = Duration::from_secs(60);
    let handles = start_together(REPLICAS as usize, || {
        counted_replica(&cache, &fetches, Duration::from_secs(2), lifetime)
    })
    .await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // At the cold start too: the holder's two reads, one for each waiter, and one more by the
    // first waiter, which began to listen only after its first read (a publication before
    // that would be missed; the others found the process already listening).
    assert_eq!(store.reads(), 2 + (REPLICAS - 1) + 1);

    // The refresh, at 78 to 80 % of the lifetime, within the holder's 2-s token request.
    let before = store.reads();
    tokio::time::sleep(lifetime.mul_f64(0.85)).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(shared_token(&handles), "token-1");
    assert_eq!(store.reads() - before, REPLICAS + 1);
}

/// Whether `listener` was woken within 5 s (`None`: not), and by a publication.
async fn published(listener: &mut Listener) -> Option<bool> {
    tokio::time::timeout(Duration::from_secs(5), listener.published())
        .await
        .ok()
}

/// The clients subscribed to a channel on the Redis at `url` (`sub=1` in `CLIENT LIST`).
async fn subscribers(url: &str) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut inspect(url).await)
        .await
        .unwrap();
    clients
        .lines()
        .filter(|line| line.contains(" sub=1"))
        .count()
}

/// In a cluster, waiters listen on the first node given; when it goes away, they listen on
/// another (a `PUBLISH` reaches every node) and are still woken by the holder's publication,
/// with the fallback poll far out of reach (60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn cluster_waiters_listen_on_another_node_when_theirs_goes_away() {
    const TEST: &str = "cluster_waiters_listen_on_another_node_when_theirs_goes_away";
    let mut cluster = RedisCluster::start(TEST);
    let urls = cluster.urls();
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let delay = Duration::from_millis(1500);
    auth.set_fault_plan(move |_| Some(Fault::delay(delay)));

    // Which node holds the token's slot (the hash tag, whatever the prefix): the node the
    // waiters listen on first must be another, so that the token stays readable without it.
    let probe = prefix("cluster-probe");
    let cache = |first: usize, prefix: &str| {
        let ordered: Vec<&str> = (0..urls.len())
            .map(|i| urls[(first + i) % urls.len()].as_str())
            .collect();
        RedisCache::cluster(ordered)
            .unwrap()
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .lease_timeout(Duration::from_secs(60))
            .poll_interval(Duration::from_secs(60))
    };
    replica(&auth, cache(0, &probe)).token().await.unwrap();
    let mut owner = None;
    for (node, url) in urls.iter().enumerate() {
        if !token_keys(&mut inspect(url).await, &probe).await.is_empty() {
            owner = Some(node);
        }
    }
    let owner = owner.expect("a node holds the token key");
    let first = (owner + 1) % urls.len();

    // One store for the process (clones share its pub/sub connection), a prefix per round.
    let base = cache(first, &prefix("cluster-pubsub"));
    let round = |prefix: String| {
        let cache = base.clone().prefix(prefix);
        let auth = &auth;
        async move {
            let before = auth.token_requests();
            let holder = replica(auth, cache.clone());
            let holder = tokio::spawn(async move { holder.token().await.unwrap() });
            eventually("the lease holder's token request", || {
                auth.token_requests() == before + 1
            })
            .await;
            let waiter = replica(auth, cache).token().await.unwrap();
            let holder = holder.await.unwrap();
            let (waiter, holder) = (waiter.access_token(), holder.access_token());
            assert_eq!(auth.token_requests(), before + 1, "only the holder fetched");
            assert_eq!(waiter, holder, "the waiter adopted the holder's token");
        }
    };

    round(prefix("cluster-round-1")).await;
    assert_eq!(
        subscribers(&urls[first]).await,
        1,
        "listening on the first node"
    );
    cluster.stop_node(first);
    // The pub/sub connection sees its node close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    round(prefix("cluster-round-2")).await;
    let elsewhere: usize = {
        let mut count = 0;
        for (node, url) in urls.iter().enumerate() {
            if node != first {
                count += subscribers(url).await;
            }
        }
        count
    };
    assert_eq!(elsewhere, 1, "listening on another node");
}

/// A Redis Cluster that speaks only TLS (`rediss://` node URLs, the cluster bus over TLS too):
/// replicas that trust its CA share one token through it, and listen for publications over
/// TLS; replicas that trust another CA fall back to a token request each, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH, or REDIS_URL: cargo test --all-features --test shared_cache -- --ignored"]
async fn a_rediss_cluster_shares_the_token() {
    const TEST: &str = "a_rediss_cluster_shares_the_token";
    let cluster = RedisCluster::start_tls(TEST);
    let urls = cluster.urls();
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let delay = Duration::from_millis(1000);
    auth.set_fault_plan(move |_| Some(Fault::delay(delay)));
    let cache = |ca: &str, prefix: &str| {
        RedisCache::cluster(urls.iter().map(String::as_str))
            .unwrap()
            .tls_root_certificates(cluster.pem(ca))
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .lease_timeout(Duration::from_secs(60))
            // Out of reach: the waiters get the token by its publication.
            .poll_interval(Duration::from_secs(60))
    };

    let trusted = cache("ca.crt", &prefix("rediss-cluster"));
    let holder = replica(&auth, trusted.clone());
    let holder = tokio::spawn(async move { holder.token().await.unwrap() });
    eventually("the lease holder's token request", || {
        auth.token_requests() == 1
    })
    .await;
    let mut waiting = JoinSet::new();
    for _ in 0..3 {
        let waiter = replica(&auth, trusted.clone());
        waiting.spawn(async move { waiter.token().await.unwrap() });
    }
    let holder = holder.await.unwrap();
    while let Some(waiter) = waiting.join_next().await {
        assert_eq!(waiter.unwrap().access_token(), holder.access_token());
    }
    assert_eq!(
        auth.token_requests(),
        1,
        "one token for the fleet, over TLS"
    );

    // A CA that signed nothing here: the certificate does not verify, each fetches its own.
    let untrusted = cache("other-ca.crt", &prefix("rediss-cluster-untrusted"));
    for i in 0..2 {
        let handle = replica(&auth, untrusted.clone());
        handle.token().await.expect("a token without the cache");
        assert_eq!(auth.token_requests(), 2 + i, "fetched alone");
    }
}
