use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::super::{MockAuthServer, dpop::DecodedProof, test_support::*};
use super::*;
use crate::BoxError;
use tower_service::Service;

const API_URL: &str = "http://api.test/v1/echo";

/// A DPoP-bound token for `key` from `server`, in memory.
async fn fetch_dpop_token(server: &MockAuthServer, key: &ProofKey) -> String {
    let mut request = form_basic(&[GRANT]);
    let proof = key.proof("POST", "http://auth.test/oauth/token", None, None);
    request
        .headers_mut()
        .insert("dpop", HeaderValue::from_str(&proof).expect("ascii"));
    let (status, _, body) = json(send(&mut server.service(), request).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    body["access_token"].as_str().expect("token").to_owned()
}

fn dpop_api_request(scheme: &str, token: &str, proofs: &[&str]) -> Request<Full<Bytes>> {
    let mut builder = Request::post(API_URL)
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::AUTHORIZATION, format!("{scheme} {token}"));
    for proof in proofs {
        builder = builder.header("dpop", *proof);
    }
    builder
        .body(Full::new(Bytes::from_static(b"hi")))
        .expect("request")
}

/// The status, the `WWW-Authenticate` challenge and the `DPoP-Nonce` header.
async fn outcome(
    api: &MockApi,
    request: Request<Full<Bytes>>,
) -> (StatusCode, String, Option<String>) {
    let (status, headers, _) = read(send(&mut api.service(), request).await).await;
    let challenge = headers
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let nonce = headers
        .get("dpop-nonce")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, challenge, nonce)
}

#[tokio::test]
async fn api_accepts_a_bound_token_with_a_valid_proof() {
    let server = MockAuthServer::new();
    let api = server.api();
    let key = ProofKey::es256();
    let token = fetch_dpop_token(&server, &key).await;
    let proof = key.proof("POST", API_URL, Some(&token), None);
    let (status, challenge, nonce) =
        outcome(&api, dpop_api_request("DPoP", &token, &[&proof])).await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    assert_eq!(nonce, None);
    let jti = DecodedProof::decode(&proof)
        .expect("decoded")
        .claim("jti")
        .map(str::to_owned);
    assert_eq!(api.seen_proof_jtis(), [jti.expect("jti")]);
    assert_eq!(api.accepted(), 1);
    let last = api.last_request_headers().expect("headers");
    assert!(last["dpop"].is_sensitive());
    assert!(!format!("{last:?}").contains(&proof));

    // The same proof again is a replay.
    let (status, challenge, _) = outcome(&api, dpop_api_request("DPoP", &token, &[&proof])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.starts_with(r#"DPoP error="invalid_dpop_proof""#),
        "{challenge}"
    );
    assert!(
        challenge.ends_with(r#"algs="ES256 EdDSA RS256""#),
        "{challenge}"
    );
    assert_eq!(api.rejected(RejectReason::DpopReplay), 1);
    assert_eq!(api.last_dpop_error(), Some(ProofError::Replay));

    // Plain bearer tokens still work.
    let bearer = fetch_token(&server).await;
    let (status, _, _) = outcome(&api, api_request(Some(&bearer), "x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.accepted(), 2);
}

#[tokio::test]
async fn api_dpop_rejections() {
    let server = MockAuthServer::new();
    let api = server.api();
    let key = ProofKey::ed25519();
    let token = fetch_dpop_token(&server, &key).await;
    let invalid_proof = r#"DPoP error="invalid_dpop_proof""#;
    let invalid_token = r#"DPoP error="invalid_token""#;
    type Case<'a> = (
        Request<Full<Bytes>>,
        RejectReason,
        &'a str,
        Option<ProofError>,
    );
    let cases: Vec<Case<'_>> = vec![
        // A bound token as Bearer (RFC 9449 §7.2), even with a valid proof.
        (
            dpop_api_request(
                "Bearer",
                &token,
                &[&key.proof("POST", API_URL, Some(&token), None)],
            ),
            RejectReason::DpopBoundAsBearer,
            invalid_token,
            None,
        ),
        // No proof, two proofs.
        (
            dpop_api_request("DPoP", &token, &[]),
            RejectReason::DpopProof,
            invalid_proof,
            Some(ProofError::Missing),
        ),
        (
            dpop_api_request(
                "DPoP",
                &token,
                &[
                    &key.proof("POST", API_URL, Some(&token), None),
                    &key.proof("POST", API_URL, Some(&token), None),
                ],
            ),
            RejectReason::DpopProof,
            invalid_proof,
            Some(ProofError::Multiple),
        ),
        // No ath, another token's ath, another method, another URL.
        (
            dpop_api_request("DPoP", &token, &[&key.proof("POST", API_URL, None, None)]),
            RejectReason::DpopProof,
            invalid_proof,
            Some(ProofError::MissingAth),
        ),
        (
            dpop_api_request(
                "DPoP",
                &token,
                &[&key.proof("POST", API_URL, Some("other"), None)],
            ),
            RejectReason::DpopProof,
            invalid_proof,
            Some(ProofError::Ath),
        ),
        (
            dpop_api_request(
                "DPoP",
                &token,
                &[&key.proof("GET", API_URL, Some(&token), None)],
            ),
            RejectReason::DpopProof,
            invalid_proof,
            Some(ProofError::Method),
        ),
        (
            dpop_api_request(
                "DPoP",
                &token,
                &[&key.proof("POST", "http://api.test/v1/other", Some(&token), None)],
            ),
            RejectReason::DpopProof,
            invalid_proof,
            Some(ProofError::Url),
        ),
        // A valid proof by another key.
        (
            dpop_api_request(
                "DPoP",
                &token,
                &[&ProofKey::es256().proof("POST", API_URL, Some(&token), None)],
            ),
            RejectReason::DpopKeyMismatch,
            invalid_proof,
            Some(ProofError::KeyMismatch),
        ),
    ];
    for (request, reason, prefix, error) in cases {
        let (status, challenge, _) = outcome(&api, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason:?}");
        assert!(challenge.starts_with(prefix), "{reason:?}: {challenge}");
        if let Some(error) = error {
            assert_eq!(api.last_dpop_error(), Some(error));
        }
    }
    // A bearer token with the DPoP scheme.
    let bearer = fetch_token(&server).await;
    let proof = key.proof("POST", API_URL, Some(&bearer), None);
    let (status, challenge, _) = outcome(&api, dpop_api_request("DPoP", &bearer, &[&proof])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.starts_with(invalid_token), "{challenge}");
    // An invalid token with the DPoP scheme gets a DPoP challenge.
    let (_, challenge, _) = outcome(&api, dpop_api_request("DPoP", "garbage", &[&proof])).await;
    assert!(challenge.starts_with(invalid_token), "{challenge}");

    assert_eq!(api.rejected(RejectReason::DpopBoundAsBearer), 1);
    assert_eq!(api.rejected(RejectReason::DpopProof), 6);
    assert_eq!(api.rejected(RejectReason::DpopKeyMismatch), 1);
    assert_eq!(api.rejected(RejectReason::DpopUnbound), 1);
    assert_eq!(api.rejected(RejectReason::Invalid), 1);
    assert_eq!(api.accepted(), 0);
    assert!(api.seen_proof_jtis().is_empty());
}

#[tokio::test]
async fn api_dpop_nonce_and_forced_rejections() {
    let server = MockAuthServer::builder().dpop_nonce(true).build();
    let api = server.api().dpop_nonce(true);
    let key = ProofKey::rs256();
    // The auth server's nonce is not the API's.
    let as_nonce = server.dpop_nonce().expect("auth server nonce");
    let mut request = form_basic(&[GRANT]);
    let proof = key.proof(
        "POST",
        "http://auth.test/oauth/token",
        None,
        Some(&as_nonce),
    );
    request
        .headers_mut()
        .insert("dpop", HeaderValue::from_str(&proof).expect("ascii"));
    let (status, _, body) = json(send(&mut server.service(), request).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let nonce = api.current_dpop_nonce().expect("API nonce");
    assert_ne!(nonce, as_nonce);

    for proof_nonce in [None, Some(as_nonce.as_str())] {
        let proof = key.proof("POST", API_URL, Some(&token), proof_nonce);
        let (status, challenge, sent) =
            outcome(&api, dpop_api_request("DPoP", &token, &[&proof])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            challenge.starts_with(r#"DPoP error="use_dpop_nonce""#),
            "{challenge}"
        );
        assert_eq!(sent.as_deref(), Some(nonce.as_str()));
    }
    let proof = key.proof("POST", API_URL, Some(&token), Some(&nonce));
    let (status, _, sent) = outcome(&api, dpop_api_request("DPoP", &token, &[&proof])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sent.as_deref(), Some(nonce.as_str()));

    // Rotation makes the old nonce stale.
    let fresh = api.rotate_dpop_nonce();
    let proof = key.proof("POST", API_URL, Some(&token), Some(&nonce));
    let (status, _, sent) = outcome(&api, dpop_api_request("DPoP", &token, &[&proof])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(sent.as_deref(), Some(fresh.as_str()));
    assert_eq!(api.last_dpop_error(), Some(ProofError::StaleNonce));
    assert_eq!(api.dpop_nonce_challenges(), 3);
    assert_eq!(api.rejected(RejectReason::DpopNonce), 3);

    // Forced rejections, then back to normal.
    api.reject_next_proofs(2);
    for _ in 0..2 {
        let proof = key.proof("POST", API_URL, Some(&token), Some(&fresh));
        let (status, challenge, _) =
            outcome(&api, dpop_api_request("DPoP", &token, &[&proof])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            challenge.starts_with(r#"DPoP error="invalid_dpop_proof""#),
            "{challenge}"
        );
    }
    let proof = key.proof("POST", API_URL, Some(&token), Some(&fresh));
    let (status, _, _) = outcome(&api, dpop_api_request("DPoP", &token, &[&proof])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.rejected(RejectReason::DpopForced), 2);
    assert_eq!(api.accepted(), 2);
}

#[tokio::test]
async fn api_dpop_over_a_socket_uses_the_listening_url() {
    let server = MockAuthServer::new();
    let api = server.api();
    let addr = api.serve().await.expect("listening");
    let key = ProofKey::es256();
    let token = fetch_dpop_token(&server, &key).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url = format!("http://{addr}/v1/orders?page=2");
    for (htu, ok) in [
        (format!("http://{addr}/v1/orders"), true),
        (format!("http://localhost:{}/v1/orders", addr.port()), false),
    ] {
        let proof = key.proof("GET", &htu, Some(&token), None);
        let request = Request::get(&url)
            .header(header::AUTHORIZATION, format!("DPoP {token}"))
            .header("dpop", proof)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = client.request(request).await.expect("response");
        assert_eq!(response.status() == StatusCode::OK, ok, "{htu}");
    }
    assert_eq!(api.last_dpop_error(), Some(ProofError::Url));
}

#[tokio::test]
async fn api_accepts_and_echoes() {
    let server = MockAuthServer::new();
    let api = MockApi::new(server.registry());
    let token = fetch_token(&server).await;
    let mut service = api.service();
    let (status, headers, bytes) =
        read(send(&mut service, api_request(Some(&token), "hello")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, "hello");
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
    let jti = server.last_token().expect("token").jti;
    assert_eq!(headers["x-token-jti"], jti.as_str());
    assert!(headers.get("x-trailers").is_none());
    assert_eq!(api.seen_jtis(), [jti]);
    assert_eq!(
        (api.accepted(), api.rejected_total(), api.requests()),
        (1, 0, 1)
    );
    let last = api.last_request_headers().expect("headers");
    assert!(last[header::AUTHORIZATION].is_sensitive());

    // Trailers are listed.
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    trailers.insert("x-other", HeaderValue::from_static("1"));
    let body = Full::new(Bytes::from_static(b"with trailers"))
        .map_err(|never: Infallible| -> BoxError { match never {} })
        .with_trailers(async move { Some(Ok(trailers)) });
    let request = Request::post("http://api.test/")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(body)
        .expect("request");
    let (status, headers, bytes) = read(service.call(request).await.expect("call")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, "with trailers");
    assert_eq!(headers["x-trailers"], "x-checksum=abc;x-other=1");
}

#[tokio::test]
async fn api_rejections() {
    let server = MockAuthServer::new();
    let api = server.api();
    let mut service = api.service();
    let token = fetch_token(&server).await;

    let (status, headers, bytes) = read(send(&mut service, api_request(None, "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Bearer realm="mock""#);
    assert!(bytes.is_empty());

    let (status, headers, _) =
        read(send(&mut service, api_request(Some("garbage"), "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenge = headers[header::WWW_AUTHENTICATE].to_str().expect("ascii");
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token", error_description=""#),
        "{challenge}"
    );

    // A valid token from another server.
    let other = MockAuthServer::new();
    let foreign = fetch_token(&other).await;
    let (status, _, _) = read(send(&mut service, api_request(Some(&foreign), "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.rejected(RejectReason::Invalid), 2);

    // Wrong audience.
    let strict = server.api().expected_audience("somewhere-else");
    let (status, _, _) =
        read(send(&mut strict.service(), api_request(Some(&token), "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(strict.rejected(RejectReason::WrongAudience), 1);
    strict.set_expected_audience(Some("mock-api".to_owned()));
    let (status, _, _) =
        read(send(&mut strict.service(), api_request(Some(&token), "")).await).await;
    assert_eq!(status, StatusCode::OK);

    // Forced.
    api.set_reject_all(true);
    let (status, _, _) = read(send(&mut service, api_request(Some(&token), "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    api.set_reject_all(false);

    // Revoked.
    assert!(server.revoke(&token));
    let (status, headers, _) = read(send(&mut service, api_request(Some(&token), "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("revoked")
    );

    let fresh = fetch_token(&server).await;
    let (status, _, _) = read(send(&mut service, api_request(Some(&fresh), "")).await).await;
    assert_eq!(status, StatusCode::OK);
    server.revoke_all();
    let (status, _, _) = read(send(&mut service, api_request(Some(&fresh), "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(api.rejected(RejectReason::Missing), 1);
    assert_eq!(api.rejected(RejectReason::Forced), 1);
    assert_eq!(api.rejected(RejectReason::Revoked), 2);
    assert_eq!(api.rejected(RejectReason::Expired), 0);
    assert_eq!(api.rejected_total(), 6);
    assert_eq!(api.accepted(), 1);
    assert!(!server.revoke("unknown"));
}

#[tokio::test(start_paused = true)]
async fn api_expiry_on_the_paused_clock() {
    let server = MockAuthServer::new();
    let api = server.api();
    let mut service = api.service();
    let token = fetch_token(&server).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    let (status, _, _) = read(send(&mut service, api_request(Some(&token), "")).await).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(server.last_token().expect("token").is_expired());
    let (status, headers, body) =
        read(send(&mut service, api_request(Some(&token), "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("expired")
    );
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(api.rejected(RejectReason::Expired), 1);
}

#[tokio::test(start_paused = true)]
async fn api_delay() {
    let server = MockAuthServer::new();
    let api = server.api().delay(Duration::from_millis(250));
    let start = Instant::now();
    let (status, _, _) = read(send(&mut api.service(), api_request(None, "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    api.set_delay(None);
    let start = Instant::now();
    send(&mut api.service(), api_request(None, "")).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn api_grpc_mode() {
    let server = MockAuthServer::new();
    let api = server.api().grpc(true);
    let mut service = api.service();
    let (status, headers, bytes) =
        read(send(&mut service, api_request(Some("garbage"), "")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "16");
    assert_eq!(headers[header::CONTENT_TYPE], "application/grpc");
    assert!(
        headers["grpc-message"]
            .to_str()
            .expect("ascii")
            .contains("malformed")
    );
    assert!(bytes.is_empty());

    let token = fetch_token(&server).await;
    let request = Request::post("http://api.test/pkg.Svc/Method")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01x")))
        .expect("request");
    let response = send(&mut service, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("grpc-status").is_none());
    let collected = response.into_body().collect().await.expect("body");
    assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x01x"[..]);
}
