//! DPoP (RFC 9449) against the embedded servers, which verify every proof as RFC 9449 §4.3
//! says (signature with the header's JWK, `typ`, `htm`, `htu`, `iat`, `jti` replay, `ath`,
//! nonce, key thumbprint against the token's `cnf.jkt`). On tokio's paused clock, in memory.

mod common;

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt, service_fn};
use tower_client_credentials::{
    BearerAuthLayer, ClientCredentials, DpopAlgorithm, DpopError, DpopKey, Origin, TokenError,
    TokenHandle,
};
use tower_client_credentials_testkit::{MockApi, MockAuthServer, RejectReason, dpop::DecodedProof};

use common::{builder, client, request, send};

const HOUR: Duration = Duration::from_secs(3600);

fn key() -> DpopKey {
    DpopKey::generate(DpopAlgorithm::ES256).unwrap()
}

fn claim<'a>(proof: &'a DecodedProof, name: &str) -> Option<&'a str> {
    proof.claims.get(name).and_then(|value| value.as_str())
}

#[tokio::test(start_paused = true)]
async fn token_requests_carry_a_proof_and_get_a_bound_token() {
    for algorithm in [DpopAlgorithm::ES256, DpopAlgorithm::EdDSA] {
        let auth = MockAuthServer::builder()
            .lifetime(HOUR)
            .require_dpop(true)
            .build();
        let key = DpopKey::generate(algorithm).unwrap();
        let handle = builder(&auth)
            .dpop(key.clone())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();

        let token = handle.current().unwrap();
        assert_eq!(token.token_type(), "DPoP");
        assert!(token.header_value().to_str().unwrap().starts_with("DPoP "));
        assert_eq!(auth.dpop_proofs(), 1);
        assert_eq!(auth.dpop_rejected(), 0);
        let issued = auth.last_token().unwrap();
        assert_eq!(issued.dpop_jkt.as_deref(), Some(key.thumbprint()));
        assert_eq!(handle.dpop_key().unwrap().thumbprint(), key.thumbprint());

        let proof = auth.last_dpop_proof().unwrap();
        assert_eq!(proof.header["typ"], "dpop+jwt");
        assert_eq!(proof.header["alg"], algorithm.as_str());
        assert_eq!(claim(&proof, "htm"), Some("POST"));
        assert_eq!(claim(&proof, "htu"), Some("http://127.0.0.1/oauth/token"));
        assert_eq!(claim(&proof, "ath"), None, "no token yet, so no ath");
    }
}

#[tokio::test(start_paused = true)]
async fn the_token_endpoint_nonce_is_learned_once_and_followed_when_it_changes() {
    let auth = MockAuthServer::builder()
        .lifetime(Duration::from_secs(10))
        .require_dpop(true)
        .dpop_nonce(true)
        .build();
    let handle = builder(&auth)
        .dpop(key())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // The first request is answered `use_dpop_nonce`; the second carries the nonce.
    assert_eq!(auth.token_requests(), 2);
    assert_eq!(auth.dpop_nonce_challenges(), 1);
    assert_eq!(handle.current().unwrap().token_type(), "DPoP");
    let nonce = auth.dpop_nonce().unwrap();
    assert_eq!(
        claim(&auth.last_dpop_proof().unwrap(), "nonce"),
        Some(nonce.as_str())
    );

    // The refresh uses the remembered nonce: no new challenge.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(auth.token_requests(), 3);
    assert_eq!(auth.dpop_nonce_challenges(), 1);

    // A new nonce costs one more round trip, once.
    let rotated = auth.rotate_dpop_nonce();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(auth.token_requests(), 5);
    assert_eq!(auth.dpop_nonce_challenges(), 2);
    assert_eq!(
        claim(&auth.last_dpop_proof().unwrap(), "nonce"),
        Some(rotated.as_str())
    );
    assert!(handle.current().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_bearer_answer_to_a_dpop_request_is_refused() {
    // A server that binds the token but says `Bearer`, and one without DPoP at all.
    let misbehaving = MockAuthServer::builder()
        .lifetime(HOUR)
        .dpop_bound_as_bearer(true)
        .build();
    let without_dpop = MockAuthServer::builder().lifetime(HOUR).dpop(false).build();
    for auth in [misbehaving, without_dpop] {
        let error = builder(&auth)
            .dpop(key())
            .permanent_retry(Duration::from_secs(60))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap_err();
        assert!(
            matches!(&error, TokenError::NotDpopBound { token_type } if token_type == "Bearer"),
            "{error:?}"
        );
        assert!(!error.is_transient());
        assert!(error.to_string().contains("does not do DPoP"), "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_dpop_token_for_a_client_without_a_key_is_refused() {
    let auth = MockAuthServer::builder()
        .lifetime(HOUR)
        .token_type("DPoP")
        .build();
    let error = builder(&auth).build().unwrap().start().await.unwrap_err();
    assert!(
        matches!(&error, TokenError::UnsupportedTokenType { token_type } if token_type == "DPoP"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("ClientCredentialsBuilder::dpop"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_that_requires_dpop_refuses_a_client_without_it() {
    let auth = MockAuthServer::builder()
        .lifetime(HOUR)
        .require_dpop(true)
        .build();
    let error = builder(&auth).build().unwrap().start().await.unwrap_err();
    // No key, so no proof: the server requires one.
    assert_eq!(error.oauth_error(), Some("invalid_dpop_proof"), "{error:?}");
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(auth.dpop_rejected(), 1);
}

#[test]
fn keys_print_no_secret() {
    let pem = tower_client_credentials_testkit::keys::TestKey::p256()
        .private_pem()
        .into_bytes();
    let key = DpopKey::from_pem(DpopAlgorithm::ES256, &pem).unwrap();
    let debug = format!("{key:?}");
    assert!(debug.contains("[redacted]") && debug.contains(key.thumbprint()));
    let config = common::builder(&MockAuthServer::new()).dpop(key);
    let debug = format!("{config:?}");
    assert!(debug.contains(&key_thumbprint(&pem)), "{debug}");
    let body: String = String::from_utf8_lossy(&pem)
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(!debug.contains(&body[..16]), "{debug}");
}

fn key_thumbprint(pem: &[u8]) -> String {
    DpopKey::from_pem(DpopAlgorithm::ES256, pem)
        .unwrap()
        .thumbprint()
        .to_owned()
}

/// An authorization server that requires DPoP, its API, and a started DPoP handle.
async fn dpop_setup(api_nonce: bool) -> (MockAuthServer, MockApi, TokenHandle) {
    let auth = MockAuthServer::builder()
        .lifetime(HOUR)
        .require_dpop(true)
        .build();
    let api = auth.api().dpop_nonce(api_nonce);
    let handle = builder(&auth)
        .dpop(key())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    (auth, api, handle)
}

#[tokio::test(start_paused = true)]
async fn every_api_request_carries_its_own_proof() {
    let (auth, api, handle) = dpop_setup(false).await;
    let service = client(&handle, &api);
    let mut requests = JoinSet::new();
    for _ in 0..200 {
        let service = service.clone();
        requests.spawn(async move { send(&service, request("payload")).await });
    }
    while let Some(result) = requests.join_next().await {
        let (status, body) = result.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "payload");
    }
    assert_eq!(api.accepted(), 200);
    assert_eq!(api.rejected_total(), 0);
    let jtis = api.seen_proof_jtis();
    assert_eq!(jtis.len(), 200);
    assert_eq!(jtis.iter().collect::<HashSet<_>>().len(), 200, "unique jti");
    assert_eq!(auth.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_api_nonce_costs_one_retry_per_nonce() {
    let (auth, api, handle) = dpop_setup(true).await;
    let service = client(&handle, &api);

    // The first request learns the nonce from its 401 and is sent again with it, body and all.
    let (status, body) = send(&service, request("first")).await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"first"[..]));
    assert_eq!(api.dpop_nonce_challenges(), 1);
    assert_eq!(api.rejected(RejectReason::DpopNonce), 1);

    // Later requests carry it from the start.
    for _ in 0..50 {
        assert_eq!(
            send(&service, request("x")).await.unwrap().0,
            StatusCode::OK
        );
    }
    assert_eq!(api.dpop_nonce_challenges(), 1);

    // A rotated nonce costs one more round trip, once; the token is kept throughout.
    api.rotate_dpop_nonce();
    for _ in 0..10 {
        assert_eq!(
            send(&service, request("x")).await.unwrap().0,
            StatusCode::OK
        );
    }
    assert_eq!(api.dpop_nonce_challenges(), 2);
    assert_eq!(api.accepted(), 61);
    assert_eq!(
        auth.token_requests(),
        1,
        "a nonce is not a reason for a new token"
    );
}

#[tokio::test(start_paused = true)]
async fn nonces_are_learned_even_without_retries() {
    let (_auth, api, handle) = dpop_setup(true).await;
    let service = BearerAuthLayer::new(handle)
        .retry_unauthorized(false)
        .layer(api.service());
    // Not retried: the challenge comes back, but the nonce is kept for the next request.
    assert_eq!(
        send(&service, request("x")).await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&service, request("x")).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(api.dpop_nonce_challenges(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_proof_is_retried_once_with_a_new_proof_and_the_same_token() {
    let (auth, api, handle) = dpop_setup(false).await;
    let service = client(&handle, &api);

    api.reject_next_proofs(1);
    let (status, body) = send(&service, request("payload")).await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"payload"[..]));
    assert_eq!(api.rejected(RejectReason::DpopForced), 1);
    assert_eq!(auth.token_requests(), 1, "the token was fine");

    // Refused twice: sent twice, and the second 401 is the answer.
    api.reject_next_proofs(2);
    let (status, _) = send(&service, request("payload")).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.rejected(RejectReason::DpopForced), 3);
    assert_eq!(api.accepted(), 1);
    assert_eq!(auth.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_replaced_and_the_retry_gets_a_proof_for_the_new_one() {
    let (auth, api, handle) = dpop_setup(false).await;
    let service = client(&handle, &api);
    assert_eq!(
        send(&service, request("x")).await.unwrap().0,
        StatusCode::OK
    );
    auth.revoke_all();

    let mut requests = JoinSet::new();
    for _ in 0..100 {
        let service = service.clone();
        requests.spawn(async move { send(&service, request("payload")).await });
    }
    while let Some(result) = requests.join_next().await {
        assert_eq!(result.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(auth.token_requests(), 2, "one new token for all");
    assert_eq!(api.accepted(), 101);
    assert_eq!(api.rejected(RejectReason::DpopProof), 0);
    assert_eq!(handle.current().unwrap().token_type(), "DPoP");
}

#[tokio::test(start_paused = true)]
async fn relative_uris_need_the_dpop_origin() {
    let (_auth, api, handle) = dpop_setup(false).await;
    let relative = || {
        Request::post("/api/orders")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap()
    };

    // Without it the request fails before it is sent, saying why.
    let service = client(&handle, &api);
    let error = service.oneshot(relative()).await.unwrap_err();
    assert!(
        matches!(
            error,
            tower_client_credentials::BearerAuthError::Dpop(DpopError::RelativeUri)
        ),
        "{error:?}"
    );
    assert_eq!(api.requests(), 0);

    // With it, the proof names the origin that a channel below the layer adds (as tonic's
    // does).
    let api_service = api.service();
    let add_origin = service_fn(move |mut request: Request<Full<Bytes>>| {
        let uri: Uri = format!("http://127.0.0.1{}", request.uri().path())
            .parse()
            .unwrap();
        *request.uri_mut() = uri;
        api_service.clone().oneshot(request)
    });
    let service = BearerAuthLayer::new(handle)
        .dpop_origin("http://127.0.0.1".parse::<Origin>().unwrap())
        .layer(add_origin);
    let response = service.oneshot(relative()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_set_binds_every_key_to_the_one_dpop_key() {
    use tower_client_credentials::{TokenKey, TokenSetLayer};

    let auth = MockAuthServer::builder()
        .lifetime(HOUR)
        .require_dpop(true)
        .start()
        .await
        .unwrap();
    let (a, b) = (auth.api(), auth.api().dpop_nonce(true));
    a.serve().await.unwrap();
    b.serve().await.unwrap();
    let key = key();
    let set = ClientCredentials::builder(
        auth.token_url(),
        tower_client_credentials_testkit::DEFAULT_CLIENT_ID,
        tower_client_credentials_testkit::DEFAULT_CLIENT_SECRET,
    )
    .dpop(key.clone())
    .build_set()
    .unwrap()
    .route(a.url().parse().unwrap(), TokenKey::new().audience("api-a"))
    .unwrap()
    .route(b.url().parse().unwrap(), TokenKey::new().audience("api-b"))
    .unwrap()
    .start()
    .await
    .unwrap();
    let client = TokenSetLayer::new(set).layer(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>(),
    );
    for api in [&a, &b, &a, &b] {
        let request = Request::get(format!("{}/orders", api.url()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!((a.accepted(), b.accepted()), (2, 2));
    assert_eq!(b.dpop_nonce_challenges(), 1, "b's nonce learned once");
    let tokens = auth.tokens();
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens
            .iter()
            .all(|token| token.dpop_jkt.as_deref() == Some(key.thumbprint()))
    );
}

/// The retry's answer is read like the first attempt's: a nonce it brings is kept. Here the
/// token is revoked and the API's nonce rotated at once; the retry (new token, old nonce) is
/// answered `use_dpop_nonce` with the new nonce, which comes back to the caller (one retry per
/// request) but is learned: the next request carries it and passes at the first attempt, and
/// the new token, refused for its proof and not for itself, is kept.
#[tokio::test(start_paused = true)]
async fn the_retry_s_response_teaches_the_nonce_too() {
    let (auth, api, handle) = dpop_setup(true).await;
    let service = client(&handle, &api);
    assert_eq!(
        send(&service, request("x")).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(api.dpop_nonce_challenges(), 1);

    auth.revoke_all();
    api.rotate_dpop_nonce();
    let (status, _) = send(&service, request("x")).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the retry's own refusal");
    assert_eq!(api.rejected(RejectReason::Revoked), 1);
    assert_eq!(api.dpop_nonce_challenges(), 2);
    assert_eq!(auth.token_requests(), 2);

    let accepted = api.accepted();
    assert_eq!(
        send(&service, request("x")).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(api.accepted(), accepted + 1);
    assert_eq!(api.dpop_nonce_challenges(), 2, "no third challenge");
    assert_eq!(auth.token_requests(), 2, "the new token was kept");
}

/// A 401 whose `WWW-Authenticate` does not parse (a `=` where a scheme or parameter name
/// should start) ends the request with that 401 after the one retry, and never hangs: a DPoP
/// client reads the challenge to tell a refused proof from a refused token.
#[test]
fn malformed_challenges_end_the_request_with_the_401() {
    for challenge in [
        "=",
        r#"Bearer realm="x", =b"#,
        r#"DPoP error="use_dpop_nonce", =, ="#,
        r#"DPoP error="unterminated"#,
        ",,, \\",
    ] {
        let (status, calls) = on_its_own_runtime(move || refused_with(challenge));
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
        assert_eq!(calls, 2, "one retry with a new token: {challenge}");
    }
}

/// Runs `task` on a paused-clock runtime of its own thread and returns its output. A parser
/// that loops inside `poll` blocks its runtime, so no tokio timer can end it: the thread is
/// given a minute of wall time (a correct run takes milliseconds) before the test fails
/// rather than hang.
fn on_its_own_runtime<F, Fut, T>(task: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let output = runtime.block_on(task());
        let _ = done.send(());
        output
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the request did not return: a challenge parser loops")
        }
        // Done, or the thread panicked: either way, joining returns at once.
        _ => thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
    }
}

/// Sends one DPoP request to an API that answers every request 401 with `challenge`; returns
/// the status the caller got and how many requests the API saw.
async fn refused_with(challenge: &'static str) -> (StatusCode, usize) {
    let auth = MockAuthServer::builder()
        .lifetime(HOUR)
        .require_dpop(true)
        .build();
    let handle = builder(&auth)
        .dpop(key())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let api = service_fn({
        let calls = Arc::clone(&calls);
        move |_: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let response = http::Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(http::header::WWW_AUTHENTICATE, challenge)
                .body(Full::new(Bytes::new()))
                .unwrap();
            std::future::ready(Ok::<_, Infallible>(response))
        }
    });
    let service = BearerAuthLayer::new(handle).layer(api);
    let response = tokio::time::timeout(HOUR, service.oneshot(request("payload")))
        .await
        .expect("the request returns")
        .unwrap();
    (response.status(), calls.load(Ordering::SeqCst))
}
