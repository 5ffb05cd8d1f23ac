//! The built-in transport through an HTTP proxy on 127.0.0.1, written here with tokio: it
//! counts CONNECT tunnels and absolute-form requests, records `Proxy-Authorization`, and
//! forwards the bytes. The token endpoint is the embedded authorization server (plain http,
//! reached in absolute form) or, for `https`, a listener that records the first bytes of the
//! TLS handshake that came through the tunnel (the testkit has no TLS server, and the built-in
//! transport trusts only the system's roots). The proxies are given explicitly; the
//! environment is read in a child process, so that no test sets this process's environment.
//! Real sockets, so the clock runs; nothing asserts timing.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, copy_bidirectional},
    net::{TcpListener, TcpStream},
};
use tower_client_credentials::{ClientCredentials, ClientCredentialsBuilder, ConfigError, Proxies};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer};

/// `user:s3cret`, as the proxy receives it.
const BASIC_USER_S3CRET: &str = "Basic dXNlcjpzM2NyZXQ=";

/// What the proxy saw, one entry per connection.
#[derive(Debug, Default)]
struct Seen {
    /// The targets of CONNECT requests (`host:port`).
    tunnels: Vec<String>,
    /// The request lines of absolute-form requests.
    absolute: Vec<String>,
    /// `Proxy-Authorization` of each connection's first request.
    authorizations: Vec<Option<String>>,
}

struct TestProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl TestProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, recorder.clone()));
            }
        });
        Self { addr, seen }
    }

    /// The proxy's URL, with `user:s3cret` as its credentials.
    fn url(&self) -> String {
        format!("http://user:s3cret@{}", self.addr)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    fn connections(&self) -> usize {
        let seen = self.seen();
        seen.tunnels.len() + seen.absolute.len()
    }
}

/// Reads a request head (at most 16 KiB), records it, connects to its target and forwards
/// bytes both ways until either side closes.
async fn relay(mut client: TcpStream, seen: Arc<Mutex<Seen>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut upstream;
    if method == "CONNECT" {
        {
            let mut seen = seen.lock().unwrap();
            seen.tunnels.push(target.to_owned());
            seen.authorizations.push(authorization);
        }
        upstream = TcpStream::connect(target).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&head[end..]).await?;
    } else {
        let uri: http::Uri = target.parse().expect("an absolute-form target");
        {
            let mut seen = seen.lock().unwrap();
            seen.absolute.push(request_line.clone());
            seen.authorizations.push(authorization);
        }
        upstream = TcpStream::connect(uri.authority().expect("an authority").as_str()).await?;
        upstream.write_all(&head).await?;
    }
    copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn auth_server() -> MockAuthServer {
    let auth = MockAuthServer::new();
    auth.serve().await.unwrap();
    auth
}

fn builder(token_url: &str) -> ClientCredentialsBuilder {
    ClientCredentials::builder(token_url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
}

#[tokio::test]
async fn an_http_endpoint_is_reached_through_the_proxy_in_absolute_form() {
    let (auth, proxy) = (auth_server().await, TestProxy::start().await);
    let builder = builder(&auth.token_url()).proxies(Proxies::new().http(proxy.url()));
    let debug = format!("{builder:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    let handle = builder.build().unwrap().start().await.unwrap();
    assert!(handle.current().is_some());
    assert_eq!(auth.token_requests(), 1);
    let seen = proxy.seen();
    assert_eq!(
        seen.absolute,
        [format!("POST {} HTTP/1.1", auth.token_url())],
        "{seen:?}"
    );
    assert!(seen.tunnels.is_empty(), "{seen:?}");
    assert_eq!(seen.authorizations, [Some(BASIC_USER_S3CRET.to_owned())]);
}

#[tokio::test]
async fn an_https_endpoint_is_reached_through_a_connect_tunnel() {
    // The "endpoint": records the first bytes of each connection, then closes it.
    let endpoint = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint_addr = endpoint.local_addr().unwrap();
    let first_bytes = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let recorder = first_bytes.clone();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = endpoint.accept().await {
            let mut buf = [0; 16];
            let n = connection.read(&mut buf).await.unwrap_or(0);
            recorder.lock().unwrap().push(buf[..n].to_vec());
        }
    });
    let proxy = TestProxy::start().await;
    let error = builder(&format!("https://{endpoint_addr}/oauth/token"))
        .proxies(Proxies::new().https(proxy.url()))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    // No TLS server answers: the handshake fails, after it went through the tunnel.
    assert!(error.is_transient(), "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    let seen = proxy.seen();
    assert!(!seen.tunnels.is_empty(), "{seen:?}");
    assert!(
        seen.tunnels
            .iter()
            .all(|target| *target == endpoint_addr.to_string()),
        "{seen:?}"
    );
    assert!(seen.absolute.is_empty(), "{seen:?}");
    assert!(
        seen.authorizations
            .iter()
            .all(|value| value.as_deref() == Some(BASIC_USER_S3CRET)),
        "{seen:?}"
    );
    // A TLS handshake record (0x16) and version 3.x came out of the tunnel.
    let first_bytes = first_bytes.lock().unwrap();
    assert!(!first_bytes.is_empty());
    assert!(
        first_bytes
            .iter()
            .all(|bytes| bytes.starts_with(&[0x16, 0x03])),
        "{first_bytes:?}"
    );
}

#[tokio::test]
async fn hosts_in_no_proxy_bypass_the_proxy() {
    let (auth, proxy) = (auth_server().await, TestProxy::start().await);
    builder(&auth.token_url())
        .proxies(
            Proxies::new()
                .all(proxy.url())
                .no_proxy("example.com, 127.0.0.0/8"),
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(proxy.connections(), 0);

    // The same without the bypass goes through the proxy: the test above can fail.
    builder(&auth.token_url())
        .proxies(Proxies::new().all(proxy.url()).no_proxy("example.com"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(proxy.connections(), 1);
}

#[tokio::test]
async fn a_client_of_ones_own_ignores_the_proxy_options() {
    let (auth, proxy) = (auth_server().await, TestProxy::start().await);
    builder(&auth.token_url())
        // Malformed, and not even checked: the client below has its own settings.
        .proxies(Proxies::new().all("http://user:s3cret@bad host"))
        .http_client(auth.service())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(proxy.connections(), 0);
}

#[test]
fn a_malformed_proxy_is_a_build_error_that_does_not_quote_it() {
    let error = builder("https://auth.example/oauth/token")
        .proxies(Proxies::new().https("http://user:s3cret@bad host:3128"))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::InvalidProxy {
                setting: "Proxies::https",
                ..
            }
        ),
        "{error:?}"
    );
    let (display, debug) = (error.to_string(), format!("{error:?}"));
    assert!(
        !display.contains("s3cret") && !debug.contains("s3cret"),
        "{debug}"
    );
}

/// The proxy variables this process may have inherited: removed from the children's
/// environment so that only the ones a test sets apply.
const PROXY_VARIABLES: [&str; 9] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

/// Runs the ignored test `name` of this binary in a child process with `env` as its only
/// proxy variables, and panics with its output unless it passed.
async fn run_child(name: &str, env: &[(&str, String)]) {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command.args([name, "--exact", "--ignored", "--nocapture"]);
    for variable in PROXY_VARIABLES {
        command.env_remove(variable);
    }
    command.envs(env.iter().map(|(name, value)| (name, value)));
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_environment_is_read_at_build_unless_turned_off() {
    let (auth, proxy) = (auth_server().await, TestProxy::start().await);
    run_child(
        "child_three_builds_with_http_proxy_set",
        &[
            // The lower-case form, with an upper-case `NO_PROXY` that does not match.
            ("http_proxy", proxy.url()),
            ("NO_PROXY", "example.com".to_owned()),
            ("TEST_TOKEN_URL", auth.token_url()),
        ],
    )
    .await;
    // Three token requests, of which only the first, from the environment, used the proxy.
    assert_eq!(auth.token_requests(), 3);
    {
        let seen = proxy.seen();
        assert_eq!(seen.absolute.len(), 1, "{seen:?}");
        assert_eq!(seen.authorizations, [Some(BASIC_USER_S3CRET.to_owned())]);
    }

    run_child(
        "child_a_malformed_https_proxy_fails_build",
        &[("HTTPS_PROXY", "http://user:s3cret@bad host".to_owned())],
    )
    .await;
}

#[tokio::test]
#[ignore = "run by `the_environment_is_read_at_build_unless_turned_off` in a child process"]
async fn child_three_builds_with_http_proxy_set() {
    let url = std::env::var("TEST_TOKEN_URL").expect("run by its parent test");
    assert!(
        std::env::var_os("http_proxy").is_some(),
        "run by its parent test"
    );
    for builder in [
        builder(&url),
        builder(&url).proxy_from_env(false),
        // Explicit proxies (here: none) replace the environment's.
        builder(&url).proxies(Proxies::new()),
    ] {
        builder.build().unwrap().start().await.unwrap();
    }
}

#[test]
#[ignore = "run by `the_environment_is_read_at_build_unless_turned_off` in a child process"]
fn child_a_malformed_https_proxy_fails_build() {
    assert!(
        std::env::var_os("HTTPS_PROXY").is_some(),
        "run by its parent test"
    );
    let error = builder("https://auth.example/oauth/token")
        .build()
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            ConfigError::InvalidProxy {
                setting: "HTTPS_PROXY",
                ..
            }
        ),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    // Turned off, the variable is not read.
    builder("https://auth.example/oauth/token")
        .proxy_from_env(false)
        .build()
        .unwrap();
}
