//! The authorization server under test: `node tests/interop/server.mjs` (oidc-provider), one
//! process per test, killed when its [`AuthServer`] guard is dropped.
//!
//! The server is started with `LOG_REQUESTS=1`, so it writes one stderr line per request
//! (`interop-as: POST /token -> 200`). The guard drains stderr into memory (a full pipe would
//! freeze Node), counts those lines for the tests ([`AuthServer::logged`]), and prints them
//! only when the test fails.
//!
//! The load test runs alone ([`AuthServer::start_alone`]): it waits until no other test holds
//! a server, and no other test starts one until it is done. Its figures (requests per second)
//! are then its own, not shared with whatever else libtest runs on the other thread.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::Notify,
};

use tower_client_credentials_testkit::keys::TestKey;

use crate::real_servers::http::{HttpClient, http_client, send_form};

/// The oidc-provider version the suite is written against (pinned in `package-lock.json`).
const OIDC_PROVIDER_VERSION: &str = "9.13.";

/// The oldest Node.js that runs oidc-provider 9.13: it calls `URL.parse` (Node 20.18) and
/// `crypto.hash` (Node 20.12). Debian 12's Node 18 fails at startup.
const MIN_NODE: (u64, u64) = (20, 18);

/// How long Node may take to print `READY` on a loaded machine (it takes about 0.25 s).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `tests/interop`.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The Node.js binary: `INTEROP_NODE` if set, else `node` on `PATH`.
fn node_binary() -> String {
    std::env::var("INTEROP_NODE").unwrap_or_else(|_| "node".to_owned())
}

/// `Err(reason)` when Node.js or the npm packages are missing. Checked once per process.
fn prerequisites() -> &'static Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let node = node_binary();
        let output = std::process::Command::new(&node)
            .arg("--version")
            .output()
            .map_err(|e| {
                format!("cannot run `{node} --version` ({e}): Node.js is not installed")
            })?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let mut parts = version
            .trim_start_matches('v')
            .split('.')
            .map(|n| n.parse::<u64>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if !output.status.success() || found < MIN_NODE {
            return Err(format!(
                "`{node} --version` says {version:?}; oidc-provider 9.13 needs Node.js >= {}.{}",
                MIN_NODE.0, MIN_NODE.1
            ));
        }
        let package = interop_dir().join("node_modules/oidc-provider/package.json");
        let manifest = std::fs::read_to_string(&package).map_err(|_| {
            format!(
                "{} is missing: run `npm ci` in tests/interop",
                package.display()
            )
        })?;
        let installed: serde_json::Value =
            serde_json::from_str(&manifest).map_err(|e| format!("{}: {e}", package.display()))?;
        let installed = installed["version"].as_str().unwrap_or_default();
        if !installed.starts_with(OIDC_PROVIDER_VERSION) {
            return Err(format!(
                "tests/interop/node_modules has oidc-provider {installed:?}, expected \
                 {OIDC_PROVIDER_VERSION}x: run `npm ci` in tests/interop"
            ));
        }
        Ok(())
    })
}

/// A running oidc-provider. Killed on drop.
pub(crate) struct AuthServer {
    issuer: String,
    log: Arc<Log>,
    client: HttpClient,
    _stdin: ChildStdin,
    _child: Child,
    /// Dropped after the child is killed (fields drop in order).
    _turn: Turn,
}

/// Who holds servers: how many shared ones, and whether a test runs alone.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Notify,
}

#[derive(Default)]
struct GateState {
    shared: usize,
    alone: bool,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(Gate::default)
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `ready` holds, then applies `take`, under the lock.
    async fn enter(&self, ready: fn(&GateState) -> bool, take: fn(&mut GateState)) {
        loop {
            // Registered before the check, so a release in between is not missed.
            let changed = self.changed.notified();
            {
                let mut state = self.state();
                if ready(&state) {
                    take(&mut state);
                    return;
                }
            }
            changed.await;
        }
    }
}

/// A test's place at the [`Gate`], given back on drop.
///
/// A test may hold several shared turns (two providers); a lone turn waits for none to be
/// held, and shared turns wait only while a test runs alone, so this cannot deadlock.
enum Turn {
    Shared,
    Alone,
}

impl Turn {
    async fn take(alone: bool) -> Self {
        if alone {
            gate()
                .enter(|s| !s.alone && s.shared == 0, |s| s.alone = true)
                .await;
            Self::Alone
        } else {
            gate().enter(|s| !s.alone, |s| s.shared += 1).await;
            Self::Shared
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let gate = gate();
        {
            let mut state = gate.state();
            match self {
                Self::Shared => state.shared -= 1,
                Self::Alone => state.alone = false,
            }
        }
        gate.changed.notify_waiters();
    }
}

#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Notify,
}

impl Log {
    fn count(&self, needle: &str) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().filter(|line| line.contains(needle)).count()
    }

    fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

/// The `kid` under which the provider holds `pkjwt-client`'s public key.
pub(crate) const PKJWT_KID: &str = "tcc-pkjwt-es256-1";

/// `pkjwt-client`'s key pair, made by this test process; every provider it starts holds the
/// public half (`PKJWT_JWKS`), unless a test passes its own.
pub(crate) fn pkjwt_key_pair() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(TestKey::new_p256)
}

fn pkjwt_jwks() -> String {
    let mut jwk = pkjwt_key_pair().public_jwk();
    jwk["kid"] = PKJWT_KID.into();
    serde_json::json!({ "keys": [jwk] }).to_string()
}

impl AuthServer {
    /// Starts a server with `env` on top of `PORT=0 LOG_REQUESTS=1`.
    ///
    /// # Panics
    ///
    /// When Node.js or the npm packages are missing: the tests that call this are `ignore`d, so
    /// a run that includes them asked for them.
    pub(crate) async fn start(test: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(test, env, false).await
    }

    /// [`start`](Self::start) for a test that must run alone (the load test): waits until
    /// the servers of other tests are gone, and keeps new ones from starting while it lives.
    /// Tests that start after it wait for it, so it is best named to sort last (libtest starts
    /// tests in name order).
    pub(crate) async fn start_alone(test: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(test, env, true).await
    }

    async fn start_with(test: &str, env: &[(&str, &str)], alone: bool) -> Self {
        if let Err(reason) = prerequisites() {
            panic!(
                "interop test `{test}`: {reason}. Install Node.js >= {}.{} and run `npm ci` in \
                 tests/interop, or run `tests/interop/run.sh` (see tests/interop/README.md)",
                MIN_NODE.0, MIN_NODE.1
            );
        }
        let turn = Turn::take(alone).await;
        let mut command = Command::new(node_binary());
        command
            .arg("server.mjs")
            .current_dir(interop_dir())
            .env("PORT", "0")
            .env("LOG_REQUESTS", "1")
            .env("EXIT_ON_STDIN_CLOSE", "1")
            .env("PKJWT_JWKS", pkjwt_jwks())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .expect("spawn node tests/interop/server.mjs");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let log = Arc::new(Log::default());
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
                sink.grew.notify_waiters();
            }
        });

        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        let read = tokio::time::timeout(STARTUP_TIMEOUT, stdout.read_line(&mut first)).await;
        let issuer = match read {
            Ok(Ok(_)) => first.trim().strip_prefix("READY ").map(str::to_owned),
            _ => None,
        };
        let Some(issuer) = issuer else {
            // Give the drain task a moment to collect the reason.
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "interop authorization server did not print `READY <issuer>` (got {first:?}); \
                 its stderr:\n{}",
                log.text()
            );
        };
        assert!(issuer.starts_with("http://127.0.0.1:"), "issuer {issuer}");
        Self {
            issuer,
            log,
            client: http_client(),
            _stdin: stdin,
            _child: child,
            _turn: turn,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint.
    pub(crate) fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// How many stderr lines contain `needle`, once every request answered so far is logged.
    ///
    /// The server logs a request before it sends the response, so after our own discovery
    /// request's line shows up, every earlier request's line is there too.
    pub(crate) async fn logged(&self, needle: &str) -> usize {
        const DISCOVERY: &str = "GET /.well-known/openid-configuration -> 200";
        let before = self.log.count(DISCOVERY);
        let (status, _, _) = self
            .send(Method::GET, "/.well-known/openid-configuration", None, &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        let synced = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let grew = self.log.grew.notified();
                if self.log.count(DISCOVERY) > before {
                    return;
                }
                grew.await;
            }
        })
        .await;
        assert!(
            synced.is_ok(),
            "the server never logged our discovery request"
        );
        self.log.count(needle)
    }

    /// Token requests the server answered with 200.
    pub(crate) async fn tokens_issued(&self) -> usize {
        self.logged("POST /token -> 200").await
    }

    /// A request of our own to `path`: a form body, and Basic credentials (RFC 6749 §2.3.1
    /// encoding) when `basic` is given. Returns the status, headers and body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.send_with_headers(method, path, basic, form, &[]).await
    }

    /// [`send`](Self::send) with extra request headers (such as `DPoP`).
    pub(crate) async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let url = format!("{}{path}", self.issuer);
        send_form(&self.client, method, &url, basic, form, headers).await
    }

    /// A token straight from the token endpoint (not through the crate), as JSON.
    pub(crate) async fn raw_token(
        &self,
        client: (&str, &str),
        extra: &[(&str, &str)],
    ) -> serde_json::Value {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        let (status, _, body) = self.send(Method::POST, "/token", Some(client), &form).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("token response JSON")
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- interop authorization server {} stderr ---\n{}\n---",
                self.issuer,
                self.log.text()
            );
        }
    }
}
