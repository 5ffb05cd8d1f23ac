//! The token endpoint's answers, one row each: what the server sends, and what a caller of
//! `ClientCredentials::start()` and a request through the layer must see. In memory, on the
//! paused clock.

use std::{
    future::IntoFuture,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::time::Instant;
use tower::Layer;
use tower_client_credentials::{
    BearerAuthLayer, ClientCredentialsBuilder, TokenError, TokenUnavailable,
};
use tower_client_credentials_testkit::{Fault, MockAuthServer};

use crate::{
    common,
    support::{
        Recorder, SECOND, Schedule, assert_error_has_no_secret, assert_no_secret, call, chain_text,
        display_chain, refreshes_allowed,
    },
};

/// The token request timeout of every row.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The lifetime assumed for a token whose response says nothing about it.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(42);
/// How long a request waits for a token (the builder's default).
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How long each row watches the refresher at work against the faulty endpoint.
const WINDOW: Duration = Duration::from_secs(120);
/// The longest lifetime the crate gives a token, whatever the server says.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One fault of the token endpoint and what it must lead to.
struct Row {
    name: &'static str,
    fault: Fault,
    expect: Expect,
    /// Access tokens in the fault's body, which no error may show.
    tokens: Vec<String>,
}

enum Expect {
    /// The token request fails.
    Err(Failure),
    /// The answer is usable after all: the token, and the lifetime given to it.
    Ok { token: String, lifetime: Duration },
}

/// What a failed token request must look like.
#[derive(Clone)]
struct Failure {
    /// `TokenError::kind()`.
    kind: &'static str,
    transient: bool,
    status: Option<u16>,
    oauth: Option<&'static str>,
    /// The range `TokenError::retry_after()` must fall in.
    retry_after: Option<(Duration, Duration)>,
    /// Substrings the error's `Display` must contain: the status, the OAuth code, or what was
    /// malformed.
    says: Vec<&'static str>,
    /// How long one attempt takes before it fails.
    attempt_time: Duration,
}

fn fails(kind: &'static str, transient: bool, says: &[&'static str]) -> Failure {
    Failure {
        kind,
        transient,
        status: None,
        oauth: None,
        retry_after: None,
        says: says.to_vec(),
        attempt_time: Duration::ZERO,
    }
}

impl Failure {
    fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    fn oauth(mut self, code: &'static str) -> Self {
        self.oauth = Some(code);
        self
    }

    fn retry_after(mut self, low: Duration, high: Duration) -> Self {
        self.retry_after = Some((low, high));
        self
    }

    fn takes(mut self, attempt_time: Duration) -> Self {
        self.attempt_time = attempt_time;
        self
    }

    fn check(&self, row: &str, error: &TokenError, tokens: &[String]) {
        // What a report that walks `source()` prints (`anyhow`'s `{:#}`).
        let text = display_chain(error);
        assert_eq!(error.kind(), self.kind, "[{row}] {text}");
        assert_eq!(error.is_transient(), self.transient, "[{row}] {text}");
        assert_eq!(
            error.status().map(|s| s.as_u16()),
            self.status,
            "[{row}] {text}"
        );
        assert_eq!(error.oauth_error(), self.oauth, "[{row}] {text}");
        match (self.retry_after, error.retry_after()) {
            (None, None) => {}
            (Some((low, high)), Some(got)) if low <= got && got <= high => {}
            (expected, got) => panic!("[{row}] retry_after {got:?}, expected {expected:?}"),
        }
        for needle in &self.says {
            assert!(
                text.contains(needle),
                "[{row}] {text:?} does not say {needle:?}"
            );
        }
        assert_error_has_no_secret(row, error, tokens);
    }
}

fn ok(token: &str, lifetime: Duration) -> Expect {
    Expect::Ok {
        token: token.to_owned(),
        lifetime,
    }
}

fn row(name: &'static str, fault: Fault, expect: Expect) -> Row {
    let tokens = match &expect {
        Expect::Ok { token, .. } => vec![token.clone()],
        Expect::Err(_) => Vec::new(),
    };
    Row {
        name,
        fault,
        expect,
        tokens,
    }
}

fn row_err(name: &'static str, fault: Fault, failure: Failure) -> Row {
    row(name, fault, Expect::Err(failure))
}

impl Row {
    /// Marks `token`, which the fault's body carries, as a secret.
    fn hiding(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }
}

/// A `200 OK` JSON body.
fn body(json: impl Into<Bytes>) -> Fault {
    Fault::json(StatusCode::OK, json)
}

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap()))
        .collect()
}

/// A compact JWT with `claims` (unsigned, as far as the client can tell).
fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A real gzip member (one stored deflate block) of `data`.
fn gzip(data: &[u8]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0_u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let len = u16::try_from(data.len()).expect("one stored block");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(1); // final stored block
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn rows() -> Vec<Row> {
    use StatusCode as S;
    let good =
        r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":60}"#;
    let retry_date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let big = {
        let mut big = br#"{"access_token":""#.to_vec();
        big.resize(10 << 20, b'a');
        big.extend_from_slice(br#"","token_type":"Bearer"}"#);
        Bytes::from(big)
    };
    let expired_jwt = jwt(&format!(
        r#"{{"sub":"demo-client","exp":{}}}"#,
        unix_now() - 60
    ));
    let bad_base64_jwt = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9!!.c2ln".to_owned();

    vec![
        // Status codes.
        row_err(
            "500 with an empty body",
            Fault::status(S::INTERNAL_SERVER_ERROR),
            fails("http_status", true, &["HTTP 500", "empty body"]).status(500),
        ),
        row_err(
            "502 HTML page from a proxy",
            Fault::html(S::BAD_GATEWAY, "<html><h1>502 Bad Gateway</h1></html>"),
            fails("http_status", true, &["HTTP 502", "text/html", "Bad Gateway"]).status(502),
        ),
        row_err(
            "503 with Retry-After: 2",
            Fault::response(
                S::SERVICE_UNAVAILABLE,
                headers(&[(header::RETRY_AFTER, "2")]),
                "",
            ),
            fails("http_status", true, &["HTTP 503"])
                .status(503)
                .retry_after(2 * SECOND, 2 * SECOND),
        ),
        row_err(
            "503 with Retry-After as an HTTP date 30 s ahead",
            Fault::response(
                S::SERVICE_UNAVAILABLE,
                headers(&[(header::RETRY_AFTER, &retry_date)]),
                "",
            ),
            fails("http_status", true, &["HTTP 503"])
                .status(503)
                .retry_after(28 * SECOND, 30 * SECOND),
        ),
        row_err(
            "429 with Retry-After: 7",
            Fault::response(
                S::TOO_MANY_REQUESTS,
                headers(&[(header::RETRY_AFTER, "7")]),
                "",
            ),
            fails("http_status", true, &["HTTP 429"])
                .status(429)
                .retry_after(7 * SECOND, 7 * SECOND),
        ),
        row_err(
            "429 without Retry-After",
            Fault::status(S::TOO_MANY_REQUESTS),
            fails("http_status", true, &["HTTP 429"]).status(429),
        ),
        row_err(
            "429 slow_down OAuth error",
            Fault::oauth_error(S::TOO_MANY_REQUESTS, "slow_down", "too many requests"),
            fails("oauth", true, &["`slow_down`", "HTTP 429"])
                .status(429)
                .oauth("slow_down"),
        ),
        row_err(
            "408 request timeout",
            Fault::status(S::REQUEST_TIMEOUT),
            fails("http_status", true, &["HTTP 408"]).status(408),
        ),
        row_err(
            "400 invalid_request",
            Fault::oauth_error(S::BAD_REQUEST, "invalid_request", "grant_type is missing"),
            fails(
                "oauth",
                false,
                &["`invalid_request`", "HTTP 400", "grant_type is missing"],
            )
            .status(400)
            .oauth("invalid_request"),
        ),
        row_err(
            "400 invalid_scope",
            Fault::oauth_error(S::BAD_REQUEST, "invalid_scope", "scope admin is not allowed"),
            fails("oauth", false, &["`invalid_scope`", "HTTP 400", "admin"])
                .status(400)
                .oauth("invalid_scope"),
        ),
        row_err(
            "400 temporarily_unavailable",
            Fault::oauth_error(S::BAD_REQUEST, "temporarily_unavailable", "maintenance"),
            fails("oauth", true, &["`temporarily_unavailable`", "HTTP 400"])
                .status(400)
                .oauth("temporarily_unavailable"),
        ),
        row_err(
            "401 invalid_client with WWW-Authenticate",
            Fault::oauth_error(S::UNAUTHORIZED, "invalid_client", "unknown client")
                .with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="token", charset="UTF-8""#),
                ),
            fails("oauth", false, &["`invalid_client`", "HTTP 401"])
                .status(401)
                .oauth("invalid_client"),
        ),
        row_err(
            "401 invalid_client without WWW-Authenticate",
            Fault::oauth_error(S::UNAUTHORIZED, "invalid_client", "unknown client"),
            fails("oauth", false, &["`invalid_client`", "HTTP 401"])
                .status(401)
                .oauth("invalid_client"),
        ),
        row_err(
            "401 with only WWW-Authenticate and no body",
            Fault::status(S::UNAUTHORIZED).with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="token""#),
            ),
            fails("http_status", false, &["HTTP 401"]).status(401),
        ),
        row_err(
            "403 forbidden",
            Fault::raw(S::FORBIDDEN, "Forbidden"),
            fails("http_status", false, &["HTTP 403", "Forbidden"]).status(403),
        ),
        row_err(
            "404 not found",
            Fault::html(S::NOT_FOUND, "<html>Not Found</html>"),
            fails("http_status", false, &["HTTP 404", "text/html"]).status(404),
        ),
        row_err(
            "302 redirect",
            Fault::status(S::FOUND).with_header(
                header::LOCATION,
                HeaderValue::from_static("https://login.example/token?client_secret=x"),
            ),
            fails("redirect", false, &["HTTP 302", "https://login.example", "redirect"])
                .status(302),
        ),
        // Bodies that are not a token response.
        row_err(
            "HTML error page with status 200",
            Fault::html(S::OK, "<html><body>Sign in to continue</body></html>"),
            fails(
                "invalid_response",
                false,
                &["HTTP 200", "not valid JSON", "text/html"],
            )
            .status(200),
        ),
        row_err(
            "empty body",
            body(""),
            fails("invalid_response", false, &["the body is empty"]).status(200),
        ),
        row_err(
            "truncated JSON",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_ty"#),
            fails("invalid_response", false, &["not valid JSON"]).status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "JSON array",
            body(format!("[{good}]")),
            fails("invalid_response", false, &["expected a JSON object, found an array"])
                .status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "OAuth error object with status 200",
            body(r#"{"error":"invalid_client","error_description":"bad secret"}"#),
            fails("oauth", false, &["`invalid_client`", "HTTP 200"])
                .status(200)
                .oauth("invalid_client"),
        ),
        row_err(
            "access_token missing",
            body(r#"{"token_type":"Bearer","expires_in":60}"#),
            fails("invalid_response", false, &["`access_token` is missing"]).status(200),
        ),
        row_err(
            "access_token empty",
            body(r#"{"access_token":"","token_type":"Bearer","expires_in":60}"#),
            fails("invalid_response", false, &["`access_token` is empty"]).status(200),
        ),
        row_err(
            "access_token null",
            body(r#"{"access_token":null,"token_type":"Bearer","expires_in":60}"#),
            fails("invalid_response", false, &["`access_token` is null"]).status(200),
        ),
        row_err(
            "access_token a number",
            body(r#"{"access_token":12345678901234,"token_type":"Bearer","expires_in":60}"#),
            fails("invalid_response", false, &["`access_token` is a number"]).status(200),
        )
        .hiding("12345678901234"),
        row_err(
            "access_token with a newline",
            body(r#"{"access_token":"opaque-token\nX-Injected: 1","token_type":"Bearer"}"#),
            fails(
                "invalid_response",
                false,
                &["`access_token`", "not allowed in an HTTP header"],
            )
            .status(200),
        )
        .hiding("X-Injected"),
        row_err(
            "access_token with a NUL byte",
            body(r#"{"access_token":"opaque-token\u0000tail-0123","token_type":"Bearer"}"#),
            fails("invalid_response", false, &["not allowed in an HTTP header"]).status(200),
        )
        .hiding("tail-0123"),
        row_err(
            "access_token with a DEL byte",
            body(r#"{"access_token":"opaque-token\u007ftail-0123","token_type":"Bearer"}"#),
            fails("invalid_response", false, &["not allowed in an HTTP header"]).status(200),
        )
        .hiding("tail-0123"),
        row_err(
            "access_token with non-ASCII text",
            body(r#"{"access_token":"opaque-tökén-0123","token_type":"Bearer"}"#),
            fails("invalid_response", false, &["not allowed in an HTTP header"]).status(200),
        )
        .hiding("opaque-tökén-0123"),
        row_err(
            "access_token with a space",
            body(r#"{"access_token":"opaque token-0123","token_type":"Bearer"}"#),
            fails("invalid_response", false, &["not allowed in an HTTP header"]).status(200),
        )
        .hiding("opaque token-0123"),
        // token_type.
        row(
            "token_type missing (taken as Bearer)",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","expires_in":60}"#),
            ok("opaque-token-0123456789abcdef", 60 * SECOND),
        ),
        row(
            "token_type lowercase bearer",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"bearer","expires_in":60}"#),
            ok("opaque-token-0123456789abcdef", 60 * SECOND),
        ),
        row_err(
            "token_type mac",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"mac","expires_in":60}"#),
            fails("unsupported_token_type", false, &["`mac`", "only `Bearer`"]),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "token_type DPoP",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"DPoP","expires_in":60}"#),
            fails("unsupported_token_type", false, &["DPoP-bound token", "ClientCredentialsBuilder::dpop"]),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "token_type a number",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":1,"expires_in":60}"#),
            fails("invalid_response", false, &["`token_type` is a number"]).status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
        // expires_in.
        row_err(
            "expires_in negative",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":-5}"#),
            fails("invalid_response", false, &["`expires_in` is negative"]).status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "expires_in zero",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":0}"#),
            fails("invalid_response", false, &["`expires_in` is 0"]).status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row(
            "expires_in fractional",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":1.5}"#),
            ok("opaque-token-0123456789abcdef", Duration::from_millis(1500)),
        ),
        row(
            "expires_in 1e30",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":1e30}"#),
            ok("opaque-token-0123456789abcdef", MAX_LIFETIME),
        ),
        row(
            "expires_in beyond u64",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":18446744073709551616}"#),
            ok("opaque-token-0123456789abcdef", MAX_LIFETIME),
        ),
        row(
            "expires_in a numeric string",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":"90"}"#),
            ok("opaque-token-0123456789abcdef", 90 * SECOND),
        ),
        row_err(
            "expires_in a string that is not a number",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":"one hour"}"#),
            fails("invalid_response", false, &["`expires_in`", "not a number"]).status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "expires_in a boolean",
            body(r#"{"access_token":"opaque-token-0123456789abcdef","token_type":"Bearer","expires_in":true}"#),
            fails("invalid_response", false, &["`expires_in` is a boolean"]).status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
        // JWT access tokens without expires_in: the lifetime comes from `exp`.
        row(
            "JWT with a bad base64 segment (taken as opaque)",
            body(format!(r#"{{"access_token":"{bad_base64_jwt}","token_type":"Bearer"}}"#)),
            ok(&bad_base64_jwt, DEFAULT_LIFETIME),
        ),
        row_err(
            "JWT whose exp is already past",
            body(format!(r#"{{"access_token":"{expired_jwt}","token_type":"Bearer"}}"#)),
            fails("invalid_response", false, &["already expired"]).status(200),
        )
        .hiding(expired_jwt.clone()),
        // Size, progress and encoding of the body.
        row_err(
            "10 MiB body",
            body(big),
            fails("body_too_large", false, &["65536 bytes"]),
        )
        .hiding("a".repeat(64)),
        row_err(
            "body that never finishes",
            Fault::stall_body(r#"{"access_token":"opaque-token-0123456789abcdef","#),
            fails("timeout", true, &["did not complete within 2s"]).takes(TIMEOUT),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "endpoint that never answers",
            Fault::hang(),
            fails("timeout", true, &["did not complete within 2s"]).takes(TIMEOUT),
        ),
        row_err(
            "body cut off mid-way",
            Fault::abort_body(r#"{"access_token":"opaque-token-0123456789abcdef","#),
            fails("transport", true, &["token request failed", "aborted"]),
        )
        .hiding("opaque-token-0123456789abcdef"),
        row_err(
            "gzip body labelled as JSON",
            body(gzip(good.as_bytes())),
            fails("invalid_response", false, &["gzip"]).status(200),
        )
        .hiding("opaque-token-0123456789abcdef"),
    ]
}

fn builder(auth: &MockAuthServer) -> ClientCredentialsBuilder {
    common::builder(auth)
        .timeout(TIMEOUT)
        .default_lifetime(DEFAULT_LIFETIME)
}

/// Every token the server issued, and the row's own.
fn secrets(row: &Row, auth: &MockAuthServer) -> Vec<String> {
    let mut tokens = row.tokens.clone();
    tokens.extend(auth.tokens().into_iter().map(|t| t.access_token));
    tokens
}

/// The row through `ClientCredentials::start()`: the first token request meets the fault.
async fn through_start(row: &Row) -> String {
    let auth = MockAuthServer::new();
    auth.fail_next(1, row.fault.clone());
    let started = Instant::now();
    let result = builder(&auth).build().unwrap().start().await;
    let waited = started.elapsed();
    assert_eq!(auth.token_requests(), 1, "[{}]", row.name);
    match (&row.expect, result) {
        (Expect::Err(failure), Err(error)) => {
            assert!(
                waited <= failure.attempt_time,
                "[{}] start() took {waited:?}",
                row.name
            );
            failure.check(row.name, &error, &secrets(row, &auth));
            format!(
                "{}, transient: {}: {error}",
                error.kind(),
                error.is_transient()
            )
        }
        (Expect::Ok { token, lifetime }, Ok(handle)) => {
            assert_eq!(waited, Duration::ZERO, "[{}]", row.name);
            let current = handle.current().expect("a token");
            assert_eq!(current.access_token(), token, "[{}]", row.name);
            assert_eq!(current.lifetime(), *lifetime, "[{}]", row.name);
            assert_no_secret(
                row.name,
                &format!("{handle:?} {current:?}"),
                std::slice::from_ref(token),
            );
            format!("ok, lifetime {lifetime:?}")
        }
        (Expect::Err(_), Ok(_)) => panic!("[{}] start() succeeded", row.name),
        (Expect::Ok { .. }, Err(error)) => panic!("[{}] start() failed: {error}", row.name),
    }
}

/// The row through the layer, with the endpoint failing every time for `WINDOW`, then healed.
async fn through_layer(row: &Row) {
    let name = row.name;
    let auth = MockAuthServer::new();
    let fault = row.fault.clone();
    auth.set_fault_plan(move |_| Some(fault.clone()));
    let (handle, refresher) = builder(&auth).build().unwrap().into_parts();
    let refresher = tokio::spawn(refresher.into_future());
    let recorder = Recorder::default();
    let service = BearerAuthLayer::new(handle.clone()).layer(recorder.clone());
    let start = Instant::now();

    match &row.expect {
        Expect::Err(failure) => {
            // A request every 10 s: each gets a typed error naming the failure, within the wait.
            let mut requests = tokio::task::JoinSet::new();
            for i in 0..12 {
                let service = service.clone();
                requests.spawn(async move {
                    tokio::time::sleep_until(start + 10 * SECOND * i).await;
                    let sent = Instant::now();
                    (call(&service).await, sent.elapsed())
                });
            }

            // The number of token requests stays within the backoff schedule.
            tokio::time::sleep_until(start + WINDOW).await;
            let (fewest, most) = Schedule::DEFAULT.attempts_allowed(
                WINDOW,
                failure.transient,
                failure.retry_after,
                failure.attempt_time,
            );
            let attempts = auth.token_requests();
            assert!(
                (fewest..=most).contains(&attempts),
                "[{name}] {attempts} token requests in {WINDOW:?}, allowed {fewest}..={most}"
            );

            while let Some(joined) = requests.join_next().await {
                let (result, waited) = joined.unwrap();
                assert!(waited <= MAX_WAIT, "[{name}] a request waited {waited:?}");
                let error = result.expect_err(name);
                let unavailable = error
                    .downcast_ref::<TokenUnavailable>()
                    .unwrap_or_else(|| panic!("[{name}] not TokenUnavailable: {error:?}"));
                assert_eq!(unavailable.is_transient(), failure.transient, "[{name}]");
                let cause = unavailable
                    .token_error()
                    .unwrap_or_else(|| panic!("[{name}] no cause: {unavailable:?}"));
                failure.check(name, cause, &secrets(row, &auth));
                assert_no_secret(name, &chain_text(&*error), &secrets(row, &auth));
            }
            assert_eq!(
                recorder.requests(),
                0,
                "[{name}] a request went out without a token"
            );

            // The refresher is alive, knows what failed, and shows no secret.
            let status = handle.status();
            assert!(status.running && !refresher.is_finished(), "[{name}]");
            assert!(status.next_attempt_in.is_some(), "[{name}]");
            let (last_error, _) = status.last_error.clone().expect("the last error");
            failure.check(name, &last_error, &secrets(row, &auth));
            assert_no_secret(name, &format!("{handle:?}"), &secrets(row, &auth));

            // The endpoint heals: the next attempt, within one backoff period, succeeds.
            let before = auth.token_requests();
            auth.clear_faults();
            let bound = failure.attempt_time
                + Schedule::DEFAULT.longest_delay(failure.transient, failure.retry_after);
            assert!(
                status.next_attempt_in.unwrap() <= bound,
                "[{name}] next attempt in {:?}, bound {bound:?}",
                status.next_attempt_in
            );
            tokio::time::sleep(bound + Duration::from_millis(1)).await;
            assert_eq!(
                auth.token_requests() - before,
                1,
                "[{name}] attempts to recover"
            );
            assert!(
                handle.current().is_some(),
                "[{name}] no token after recovery"
            );
            call(&service).await.unwrap();
            let issued = auth.last_token().unwrap().access_token;
            assert_eq!(
                recorder.last().unwrap(),
                format!("Bearer {issued}").as_str(),
                "[{name}]"
            );
            assert!(handle.status().last_error.is_none(), "[{name}]");
        }
        Expect::Ok { token, lifetime } => {
            call(&service).await.unwrap();
            assert_eq!(
                recorder.last().unwrap(),
                format!("Bearer {token}").as_str(),
                "[{name}]"
            );
            tokio::time::sleep_until(start + WINDOW).await;
            let (fewest, most) = refreshes_allowed(WINDOW, *lifetime);
            let fetched = auth.token_requests();
            assert!(
                (fewest..=most).contains(&fetched),
                "[{name}] {fetched} token requests in {WINDOW:?}, allowed {fewest}..={most}"
            );
            call(&service).await.unwrap();
        }
    }
    assert_eq!(recorder.without_token(), 0, "[{name}]");

    // Dropping every handle stops the refresher, which never panicked.
    drop(service);
    drop(handle);
    tokio::time::timeout(SECOND, refresher)
        .await
        .unwrap_or_else(|_| panic!("[{name}] the refresher outlived its handles"))
        .unwrap_or_else(|e| panic!("[{name}] the refresher panicked: {e}"));
}

#[tokio::test(start_paused = true)]
async fn every_token_endpoint_fault_gives_a_typed_error_and_recovers() {
    let mut failed = Vec::new();
    let rows = rows();
    assert!(rows.len() >= 45, "{} rows", rows.len());
    for row in rows {
        // Each row in its own task, so that one failing row does not hide the others.
        let name = row.name;
        let outcome = tokio::spawn(async move {
            let observed = through_start(&row).await;
            through_layer(&row).await;
            observed
        })
        .await;
        match outcome {
            Ok(observed) => println!("{name:<50} | {observed}"),
            Err(error) => {
                println!("{name:<50} | FAILED");
                failed.push((name, error));
            }
        }
    }
    assert!(failed.is_empty(), "rows that failed: {failed:#?}");
}

/// The excerpt of a body that is not JSON redacts runs of 24 or more token-like characters;
/// a shorter access token (some servers issue 20-character opaque tokens) is shown.
#[tokio::test(start_paused = true)]
async fn a_short_access_token_in_a_body_that_is_not_json_is_not_shown() {
    let token = "short-token-12345";
    let form = headers(&[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")]);
    for fault in [
        body(format!(r#"{{"access_token":"{token}","token_ty"#)),
        Fault::response(
            StatusCode::OK,
            form,
            format!("access_token={token}&token_type=bearer"),
        ),
    ] {
        let auth = MockAuthServer::new();
        auth.fail_next(1, fault);
        let error = builder(&auth).build().unwrap().start().await.unwrap_err();
        assert_eq!(error.kind(), "invalid_response");
        assert_error_has_no_secret("short token", &error, &[token.to_owned()]);
    }
}
