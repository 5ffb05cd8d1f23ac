use crate::{BoxError, dpop::ProofError};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

use http_body_util::{BodyExt, Empty, Full};
use serde_json::Value;
use tokio::time::timeout;

use super::super::{BodyAborted, test_support::*};
use super::*;

fn dpop_request(proof: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = form_basic(&[GRANT]);
    if let Some(proof) = proof {
        request
            .headers_mut()
            .append("dpop", HeaderValue::from_str(proof).expect("ascii"));
    }
    request
}

const TOKEN_URL: &str = "http://auth.test/oauth/token";

#[tokio::test]
async fn dpop_proof_binds_the_token() {
    let server = MockAuthServer::builder().signing_key(*b"key").build();
    let key = ProofKey::es256();
    let proof = key.proof("POST", TOKEN_URL, None, None);
    let (status, headers, body) =
        json(send(&mut server.service(), dpop_request(Some(&proof))).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    assert!(headers.get("dpop-nonce").is_none());
    let issued = server.last_token().expect("issued");
    assert_eq!(issued.dpop_jkt.as_deref(), Some(key.thumbprint().as_str()));
    assert_eq!(server.last_token_jkt(), Some(key.thumbprint()));
    // The JWT carries cnf.jkt.
    let token = body["access_token"].as_str().expect("token");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["mock-api"]);
    let claims: Value = jsonwebtoken::decode(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b"key"),
        &validation,
    )
    .expect("valid JWT")
    .claims;
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
    assert_eq!((server.dpop_proofs(), server.dpop_rejected()), (1, 0));
    let decoded = server.last_dpop_proof().expect("decoded");
    assert_eq!(decoded.header["typ"], "dpop+jwt");
    assert_eq!(decoded.claim("htu"), Some(TOKEN_URL));

    // Without a proof: a bearer token without cnf.
    let (status, _, body) = json(send(&mut server.service(), dpop_request(None)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(server.last_token_jkt(), None);
    assert_eq!(server.dpop_proofs(), 1);
}

#[tokio::test]
async fn dpop_invalid_proofs_and_replays_are_refused() {
    let server = MockAuthServer::new();
    let mut service = server.service();
    let key = ProofKey::es256();
    for (proof, expected) in [
        (key.proof("GET", TOKEN_URL, None, None), ProofError::Method),
        (
            key.proof("POST", "http://auth.test/other", None, None),
            ProofError::Url,
        ),
        ("garbage".to_owned(), ProofError::Malformed),
    ] {
        let (status, headers, body) =
            json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
        assert_eq!(body["error_description"], expected.description());
        assert!(headers.get("dpop-nonce").is_none());
        assert_eq!(server.last_dpop_error(), Some(expected));
    }
    // Two DPoP headers.
    let proof = key.proof("POST", TOKEN_URL, None, None);
    let mut request = dpop_request(Some(&proof));
    request
        .headers_mut()
        .append("dpop", HeaderValue::from_str(&proof).expect("ascii"));
    let (status, _, body) = json(send(&mut service, request).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
    assert_eq!(server.last_dpop_error(), Some(ProofError::Multiple));
    // The same valid proof twice: the second is a replay.
    let (status, _, _) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
    assert_eq!(server.last_dpop_error(), Some(ProofError::Replay));
    assert_eq!(server.issued(), 1);
    assert_eq!((server.dpop_proofs(), server.dpop_rejected()), (6, 5));
    assert_eq!(server.dpop_nonce_challenges(), 0);
}

#[tokio::test]
async fn dpop_required_off_and_misbehaving() {
    let server = MockAuthServer::builder().require_dpop(true).build();
    let mut service = server.service();
    let (status, _, body) = json(send(&mut service, dpop_request(None)).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
    assert_eq!(server.last_dpop_error(), Some(ProofError::Missing));
    assert_eq!(server.issued(), 0);

    // Misbehaving: bound, but labelled Bearer.
    server.set_dpop_bound_as_bearer(true);
    let key = ProofKey::ed25519();
    let proof = key.proof("POST", TOKEN_URL, None, None);
    let (status, _, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(server.last_token_jkt(), Some(key.thumbprint()));

    // DPoP off: the header is ignored, even a garbage one, and the token is a bearer one.
    server.set_dpop(false);
    let (status, _, body) = json(send(&mut service, dpop_request(Some("garbage"))).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(server.last_token_jkt(), None);
    assert_eq!(server.dpop_proofs(), 1);
}

#[tokio::test]
async fn dpop_nonce_challenge_and_rotation() {
    let server = MockAuthServer::builder().dpop_nonce(true).build();
    let mut service = server.service();
    let key = ProofKey::rs256();
    let nonce = server.dpop_nonce().expect("nonce mode");

    let proof = key.proof("POST", TOKEN_URL, None, None);
    let (status, headers, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "use_dpop_nonce");
    assert_eq!(headers["dpop-nonce"], nonce.as_str());

    let proof = key.proof("POST", TOKEN_URL, None, Some(&nonce));
    let (status, headers, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(headers["dpop-nonce"], nonce.as_str());

    // After a rotation the old nonce is stale.
    let fresh = server.rotate_dpop_nonce();
    assert_ne!(fresh, nonce);
    assert_eq!(server.dpop_nonce().as_deref(), Some(fresh.as_str()));
    let proof = key.proof("POST", TOKEN_URL, None, Some(&nonce));
    let (status, headers, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "use_dpop_nonce");
    assert_eq!(headers["dpop-nonce"], fresh.as_str());
    assert_eq!(server.last_dpop_error(), Some(ProofError::StaleNonce));
    // A bad proof is not a nonce challenge.
    let proof = key.proof("GET", TOKEN_URL, None, Some(&fresh));
    let (status, headers, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
    assert!(headers.get("dpop-nonce").is_none());
    assert_eq!(server.dpop_nonce_challenges(), 2);
    assert_eq!(server.issued(), 1);

    server.set_dpop_nonce(false);
    assert_eq!(server.dpop_nonce(), None);
}

#[tokio::test]
async fn dpop_over_a_socket_uses_the_listening_url() {
    let server = MockAuthServer::start().await.expect("listening");
    let key = ProofKey::es256();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for (htu, ok) in [
        (server.token_url(), true),
        (format!("http://auth.test{TOKEN_PATH}"), false),
    ] {
        let proof = key.proof("POST", &htu, None, None);
        let mut request = dpop_request(Some(&proof));
        *request.uri_mut() = server.token_url().parse().expect("uri");
        let response = client.request(request).await.expect("response");
        assert_eq!(response.status() == StatusCode::OK, ok, "{htu}");
    }
    assert_eq!(server.last_dpop_error(), Some(ProofError::Url));
}

#[tokio::test]
async fn form_with_basic_and_awkward_secret() {
    let server = MockAuthServer::builder().signing_key(*b"key").build();
    let response = send(
        &mut server.service(),
        form_basic(&[GRANT, ("scope", "read write")]),
    )
    .await;
    let (status, headers, body) = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 60);
    assert_eq!(body["scope"], "read write");

    let token = body["access_token"].as_str().expect("token");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["mock-api"]);
    validation.set_issuer(&["mock-auth-server"]);
    let claims: Value = jsonwebtoken::decode(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b"key"),
        &validation,
    )
    .expect("valid JWT")
    .claims;
    assert_eq!(claims["sub"], DEFAULT_CLIENT_ID);
    assert_eq!(claims["client_id"], DEFAULT_CLIENT_ID);
    assert_eq!(claims["scope"], "read write");
    assert_eq!(
        claims["exp"].as_f64().expect("exp") - claims["iat"].as_f64().expect("iat"),
        60.0
    );

    let issued = server.last_token().expect("issued");
    assert_eq!(issued.access_token, token);
    assert_eq!(issued.jti, claims["jti"]);
    assert_eq!(
        issued.expires_at - issued.issued_at,
        Duration::from_secs(60)
    );
    assert!(!format!("{issued:?}").contains(token));

    let recorded = server.last_request().expect("recorded");
    assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretBasic);
    assert_eq!(recorded.param("grant_type"), Some("client_credentials"));
    assert_eq!(
        recorded.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!((server.token_requests(), server.issued()), (1, 1));
}

#[tokio::test]
async fn basic_accepts_plus_for_space_and_refuses_unencoded_credentials() {
    let server = MockAuthServer::new();
    // `+` for space, as form encoding does.
    let encoded = serde_urlencoded::to_string([("x", DEFAULT_CLIENT_SECRET)]).expect("form");
    let secret = encoded.trim_start_matches("x=");
    assert!(secret.contains('+'));
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{DEFAULT_CLIENT_ID}:{secret}"));
    let request = token_request(
        "application/x-www-form-urlencoded",
        Some(format!("Basic {credentials}")),
        form(&[GRANT]),
    );
    let (status, _, body) = json(send(&mut server.service(), request).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Not encoded at all.
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}"));
    let request = token_request(
        "application/x-www-form-urlencoded",
        Some(format!("Basic {credentials}")),
        form(&[GRANT]),
    );
    let (status, headers, body) = json(send(&mut server.service(), request).await).await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Basic realm="mock""#);
}

#[tokio::test]
async fn form_with_client_secret_post() {
    let server = MockAuthServer::new();
    let (status, _, body) = json(send(&mut server.service(), form_post(&[GRANT])).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("scope").is_none());
    let recorded = server.last_request().expect("recorded");
    assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretPost);
    let debug = format!("{recorded:?}");
    assert!(!debug.contains(DEFAULT_CLIENT_SECRET), "{debug}");
    assert!(!debug.contains("s3cr"), "{debug}");
}

#[tokio::test]
async fn json_body() {
    let server = MockAuthServer::new();
    let body = serde_json::json!({
        "grant_type": "client_credentials",
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "scope": "read",
        "audience": "https://api.example",
    });
    let request = token_request("application/json; charset=utf-8", None, body.to_string());
    let (status, _, body) = json(send(&mut server.service(), request).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "read");
    let issued = server.last_token().expect("issued");
    assert_eq!(issued.audience, "https://api.example");
    let recorded = server.last_request().expect("recorded");
    assert_eq!(recorded.content_type.as_deref(), Some("application/json"));
    assert_eq!(recorded.param("scope"), Some("read"));
}

#[tokio::test]
async fn audience_falls_back_to_resource_then_default() {
    let server = MockAuthServer::builder().audience("default-aud").build();
    let mut service = server.service();
    send(
        &mut service,
        form_basic(&[GRANT, ("resource", "https://r.example")]),
    )
    .await;
    assert_eq!(
        server.last_token().expect("token").audience,
        "https://r.example"
    );
    send(
        &mut service,
        form_basic(&[
            GRANT,
            ("resource", "https://r.example"),
            ("audience", "aud"),
        ]),
    )
    .await;
    assert_eq!(server.last_token().expect("token").audience, "aud");
    send(&mut service, form_basic(&[GRANT])).await;
    assert_eq!(server.last_token().expect("token").audience, "default-aud");
}

#[tokio::test]
async fn wrong_secret() {
    let server = MockAuthServer::new();
    let request = token_request(
        "application/x-www-form-urlencoded",
        Some(basic(DEFAULT_CLIENT_ID, "nope")),
        form(&[GRANT]),
    );
    let (status, headers, body) = json(send(&mut server.service(), request).await).await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Basic realm="mock""#);

    let request = token_request(
        "application/x-www-form-urlencoded",
        None,
        form(&[
            GRANT,
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", "nope"),
        ]),
    );
    let (status, headers, body) = json(send(&mut server.service(), request).await).await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(headers.get(header::WWW_AUTHENTICATE).is_none());

    let request = token_request(
        "application/x-www-form-urlencoded",
        Some(basic("someone-else", DEFAULT_CLIENT_SECRET)),
        form(&[GRANT]),
    );
    let (status, _, body) = json(send(&mut server.service(), request).await).await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!((server.token_requests(), server.issued()), (3, 0));
}

#[tokio::test]
async fn missing_or_double_client_authentication() {
    let server = MockAuthServer::new();
    let request = token_request("application/x-www-form-urlencoded", None, form(&[GRANT]));
    let (status, _, body) = json(send(&mut server.service(), request).await).await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(
        server.last_request().expect("recorded").auth_method,
        ClientAuthMethod::None
    );

    let request = token_request(
        "application/x-www-form-urlencoded",
        Some(basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
        form(&[
            GRANT,
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
        ]),
    );
    let (status, _, body) = json(send(&mut server.service(), request).await).await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(
        server.last_request().expect("recorded").auth_method,
        ClientAuthMethod::Multiple
    );
}

#[tokio::test]
async fn bad_requests() {
    let server = MockAuthServer::new();
    let mut service = server.service();
    let (status, _, body) =
        json(send(&mut service, form_basic(&[("grant_type", "password")])).await).await;
    assert_oauth_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    );

    let (status, _, body) = json(send(&mut service, form_basic(&[])).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

    let (status, _, body) = json(
        send(
            &mut service,
            form_basic(&[GRANT, ("scope", "a"), ("scope", "b")]),
        )
        .await,
    )
    .await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

    let request = token_request(
        "text/plain",
        Some(basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
        "grant_type=client_credentials",
    );
    let (status, _, body) = json(send(&mut service, request).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

    let request = Request::get(format!("http://auth.test{TOKEN_PATH}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, _) = read(send(&mut service, request).await).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "POST");

    let request = Request::post("http://auth.test/elsewhere")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, _) = read(send(&mut service, request).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The 404 did not reach the token endpoint.
    assert_eq!(server.token_requests(), 5);
}

#[tokio::test]
async fn scopes_per_client() {
    let server = MockAuthServer::builder()
        .client_with_scopes("limited", "pw", ["read", "write"])
        .build();
    let mut service = server.service();
    let request = |scope: Option<&str>| {
        let mut pairs = vec![GRANT];
        if let Some(scope) = scope {
            pairs.push(("scope", scope));
        }
        token_request(
            "application/x-www-form-urlencoded",
            Some(basic("limited", "pw")),
            form(&pairs),
        )
    };
    let (status, _, body) = json(send(&mut service, request(Some("read admin"))).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");

    let (status, _, body) = json(send(&mut service, request(Some("write"))).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "write");

    let (status, _, body) = json(send(&mut service, request(None)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "read write");

    // The default client is still there, with any scope.
    let (status, _, body) =
        json(send(&mut service, form_basic(&[GRANT, ("scope", "admin")])).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn lifetime_and_expires_in_formats() {
    let server = MockAuthServer::new();
    let mut service = server.service();
    server.set_lifetime(Duration::from_secs(3599));
    let (_, _, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_eq!(body["expires_in"], 3599);
    let issued = server.last_token().expect("token");
    assert_eq!(
        issued.expires_at - issued.issued_at,
        Duration::from_secs(3599)
    );

    server.set_expires_in(ExpiresIn::String);
    let (_, _, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_eq!(body["expires_in"], "3599");

    server.set_expires_in(ExpiresIn::Omitted);
    server.set_token_type("bearer");
    let (_, _, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
    assert!(body.get("expires_in").is_none());
    assert_eq!(body["token_type"], "bearer");

    let server = MockAuthServer::builder()
        .expires_in(ExpiresIn::String)
        .lifetime(Duration::from_secs(5))
        .build();
    let (_, _, body) = json(send(&mut server.service(), form_basic(&[GRANT])).await).await;
    assert_eq!(body["expires_in"], "5");
}

#[tokio::test]
async fn fault_responses() {
    let server = MockAuthServer::new();
    let mut service = server.service();

    server.fail_next(2, Fault::status(StatusCode::SERVICE_UNAVAILABLE));
    server.fail_next(
        1,
        Fault::oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "nope")
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
    );
    server.fail_next(
        1,
        Fault::html(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>"),
    );
    server.fail_next(1, Fault::raw(StatusCode::OK, "not json"));
    server.fail_next(1, Fault::json(StatusCode::OK, r#"{"token_type":"Bearer"}"#));

    for _ in 0..2 {
        let (status, _, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(bytes.is_empty());
    }
    let (status, headers, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_client");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (status, headers, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(bytes, "<html>bad gateway</html>");
    let (status, headers, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::CONTENT_TYPE).is_none());
    assert_eq!(bytes, "not json");
    let (_, headers, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(bytes, r#"{"token_type":"Bearer"}"#);

    // Back to normal.
    let (status, _, _) = read(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((server.token_requests(), server.issued()), (7, 1));

    // A success with extra headers and another status.
    server.fail_next(
        1,
        Fault::delay(Duration::ZERO)
            .with_status(StatusCode::CREATED)
            .with_header(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5")),
    );
    let (status, headers, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[header::CACHE_CONTROL], "max-age=5");
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn fault_plan_by_index() {
    let server = MockAuthServer::new();
    let mut service = server.service();
    server.set_fault_plan(|index| (index % 2 == 1).then(|| Fault::status(StatusCode::BAD_GATEWAY)));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&mut service, form_basic(&[GRANT])).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::BAD_GATEWAY,
            StatusCode::OK,
            StatusCode::BAD_GATEWAY
        ]
    );
    // Queued faults go before the plan.
    server.fail_next(1, Fault::status(StatusCode::IM_A_TEAPOT));
    assert_eq!(
        send(&mut service, form_basic(&[GRANT])).await.status(),
        StatusCode::IM_A_TEAPOT
    );
    server.clear_faults();
    assert_eq!(
        send(&mut service, form_basic(&[GRANT])).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut service, form_basic(&[GRANT])).await.status(),
        StatusCode::OK
    );
    assert_eq!(server.last_request().expect("recorded").index, 6);
}

#[tokio::test(start_paused = true)]
async fn delay_follows_the_paused_clock() {
    let server = MockAuthServer::new();
    let mut service = server.service();
    server.fail_next(1, Fault::delay(Duration::from_secs(5)));
    server.fail_next(
        1,
        Fault::status(StatusCode::SERVICE_UNAVAILABLE).with_delay(Duration::from_secs(2)),
    );

    let start = Instant::now();
    let mut call = service.call(form_basic(&[GRANT]));
    assert!(timeout(Duration::from_secs(4), &mut call).await.is_err());
    let response = call.await.expect("response");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(response.status(), StatusCode::OK);
    // The token's lifetime starts when it is issued, after the delay.
    let issued = server.last_token().expect("token");
    assert_eq!(issued.issued_at, start + Duration::from_secs(5));

    let start = Instant::now();
    let response = send(&mut service, form_basic(&[GRANT])).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers() {
    let server = MockAuthServer::new();
    server.fail_next(1, Fault::hang());
    let call = server.service().call(form_basic(&[GRANT]));
    assert!(timeout(Duration::from_secs(3600), call).await.is_err());
    assert_eq!((server.token_requests(), server.issued()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn stalled_and_aborted_bodies() {
    let server = MockAuthServer::new();
    let mut service = server.service();
    server.fail_next(1, Fault::stall_body(r#"{"access_token":"#));
    server.fail_next(
        1,
        Fault::abort_body(r#"{"access"#).with_status(StatusCode::BAD_GATEWAY),
    );

    let response = send(&mut service, form_basic(&[GRANT])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let mut body = response.into_body();
    let frame = body.frame().await.expect("frame").expect("data");
    assert_eq!(frame.into_data().expect("data"), r#"{"access_token":"#);
    assert!(
        timeout(Duration::from_secs(60), body.frame())
            .await
            .is_err()
    );

    let response = send(&mut service, form_basic(&[GRANT])).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let mut body = response.into_body();
    let frame = body.frame().await.expect("frame").expect("data");
    assert_eq!(frame.into_data().expect("data"), r#"{"access"#);
    let error = body.frame().await.expect("frame").expect_err("error");
    assert!(error.is::<BodyAborted>(), "{error}");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn request_body_errors_fail_the_call() {
    let server = MockAuthServer::new();
    let body = Empty::<Bytes>::new()
        .map_err(|never: Infallible| -> BoxError { match never {} })
        .with_trailers(async { Some(Err::<HeaderMap, BoxError>("boom".into())) });
    let request = Request::post(format!("http://auth.test{TOKEN_PATH}"))
        .body(body)
        .expect("request");
    let error = server
        .service()
        .call(request)
        .await
        .expect_err("body error");
    assert_eq!(error.to_string(), "boom");
}
