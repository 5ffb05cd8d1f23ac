//! Property tests of the token response parser and the JWT expiry reader.
//!
//! Both are private to the crate, so they are reached the way a server reaches them: the
//! embedded authorization server answers the token request with the generated body, and the
//! refresher parses it. Each case runs the refresher as a task of its own and checks that it
//! finished without panicking; the fetch must end in a token or a typed `TokenError`.

use std::{
    future::IntoFuture,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};
use tower_client_credentials::{
    ClientCredentials, ExpirySource, TokenError, TokenUnavailable,
    test_util::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockAuthServer},
};

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
