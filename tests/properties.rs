//! Property tests of the token response parser and the JWT expiry reader, and of the options.
//!
//! The parsers are private to the crate, so they are reached the way a server reaches them:
//! the embedded authorization server answers the token request with the generated body, and
//! the refresher parses it. Each case runs the refresher as a task of its own and checks that
//! it finished without panicking; the fetch must end in a token or a typed `TokenError`.
//!
//! The options: any combination of builder, shared-cache, token-set and layer options either
//! fails at `build()` with a `ConfigError` naming an option outside its documented range, or
//! serves a request against the embedded servers without panicking.

use std::{
    future::IntoFuture,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};
use tower::Layer;
use tower_client_credentials::{
    AuthMethod, BearerAuthLayer, ClientCredentials, ClientCredentialsBuilder, ConfigError,
    ExpirySource, TokenError, TokenKey, TokenSetLayer, TokenUnavailable,
};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockAuthServer,
};

mod common;

const DEFAULT_LIFETIME: Duration = Duration::from_secs(42);
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A usable token: its value and the lifetime it was given.
type Fetched = (String, Duration);

/// Answers one token request with `fault` and returns what the client made of it.
fn fetch(fault: Fault, expiry: ExpirySource) -> Result<Fetched, TokenError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let auth = MockAuthServer::new();
        auth.fail_next(1, fault);
        let (handle, refresher) = ClientCredentials::builder(
            "http://127.0.0.1/oauth/token",
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
        )
        .http_client(auth.service())
        .default_lifetime(DEFAULT_LIFETIME)
        .expiry_source(expiry)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .into_parts();
        let refresher = tokio::spawn(refresher.into_future());
        let result = handle.token().await;
        drop(handle);
        refresher.await.expect("the refresher panicked");
        match result {
            Ok(token) => Ok((token.access_token().to_owned(), token.lifetime())),
            Err(TokenUnavailable::FetchFailed(error)) => Err(error),
            Err(other) => panic!("not a token request failure: {other:?}"),
        }
    })
}

/// Checks what holds for every outcome: a token is a non-empty header-safe string with a
/// lifetime within bounds; an error says something and shows no secret.
fn check(result: &Result<Fetched, TokenError>, secret: Option<&str>) -> Result<(), TestCaseError> {
    match result {
        Ok((token, lifetime)) => {
            prop_assert!(!token.is_empty());
            prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{token:?}");
            prop_assert!(
                !lifetime.is_zero() && *lifetime <= MAX_LIFETIME,
                "{lifetime:?}"
            );
        }
        Err(error) => {
            let text = format!("{error} {error:?}");
            prop_assert!(!error.to_string().is_empty());
            prop_assert!(!text.contains(DEFAULT_CLIENT_SECRET), "{text}");
            if let Some(secret) = secret {
                prop_assert!(!text.contains(secret), "the token leaks into: {text}");
            }
        }
    }
    Ok(())
}

/// Any JSON value, with keys drawn mostly from those of a token response.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("access_token".to_owned()),
        Just("token_type".to_owned()),
        Just("expires_in".to_owned()),
        Just("error".to_owned()),
        Just("error_description".to_owned()),
        Just("scope".to_owned()),
        Just("exp".to_owned()),
        Just("iat".to_owned()),
        ".{0,12}",
    ]
}

/// A value for `expires_in`, good or bad.
fn expires_in() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        (1_u64..=u64::MAX).prop_map(|n| Some(json!(n))),
        any::<i64>().prop_map(|n| Some(json!(n))),
        any::<f64>().prop_map(|f| Number::from_f64(f).map(Value::Number)),
        any::<u32>().prop_map(|n| Some(json!(n.to_string()))),
        ".{0,12}".prop_map(|s| Some(json!(s))),
        json_value().prop_map(Some),
    ]
}

fn token_type() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!("Bearer"))),
        Just(Some(json!("bearer"))),
        Just(Some(json!("BEARER"))),
        Just(Some(json!("mac"))),
        Just(Some(json!("DPoP"))),
        Just(Some(Value::Null)),
        json_value().prop_map(Some),
    ]
}

/// A token response object whose fields are each right or wrong.
fn token_object(
    access_token: Value,
    token_type: Option<Value>,
    expires_in: Option<Value>,
) -> Bytes {
    let mut object = Map::new();
    object.insert("access_token".into(), access_token);
    if let Some(token_type) = token_type {
        object.insert("token_type".into(), token_type);
    }
    if let Some(expires_in) = expires_in {
        object.insert("expires_in".into(), expires_in);
    }
    Bytes::from(Value::Object(object).to_string())
}

/// The lifetime an `expires_in` value must give, when it must give one.
fn expected_lifetime(expires_in: &Option<Value>) -> Option<Option<Duration>> {
    let seconds = match expires_in {
        None | Some(Value::Null) => return Some(None),
        Some(Value::Number(n)) => n.as_f64()?,
        Some(Value::String(s)) => s.trim().parse::<f64>().ok()?,
        Some(_) => return None,
    };
    lifetime_of(seconds).map(Some)
}

/// The lifetime a number of seconds gives: capped at a year, `None` when it is not positive
/// (or so small that it rounds to zero).
fn lifetime_of(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds <= 0.0 {
        return None;
    }
    let lifetime =
        Duration::try_from_secs_f64(seconds).map_or(MAX_LIFETIME, |d| d.min(MAX_LIFETIME));
    (!lifetime.is_zero()).then_some(lifetime)
}

/// Whether two lifetimes agree, allowing for the last bits of a float that went through JSON.
fn close(a: Duration, b: Duration) -> bool {
    let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
    (a - b).abs() <= 1e-6_f64.max(a.abs() * 1e-12)
}

/// A compact JWT whose header and claims segments are `header` and `claims`, base64url'd.
fn jwt(header: &[u8], claims: &[u8], signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bytes as a `200 OK` JSON body.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let result = fetch(Fault::json(StatusCode::OK, body), ExpirySource::default());
        check(&result, None)?;
    }

    /// Any bytes, any status, any content type.
    #[test]
    fn arbitrary_responses_never_panic(
        status in 200_u16..600,
        content_type in prop::option::of("[ -~]{0,40}"),
        retry_after in prop::option::of("[ -~]{0,30}"),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(header::RETRY_AFTER, value);
        }
        let status = StatusCode::from_u16(status).unwrap();
        let result = fetch(Fault::response(status, headers, body), ExpirySource::default());
        check(&result, None)?;
        if !status.is_success() {
            let error = result.expect_err("an error status never gives a token");
            prop_assert_eq!(error.status(), Some(status));
        }
    }

    /// Any JSON document as a `200 OK` body.
    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let result = fetch(
            Fault::json(StatusCode::OK, value.to_string()),
            ExpirySource::default(),
        );
        check(&result, None)?;
    }

    /// Token responses whose fields are each right or wrong: a good one gives the token with
    /// the lifetime `expires_in` says, a bad one a typed error that never shows the token.
    #[test]
    fn token_responses_are_read_exactly(
        secret in "[A-Za-z0-9]{24,40}",
        token_type in token_type(),
        expires_in in expires_in(),
    ) {
        let body = token_object(json!(secret), token_type.clone(), expires_in.clone());
        let result = fetch(Fault::json(StatusCode::OK, body), ExpirySource::default());
        check(&result, Some(&secret))?;
        let bearer = match &token_type {
            None | Some(Value::Null) => true,
            Some(Value::String(kind)) => kind.eq_ignore_ascii_case("bearer"),
            Some(_) => false,
        };
        match (bearer, expected_lifetime(&expires_in)) {
            (true, Some(lifetime)) => {
                let (token, got) = result.expect("a good token response");
                prop_assert_eq!(token, secret);
                let expected = lifetime.unwrap_or(DEFAULT_LIFETIME);
                prop_assert!(close(got, expected), "{:?} != {:?}", got, expected);
            }
            _ => {
                let error = result.expect_err("a bad token response");
                prop_assert!(!error.is_transient());
            }
        }
    }

    /// Access tokens that are not header-safe are refused, and never shown.
    #[test]
    fn unusable_access_tokens_are_refused(
        prefix in "[A-Za-z0-9]{24}",
        bad in "[\\x00-\\x1f\\x7f\\u{80}-\\u{10ffff} ]",
        suffix in "[A-Za-z0-9]{0,8}",
    ) {
        let token = format!("{prefix}{bad}{suffix}");
        let body = token_object(json!(token), Some(json!("Bearer")), Some(json!(60)));
        let result = fetch(Fault::json(StatusCode::OK, body), ExpirySource::default());
        check(&result, Some(&prefix))?;
        let error = result.expect_err("refused");
        prop_assert!(error.to_string().contains("not allowed in an HTTP header"), "{}", error);
    }

    /// JWTs with any claims: the lifetime is `exp - iat`, or `exp - now` without `iat`, or the
    /// default when there is no numeric `exp`; a token already expired is refused.
    #[test]
    fn jwt_claims_are_read_exactly(
        exp in prop::option::of(prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            (-1e6_f64..1e6).prop_map(|offset| now() + offset),
        ]),
        iat in prop::option::of(prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            (-1e6_f64..1e6).prop_map(|offset| now() + offset),
        ]),
        extra in json_value(),
    ) {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("demo-client"));
        claims.insert("extra".into(), extra);
        if let Some(exp) = exp {
            claims.insert("exp".into(), json!(exp));
        }
        if let Some(iat) = iat {
            claims.insert("iat".into(), json!(iat));
        }
        let token = jwt(br#"{"alg":"HS256","typ":"JWT"}"#, Value::Object(claims).to_string().as_bytes(), "c2ln");
        let body = token_object(json!(token), Some(json!("Bearer")), None);
        let result = fetch(Fault::json(StatusCode::OK, body), ExpirySource::default());
        check(&result, None)?;
        match (exp, iat) {
            (None, _) => prop_assert_eq!(result.unwrap().1, DEFAULT_LIFETIME),
            (Some(exp), Some(iat)) => match lifetime_of(exp - iat) {
                Some(expected) => {
                    let got = result.expect("a JWT that has not expired").1;
                    prop_assert!(close(got, expected), "{:?} != {:?}", got, expected);
                }
                // Far from zero the sign is certain; near it, the float's last bits decide.
                None if exp - iat < -1e-3 => {
                    let error = result.unwrap_err();
                    prop_assert!(error.to_string().contains("already expired"), "{}", error);
                }
                None => {}
            },
            (Some(exp), None) => {
                // `exp - now`: only the sign is certain, the clock moves.
                let seconds = exp - now();
                if seconds > 5.0 {
                    prop_assert!(result.is_ok());
                } else if seconds < -5.0 {
                    prop_assert!(result.is_err());
                }
            }
        }
    }

    /// Arbitrary segments that look like a JWT, read with each expiry source.
    #[test]
    fn arbitrary_jwt_segments_never_panic(
        header in prop::collection::vec(any::<u8>(), 0..64),
        claims in prop::collection::vec(any::<u8>(), 0..128),
        signature in "[A-Za-z0-9_-]{0,16}",
        raw in "[A-Za-z0-9_=+/.-]{1,64}",
        use_raw in any::<bool>(),
        expires_in in expires_in(),
        source in prop_oneof![
            Just(ExpirySource::ExpiresIn),
            Just(ExpirySource::JwtExp),
            Just(ExpirySource::Earliest),
        ],
    ) {
        let token = if use_raw { raw } else { jwt(&header, &claims, &signature) };
        let body = token_object(json!(token), Some(json!("Bearer")), expires_in);
        let result = fetch(Fault::json(StatusCode::OK, body), source);
        check(&result, None)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Options

const SECOND: Duration = Duration::from_secs(1);
const TEN_MINUTES: Duration = Duration::from_secs(600);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_RESPONSE_SIZE: usize = 16 * 1024 * 1024;

/// Durations from the edges and the middle: zero, tiny, the limits of the documented ranges and
/// just past them, sensible values, huge ones and `Duration::MAX`.
fn duration() -> impl Strategy<Value = Duration> {
    let nano = Duration::from_nanos(1);
    prop_oneof![
        Just(Duration::ZERO),
        Just(nano),
        Just(Duration::from_millis(1)),
        Just(SECOND - nano),
        Just(SECOND),
        Just(TEN_MINUTES),
        Just(TEN_MINUTES + nano),
        Just(DAY),
        Just(DAY + nano),
        Just(MAX_LIFETIME),
        Just(MAX_LIFETIME + nano),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::MAX),
        (0_u64..=120_000).prop_map(Duration::from_millis),
        (any::<u64>(), 0_u32..1_000_000_000).prop_map(|(secs, nanos)| Duration::new(secs, nanos)),
    ]
}

/// Ratios, good and bad: NaN, infinities, negative, zero, the limits, past one.
fn ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(f64::MIN_POSITIVE),
        Just(0.1),
        Just(0.8),
        Just(1.0),
        Just(1.0 + f64::EPSILON),
        0.0..=1.0,
        any::<f64>(),
    ]
}

/// Sizes, good and bad: zero, one, the limit and past it, `usize::MAX`.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(64 * 1024),
        Just(MAX_RESPONSE_SIZE),
        Just(MAX_RESPONSE_SIZE + 1),
        Just(usize::MAX),
        0_usize..100_000,
        any::<usize>(),
    ]
}

/// An option that is set in some cases and left at its default in the others.
fn maybe<S: Strategy>(value: S) -> impl Strategy<Value = Option<S::Value>> {
    prop::option::weighted(0.3, value)
}

#[derive(Debug, Clone)]
struct RedisOptions {
    lease_timeout: Option<Duration>,
    poll_interval: Option<Duration>,
    timeout: Option<Duration>,
    outage_backoff: Option<Duration>,
}

/// One combination of options; `None` leaves an option at its default.
#[derive(Debug, Clone)]
struct Options {
    timeout: Option<Duration>,
    max_response_size: Option<usize>,
    default_lifetime: Option<Duration>,
    refresh_before: Option<Duration>,
    refresh_ratio: Option<f64>,
    backoff: Option<(Duration, Duration)>,
    permanent_retry: Option<Duration>,
    refused_token_backoff: Option<(Duration, Duration)>,
    max_wait: Option<Duration>,
    /// `client_secret_jwt` with this assertion lifetime (the embedded server refuses it, so
    /// the request fails with a typed error, after the assertion was signed).
    assertion_lifetime: Option<Duration>,
    /// The server's tokens are opaque and come without `expires_in`, so the default lifetime
    /// applies (the API refuses them: the request is answered 401).
    opaque: bool,
    /// Through a `TokenSet` with this idle timeout, instead of a single handle.
    token_set: Option<Option<Duration>>,
    /// A shared cache at an unreachable Redis, with these options.
    redis: Option<RedisOptions>,
    layer_max_wait: Option<Duration>,
    replay_limit: Option<usize>,
}

fn options() -> impl Strategy<Value = Options> {
    let redis = (
        maybe(duration()),
        maybe(duration()),
        maybe(duration()),
        maybe(duration()),
    )
        .prop_map(
            |(lease_timeout, poll_interval, timeout, outage_backoff)| RedisOptions {
                lease_timeout,
                poll_interval,
                timeout,
                outage_backoff,
            },
        );
    (
        (
            maybe(duration()),
            maybe(size()),
            maybe(duration()),
            maybe(duration()),
            maybe(ratio()),
            maybe((duration(), duration())),
            maybe(duration()),
            maybe(duration()),
        ),
        (
            maybe(duration()),
            prop::bool::weighted(0.2),
            maybe(maybe(duration())),
            maybe(redis),
            maybe(duration()),
            maybe(size()),
            maybe((duration(), duration())),
        ),
    )
        .prop_map(
            |(
                (
                    timeout,
                    max_response_size,
                    default_lifetime,
                    refresh_before,
                    refresh_ratio,
                    backoff,
                    permanent_retry,
                    max_wait,
                ),
                (
                    assertion_lifetime,
                    opaque,
                    token_set,
                    redis,
                    layer_max_wait,
                    replay_limit,
                    refused_token_backoff,
                ),
            )| Options {
                timeout,
                max_response_size,
                default_lifetime,
                refresh_before,
                refresh_ratio,
                backoff,
                permanent_retry,
                refused_token_backoff,
                max_wait,
                assertion_lifetime,
                opaque,
                token_set,
                redis,
                layer_max_wait,
                replay_limit,
            },
        )
}

impl Options {
    /// The options outside the range their documentation states: exactly those `build()` may
    /// name in its refusal, and `build()` succeeds when there are none.
    fn out_of_range(&self) -> Vec<&'static str> {
        let outside = |value: Option<Duration>, min: Duration, max: Duration| {
            value.is_some_and(|value| value < min || value > max)
        };
        let nano = Duration::from_nanos(1);
        let mut names = Vec::new();
        if outside(self.timeout, nano, Duration::MAX) {
            names.push("timeout");
        }
        if self
            .max_response_size
            .is_some_and(|size| size == 0 || size > MAX_RESPONSE_SIZE)
        {
            names.push("max_response_size");
        }
        if outside(self.default_lifetime, SECOND, MAX_LIFETIME) {
            names.push("default_lifetime");
        }
        if self
            .refresh_ratio
            .is_some_and(|ratio| !(0.1..=1.0).contains(&ratio))
        {
            names.push("refresh_ratio");
        }
        if let Some((first, max)) = self.backoff {
            let ms = Duration::from_millis(1);
            if outside(Some(max), ms, TEN_MINUTES) || outside(Some(first), ms, max) {
                names.push("backoff");
            }
        }
        if outside(self.permanent_retry, SECOND, TEN_MINUTES) {
            names.push("permanent_retry");
        }
        if let Some((first, max)) = self.refused_token_backoff {
            let ms = Duration::from_millis(1);
            if outside(Some(max), ms, DAY) || outside(Some(first), ms, max) {
                names.push("refused_token_backoff");
            }
        }
        if outside(self.assertion_lifetime, SECOND, DAY) {
            names.push("assertion_lifetime");
        }
        if cfg!(feature = "redis")
            && let Some(redis) = &self.redis
        {
            let lease = redis.lease_timeout.unwrap_or(Duration::from_secs(10));
            if outside(redis.lease_timeout, nano, DAY) {
                names.push("shared_cache.lease_timeout");
            }
            if outside(
                // The default: 1 s, or the lease timeout if that is shorter.
                Some(
                    redis
                        .poll_interval
                        .unwrap_or(Duration::from_secs(1).min(lease)),
                ),
                nano,
                lease,
            ) {
                names.push("shared_cache.poll_interval");
            }
            if outside(redis.timeout, nano, Duration::from_secs(60)) {
                names.push("shared_cache.timeout");
            }
            if outside(redis.outage_backoff, Duration::ZERO, DAY) {
                names.push("shared_cache.outage_backoff");
            }
        }
        names
    }

    /// Whether nothing stands between the first request and its token: the request must then
    /// be answered `200 OK`.
    fn sane(&self) -> bool {
        let wait = self.layer_max_wait.or(self.max_wait).unwrap_or(30 * SECOND);
        !self.opaque
            && self.assertion_lifetime.is_none()
            && self.timeout.is_none_or(|timeout| timeout >= SECOND)
            && self.max_response_size.is_none_or(|size| size >= 4096)
            && wait >= SECOND
    }

    fn builder(&self, auth: &MockAuthServer) -> ClientCredentialsBuilder {
        let mut builder = ClientCredentials::builder(
            "http://127.0.0.1/oauth/token",
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
        )
        .http_client(auth.service());
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(size) = self.max_response_size {
            builder = builder.max_response_size(size);
        }
        if let Some(lifetime) = self.default_lifetime {
            builder = builder.default_lifetime(lifetime);
        }
        if let Some(margin) = self.refresh_before {
            builder = builder.refresh_before(margin);
        }
        if let Some(ratio) = self.refresh_ratio {
            builder = builder.refresh_ratio(ratio);
        }
        if let Some((first, max)) = self.refused_token_backoff {
            builder = builder.refused_token_backoff(first, max);
        }
        if let Some((first, max)) = self.backoff {
            builder = builder.backoff(first, max);
        }
        if let Some(delay) = self.permanent_retry {
            builder = builder.permanent_retry(delay);
        }
        if let Some(wait) = self.max_wait {
            builder = builder.max_wait(wait);
        }
        if let Some(lifetime) = self.assertion_lifetime {
            builder = builder
                .auth_method(AuthMethod::ClientSecretJwt)
                .assertion_lifetime(lifetime);
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            // Nothing listens on port 1: every refresh falls back to a token request of its own.
            let mut cache = tower_client_credentials::RedisCache::new("redis://127.0.0.1:1/")
                .unwrap()
                .prefix("tcc-test:properties:");
            if let Some(lease) = redis.lease_timeout {
                cache = cache.lease_timeout(lease);
            }
            if let Some(interval) = redis.poll_interval {
                cache = cache.poll_interval(interval);
            }
            if let Some(timeout) = redis.timeout {
                cache = cache.timeout(timeout);
            }
            if let Some(backoff) = redis.outage_backoff {
                cache = cache.outage_backoff(backoff);
            }
            builder = builder.shared_cache(cache);
        }
        builder
    }
}

/// How a request that went through the layer ended.
#[derive(Debug)]
enum Served {
    Status(http::StatusCode),
    Unavailable(TokenUnavailable),
}

/// Builds the options, and when they are accepted, sends one request through the layer to the
/// embedded API on a paused clock, the token not fetched yet (the request waits for it).
fn serve(options: &Options) -> Result<Served, ConfigError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let auth = MockAuthServer::new();
        if options.opaque {
            auth.set_fault_plan(|_| {
                Some(Fault::json(
                    StatusCode::OK,
                    r#"{"access_token":"opaque-token-0123456789","token_type":"Bearer"}"#,
                ))
            });
        }
        let api = auth.api();
        let request = common::request("{\"order\":1}");
        // Far beyond any wait the options allow that ends; the clock is paused, so a case
        // that hangs fails fast instead of hanging the suite.
        let guard = Duration::from_secs(10 * 365 * 24 * 60 * 60);
        let sent = match options.token_set {
            Some(idle_timeout) => {
                let mut builder = options.builder(&auth).build_set()?.route(
                    "http://127.0.0.1".parse().unwrap(),
                    TokenKey::new().scopes(["orders:read"]),
                )?;
                if let Some(idle_timeout) = idle_timeout {
                    builder = builder.idle_timeout(idle_timeout);
                }
                let set = builder.spawn();
                let mut layer = TokenSetLayer::new(set.clone());
                if let Some(wait) = options.layer_max_wait {
                    layer = layer.max_wait(wait);
                }
                if let Some(limit) = options.replay_limit {
                    layer = layer.replay_limit(limit);
                }
                let service = layer.layer(api.service());
                let sent = tokio::time::timeout(guard, common::send(&service, request)).await;
                drop((layer, service, set));
                sent
            }
            None => {
                let (handle, refresher) = options.builder(&auth).build()?.into_parts();
                let refresher = tokio::spawn(refresher.into_future());
                let mut layer = BearerAuthLayer::new(handle.clone());
                if let Some(wait) = options.layer_max_wait {
                    layer = layer.max_wait(wait);
                }
                if let Some(limit) = options.replay_limit {
                    layer = layer.replay_limit(limit);
                }
                let service = layer.layer(api.service());
                let sent = tokio::time::timeout(guard, common::send(&service, request)).await;
                // The refresher stops with the last handle.
                drop((layer, service, handle));
                refresher.await.expect("the refresher panicked");
                sent
            }
        };
        Ok(match sent.expect("the request hung") {
            Ok((status, _)) => Served::Status(status),
            Err(error) => match error.downcast::<TokenUnavailable>() {
                Ok(unavailable) => Served::Unavailable(*unavailable),
                Err(other) => panic!("not TokenUnavailable: {other:?}"),
            },
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any combination of options either fails at `build()`, naming an option outside its
    /// documented range, or serves a request without panicking: answered, or failed with a
    /// typed error, and answered `200 OK` when nothing stands between it and its token.
    #[test]
    fn no_options_make_the_crate_panic(options in options()) {
        let out_of_range = options.out_of_range();
        match serve(&options) {
            Err(ConfigError::InvalidTiming { name, reason }) => {
                prop_assert!(
                    out_of_range.contains(&name),
                    "`{}` refused ({}), but only {:?} are out of range",
                    name,
                    reason,
                    out_of_range
                );
            }
            Err(other) => prop_assert!(false, "not a timing error: {other}"),
            Ok(served) => {
                prop_assert!(
                    out_of_range.is_empty(),
                    "{:?} accepted although out of range",
                    out_of_range
                );
                if let Served::Unavailable(TokenUnavailable::Shutdown) = served {
                    prop_assert!(false, "the refresher stopped while its handle was alive");
                }
                if options.sane() {
                    prop_assert!(
                        matches!(served, Served::Status(StatusCode::OK)),
                        "{:?}",
                        served
                    );
                }
            }
        }
    }
}
