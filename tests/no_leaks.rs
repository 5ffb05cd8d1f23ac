//! Secrets never reach logs or errors: the quickstart scenario and the fault matrix's error
//! rows run under a TRACE subscriber that captures everything (the crate's events, the mock
//! servers', tower-http's `TraceLayer` with request headers), and every error is formatted with
//! `{}`, `{:?}` and its `source()` chain. Neither the client secret (in any encoding) nor any
//! token issued may appear.
//!
//! Alone in its binary, with a global subscriber, so that no other test's subscriber can hide
//! an event from it.

mod common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use common::Captured;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{ServiceBuilder, ServiceExt};
use tower_client_credentials::{
    BearerAuthLayer, ClientAssertion, ClientCredentials, DpopAlgorithm, DpopKey,
};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockAuthServer,
};

fn http_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

/// Every form the client secret could take on the wire.
fn secret_forms() -> Vec<String> {
    let percent = percent_encoding::utf8_percent_encode(
        DEFAULT_CLIENT_SECRET,
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let form = serde_urlencoded::to_string([("s", DEFAULT_CLIENT_SECRET)]).unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        DEFAULT_CLIENT_ID,
        percent_encoding::utf8_percent_encode(
            DEFAULT_CLIENT_SECRET,
            percent_encoding::NON_ALPHANUMERIC
        )
    ));
    vec![
        DEFAULT_CLIENT_SECRET.to_owned(),
        percent,
        form.trim_start_matches("s=").to_owned(),
        basic,
    ]
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} | {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    text
}

fn assert_clean(haystack: &str, needles: &[String]) {
    for needle in needles {
        assert!(!needle.is_empty());
        assert!(
            !haystack.contains(needle.as_str()),
            "a secret leaked: found {} chars of it",
            needle.len()
        );
    }
}

/// The quickstart scenario (real sockets, tokens rotating, a revocation and its retry) and the
/// fault matrix's error rows, with a TRACE subscriber capturing everything and tower-http's
/// `TraceLayer` logging request headers: neither the client secret nor any token shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_reaches_logs_or_errors() {
    use tower_http::trace::{DefaultMakeSpan, DefaultOnRequest, TraceLayer};
    use tracing::Level;

    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let mut errors = String::new();

    // The quickstart: 1-second tokens, a few rotations, one revocation.
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let api = auth.api();
    api.serve().await.unwrap();
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .scopes(["orders:read"])
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
    // TraceLayer inside our layer sees (and logs) the request with our header on it.
    let trace = TraceLayer::new_for_http()
        .make_span_with(
            DefaultMakeSpan::new()
                .level(Level::INFO)
                .include_headers(true),
        )
        .on_request(DefaultOnRequest::new().level(Level::INFO));
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(tokens.clone()))
        .layer(trace)
        .service(http_client());
    for i in 0..30 {
        if i == 15 {
            auth.revoke_all();
        }
        let response = service
            .clone()
            .oneshot(get(&format!("{}/orders/{i}", api.url())))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    errors.push_str(&format!("{tokens:?} {:?}", tokens.status()));
    assert!(auth.issued() >= 3, "tokens rotated");
    assert!(
        captured.text().contains("authorization"),
        "TraceLayer logged the headers"
    );

    // DPoP: bound tokens and a proof on every request, through the same TraceLayer.
    let dpop_auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(1))
        .require_dpop(true)
        .dpop_nonce(true)
        .start()
        .await
        .unwrap();
    let dpop_api = dpop_auth.api().dpop_nonce(true);
    dpop_api.serve().await.unwrap();
    let dpop_tokens = ClientCredentials::builder(
        dpop_auth.token_url(),
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
    )
    .dpop(DpopKey::generate(DpopAlgorithm::ES256).unwrap())
    .build()
    .unwrap()
    .start()
    .await
    .unwrap();
    let dpop_service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(dpop_tokens.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(
                DefaultMakeSpan::new()
                    .level(Level::INFO)
                    .include_headers(true),
            ),
        )
        .service(http_client());
    for i in 0..10 {
        let response = dpop_service
            .clone()
            .oneshot(get(&format!("{}/orders/{i}", dpop_api.url())))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(dpop_api.dpop_nonce_challenges() >= 1);
    errors.push_str(&format!("{dpop_tokens:?} {:?}", dpop_tokens.status()));
    assert!(
        captured.text().contains("dpop"),
        "TraceLayer logged the DPoP header"
    );

    // The fault matrix's error rows, each through `start()`.
    let leaky_token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.leaky-token-value";
    let rows: Vec<Fault> = vec![
        Fault::oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "bad secret"),
        Fault::oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "nope"),
        Fault::html(
            StatusCode::BAD_GATEWAY,
            format!("<p>upstream echo: client_secret={DEFAULT_CLIENT_SECRET}</p>"),
        ),
        Fault::raw(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("access_token={leaky_token}&x=1"),
        ),
        Fault::json(
            StatusCode::OK,
            format!(r#"{{"access_token":"{leaky_token}\n","token_type":"Bearer"}}"#),
        ),
        Fault::json(
            StatusCode::OK,
            format!(r#"{{"access_token":"{leaky_token}","token_type":"mac"}}"#),
        ),
        Fault::json(
            StatusCode::OK,
            format!(r#"{{"access_token":"{leaky_token}","expires_in":"soon"}}"#),
        ),
        Fault::raw(StatusCode::OK, format!("access_token={leaky_token}")),
        Fault::json(StatusCode::OK, "[1,2,3]"),
        Fault::status(StatusCode::SERVICE_UNAVAILABLE),
        Fault::hang(),
    ];
    for fault in rows {
        let auth_errors = MockAuthServer::new();
        auth_errors.fail_next(1, fault);
        let error = common::builder(&auth_errors)
            .timeout(Duration::from_millis(50))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap_err();
        errors.push_str(&error_chain(&error));
        errors.push('\n');
    }
    // And a wrong secret at a real server.
    let error =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, "wrong-secret-value")
            .build()
            .unwrap()
            .start()
            .await
            .unwrap_err();
    errors.push_str(&error_chain(&error));

    // A federated client assertion read from a file: neither a well-formed one (sent, and
    // refused by the mock, which takes no assertions) nor a malformed one shows up.
    let dir = std::env::temp_dir().join(format!("tcc-no-leaks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let assertion_file = dir.join("projected-token");
    let federated = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2QifQ.federated-assertion-value";
    for content in [
        federated.to_owned(),
        format!("{federated} and trailing words"),
    ] {
        std::fs::write(&assertion_file, &content).unwrap();
        let error = ClientCredentials::builder_with_assertion(
            auth.token_url(),
            DEFAULT_CLIENT_ID,
            ClientAssertion::from_file(&assertion_file),
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
        errors.push_str(&error_chain(&error));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut needles = secret_forms();
    needles.push("federated-assertion-value".to_owned());
    needles.extend(auth.tokens().into_iter().map(|t| t.access_token));
    needles.extend(dpop_auth.tokens().into_iter().map(|t| t.access_token));
    // Every proof starts with the base64url of `{"typ":"dpop+jwt","alg":`.
    needles.push(URL_SAFE_NO_PAD.encode(r#"{"typ":"dpop+jwt","#));
    needles.push(leaky_token.to_owned());
    needles.push("leaky-token-value".to_owned());
    needles.push("wrong-secret-value".to_owned());
    let logs = captured.text();
    assert!(
        logs.contains("access token obtained"),
        "the crate's own events were captured"
    );
    assert!(
        logs.contains("access token request failed"),
        "{}",
        &logs[logs.len().saturating_sub(3000)..]
    );
    assert_clean(&logs, &needles);
    assert_clean(&errors, &needles);
}
