//! Interoperability with Keycloak, the authorization server most teams run themselves (issue
//! 20): the checks of `tests/interop` (oidc-provider), against Keycloak's server distribution
//! (`org.keycloak:keycloak-quarkus-dist` from Maven Central, 26.4 or later) started by the
//! first test (`server.rs`) and shared by all of them, with the realm of `realm.json`.
//!
//! `KEYCLOAK_HOME` (the unpacked zip) and `JAVA_HOME` (Java 21 or later) must be set, so plain
//! `cargo test` reports these tests as ignored; `tests/keycloak/run.sh` (and `.ci/run`) fetches
//! both and runs them. Asked for without their prerequisites, they fail and say what is
//! missing. Where Keycloak and oidc-provider differ, and what the crate does
//! about it: tests/keycloak/README.md.
//!
//! Keycloak is another process with its own clock, so these tests run in real time and assert
//! counts, never durations. The load test (20 s) runs alone.

#[path = "../real_servers/mod.rs"]
mod real_servers;

mod resource_server;
mod server;

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tower::ServiceExt;
use tower_client_credentials::{
    AssertionAudience, AuthMethod, ClientCredentials, ClientCredentialsBuilder, ClientKey,
    DpopAlgorithm, DpopKey, SigningAlgorithm,
};

use real_servers::{
    http::{announce, api, get, http_client},
    load,
    oauth::start_error,
    resource_server::tampered,
};
use resource_server::ResourceServer;
use server::{Keycloak, ROTATION_LIFESPAN};

// The clients of realm.json.
const BASIC: (&str, &str) = ("basic-client", "basic-secret-0123456789");
/// Needs form-urlencoding in the Basic header: `@`, space, `+`, `:`, `/`, `%`, `?`, `&`, `=`.
const AWKWARD: (&str, &str) = ("awkward-client", "p@ss w+rd:/%?&=");
const JWT_SECRET: (&str, &str) = (
    "jwt-secret-client",
    "jwt-secret-client-hs256-key-0123456789abcdef0123456789abcdef0123",
);
const DPOP: (&str, &str) = ("dpop-client", "dpop-secret-0123456789");
const REVOKE: (&str, &str) = ("revoke-client", "revoke-secret-0123456789");
const ROTATION: (&str, &str) = ("rotation-client", "rotation-secret-0123456789");
const BOTH_SCOPES: [&str; 2] = ["api:read", "api:write"];

fn builder(kc: &Keycloak, client: (&str, &str)) -> ClientCredentialsBuilder {
    ClientCredentials::builder(kc.token_url(), client.0, client.1)
}

/// The claims of a JWT, unchecked.
fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// A space-separated scope as a set: Keycloak does not keep the requested order.
fn scope_set(scope: Option<&str>) -> BTreeSet<String> {
    scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The resource server's own checks, so that "accepted" elsewhere means something: it takes a
/// fresh Keycloak JWT and refuses a missing, tampered or expired one, and one that another
/// server (the introspecting resource server) finds revoked.
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn resource_server_rejects_what_it_should() {
    let kc = Keycloak::shared("resource_server_rejects_what_it_should").await;
    let rs = ResourceServer::jwt(&kc).await;
    let send = |token: Option<String>| {
        let url = rs.url("/orders");
        async move {
            let mut request = Request::get(url);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = request.body(Full::new(Bytes::new())).expect("request");
            http_client().request(request).await.expect("sent").status()
        }
    };
    let fresh = kc.raw_token(BASIC).await;
    let jwt = fresh["access_token"].as_str().expect("token").to_owned();
    assert_eq!(send(Some(jwt.clone())).await, StatusCode::OK);
    assert_eq!(send(None).await, StatusCode::UNAUTHORIZED);
    let tampered = tampered(&jwt);
    assert_eq!(send(Some(tampered)).await, StatusCode::UNAUTHORIZED);
    // A 1-second token of `rotation-client`, just after its `exp`.
    let short = kc.raw_token(ROTATION).await;
    let short = short["access_token"].as_str().expect("token").to_owned();
    let exp = jwt_claims(&short)["exp"].as_u64().expect("exp");
    if let Ok(wait) = (UNIX_EPOCH + Duration::from_secs(exp)).duration_since(SystemTime::now()) {
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
    }
    assert_eq!(send(Some(short)).await, StatusCode::UNAUTHORIZED);
    assert_eq!((rs.accepted(), rs.rejected()), (1, 3));
    assert_eq!(
        rs.reasons(),
        ["no token", "InvalidSignature", "ExpiredSignature"]
    );
    assert_eq!(rs.claims()[0].azp, BASIC.0);
}

/// `client_secret_basic` and `client_secret_post`, with a plain secret and with
/// `p@ss w+rd:/%?&=`, get tokens the resource server accepts. Keycloak URL-decodes the Basic
/// credentials (RFC 6749 §2.3.1), `+` and `%20` alike, so a raw `+` would be a space: the
/// crate's form-urlencoding is what makes the awkward secret work. Keycloak takes either method
/// from a `client-secret` client (no strict mode as in oidc-provider's `STRICT_CLIENT_AUTH`).
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn tokens_with_basic_post_and_the_awkward_secret() {
    let kc = Keycloak::shared("tokens_with_basic_post_and_the_awkward_secret").await;
    let rs = ResourceServer::jwt(&kc).await;
    let cases = [
        (BASIC, AuthMethod::ClientSecretBasic),
        (BASIC, AuthMethod::ClientSecretPost),
        (AWKWARD, AuthMethod::ClientSecretBasic),
        (AWKWARD, AuthMethod::ClientSecretPost),
    ];
    for (client, method) in cases {
        let handle = builder(&kc, client)
            .auth_method(method)
            .scopes(BOTH_SCOPES)
            .build()
            .expect("configuration")
            .start()
            .await
            .unwrap_or_else(|e| panic!("{} with {}: {e}", client.0, method.as_str()));
        let token = handle.current().expect("a token");
        assert_eq!(
            scope_set(token.scope()),
            scope_set(Some("api:read api:write"))
        );
        assert_eq!(get(&api(&handle), &rs.url("/orders")).await, StatusCode::OK);
    }
    let clients: Vec<_> = rs.claims().into_iter().map(|c| c.azp).collect();
    assert_eq!(clients, [BASIC.0, BASIC.0, AWKWARD.0, AWKWARD.0]);
    assert_eq!((rs.accepted(), rs.rejected()), (4, 0));

    // What Keycloak does with the Basic header, by hand: `+` and `%20` are both a space, and
    // the raw secret (`+` taken as a space, `%?&` not an escape) is refused.
    let token_url = kc.token_url();
    let grant = [("grant_type", "client_credentials")];
    for (credentials, expected) in [
        ("awkward-client:p%40ss+w%2Brd%3A%2F%25%3F%26%3D", 200),
        ("awkward-client:p%40ss%20w%2Brd%3A%2F%25%3F%26%3D", 200),
        ("awkward-client:p@ss w+rd:/%?&=", 400),
    ] {
        use base64::engine::general_purpose::STANDARD;
        let basic = format!("Basic {}", STANDARD.encode(credentials));
        let (status, _, body) = kc
            .send(
                Method::POST,
                &token_url,
                None,
                &grant,
                &[("authorization", &basic)],
            )
            .await;
        assert_eq!(
            status.as_u16(),
            expected,
            "{credentials}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// A wrong secret gives Keycloak's `401 unauthorized_client` ("Invalid client or Invalid client
/// credentials", where oidc-provider says `invalid_client`): a typed, permanent `TokenError`
/// whose text names `unauthorized_client` and not the secret. An unknown client gets
/// `401 invalid_client`, with the same description.
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn a_wrong_secret_is_unauthorized_client() {
    let kc = Keycloak::shared("a_wrong_secret_is_unauthorized_client").await;
    let wrong = "not-the-secret-4242";
    let mut answers = Vec::new();
    for (id, method) in [
        (BASIC.0, AuthMethod::ClientSecretBasic),
        (BASIC.0, AuthMethod::ClientSecretPost),
        ("no-such-client", AuthMethod::ClientSecretBasic),
        ("no-such-client", AuthMethod::ClientSecretPost),
    ] {
        let error = builder(&kc, (id, wrong))
            .auth_method(method)
            .build()
            .expect("configuration")
            .start()
            .await
            .expect_err("a wrong secret");
        let text = format!("{error} {error:?}");
        assert!(!text.contains(wrong), "the secret leaked: {text}");
        assert!(!error.is_transient(), "{error}");
        let code = error.oauth_error().unwrap_or_default().to_owned();
        assert!(error.to_string().contains(&code), "{error}");
        answers.push(format!(
            "{id} {}: {} {code}",
            method.as_str(),
            error.status().map_or(0, |s| s.as_u16())
        ));
    }
    assert_eq!(
        answers,
        [
            "basic-client client_secret_basic: 401 unauthorized_client",
            "basic-client client_secret_post: 401 unauthorized_client",
            "no-such-client client_secret_basic: 401 invalid_client",
            "no-such-client client_secret_post: 401 invalid_client",
        ]
    );
}

/// `client_secret_jwt` (HS256) and `private_key_jwt` (ES256 and RS256, keys generated for this
/// run and registered as the clients' JWKS), configured from the issuer URL alone: discovery
/// finds Keycloak's RFC 8414 document (`/.well-known/oauth-authorization-server/realms/tcc`),
/// whose issuer matches exactly. The assertion's `aud` may be the token endpoint or the issuer.
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn client_assertions_through_discovery() {
    let kc = Keycloak::shared("client_assertions_through_discovery").await;
    let rs = ResourceServer::jwt(&kc).await;
    let issuer = kc.issuer();

    // Both metadata documents are there, with the same issuer.
    for path in [
        format!(
            "{}/.well-known/oauth-authorization-server/realms/tcc",
            kc.base()
        ),
        format!("{issuer}/.well-known/openid-configuration"),
    ] {
        let (status, _, body) = kc.send(Method::GET, &path, None, &[], &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let metadata: Value = serde_json::from_slice(&body).expect("metadata JSON");
        assert_eq!(metadata["issuer"], issuer.as_str(), "{path}");
        assert_eq!(
            metadata["token_endpoint"],
            kc.token_url().as_str(),
            "{path}"
        );
    }

    let keyed = [
        ("pkjwt-es256-client", kc.keys.es256.clone()),
        ("pkjwt-rs256-client", kc.keys.rs256.clone()),
    ];
    for (client_id, key) in keyed {
        for audience in [AssertionAudience::TokenEndpoint, AssertionAudience::Issuer] {
            let handle = ClientCredentials::from_issuer_with_key(&issuer, client_id, key.clone())
                .scopes(["api:read"])
                .assertion_audience(audience.clone())
                .discover()
                .await
                .expect("discovery")
                .build()
                .expect("configuration")
                .start()
                .await
                .unwrap_or_else(|e| panic!("{client_id} with aud {audience:?}: {e}"));
            let token = handle.current().expect("a token");
            assert_eq!(token.scope(), Some("api:read"));
            assert_eq!(get(&api(&handle), &rs.url("/orders")).await, StatusCode::OK);
        }
    }
    let handle = ClientCredentials::from_issuer(&issuer, JWT_SECRET.0, JWT_SECRET.1)
        .auth_method(AuthMethod::ClientSecretJwt)
        .discover()
        .await
        .expect("discovery")
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("jwt-secret-client");
    assert_eq!(get(&api(&handle), &rs.url("/orders")).await, StatusCode::OK);

    let clients: Vec<_> = rs.claims().into_iter().map(|c| c.azp).collect();
    assert_eq!(
        clients,
        [
            "pkjwt-es256-client",
            "pkjwt-es256-client",
            "pkjwt-rs256-client",
            "pkjwt-rs256-client",
            JWT_SECRET.0
        ]
    );

    // A P-256 key Keycloak has never seen (made by this test): `400 invalid_client` ("Client
    // authentication with signed JWT failed: Signature on JWT token failed validation"), and
    // an RS256 key for this ES256 client too ("Invalid signature algorithm").
    let pem = tower_client_credentials_testkit::keys::TestKey::new_p256().private_pem();
    let unknown = ClientKey::from_pem(SigningAlgorithm::ES256, pem)
        .expect("key")
        .with_key_id(kc.keys.es256.key_id().expect("kid"));
    let stranger =
        ClientCredentials::builder_with_key(kc.token_url(), "pkjwt-es256-client", unknown);
    start_error(stranger, 400, "invalid_client").await;
    let wrong_algorithm = ClientCredentials::builder_with_key(
        kc.token_url(),
        "pkjwt-es256-client",
        kc.keys.rs256.clone(),
    );
    start_error(wrong_algorithm, 400, "invalid_client").await;
}

/// Keycloak (26.2 and later) refuses a client assertion used more than 60 s after its `iat`,
/// even when its `exp` is later: `400 invalid_client`, "Token was issued too far in the past
/// to be used now". The crate signs a new assertion for each token request, with
/// `iat` = now, so this never happens to it; shown here with an assertion made by hand.
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn an_assertion_older_than_60_s_is_refused() {
    let kc = Keycloak::shared("an_assertion_older_than_60_s_is_refused").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let assertion = |iat: u64| {
        let claims = serde_json::json!({
            "iss": JWT_SECRET.0, "sub": JWT_SECRET.0, "aud": kc.token_url(),
            "jti": format!("{:016x}", fastrand::u64(..)),
            "iat": iat, "exp": now + 120,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.1.as_bytes()),
        )
        .expect("sign")
    };
    let mut statuses = Vec::new();
    for iat in [now, now - 90] {
        let jwt = assertion(iat);
        let form = [
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &jwt),
        ];
        let (status, _, body) = kc
            .send(Method::POST, &kc.token_url(), None, &form, &[])
            .await;
        statuses.push((status.as_u16(), String::from_utf8_lossy(&body).into_owned()));
    }
    assert_eq!(statuses[0].0, 200, "{statuses:?}");
    assert_eq!(statuses[1].0, 400, "{statuses:?}");
    assert!(
        statuses[1].1.contains(r#""invalid_client""#),
        "{statuses:?}"
    );
    assert!(
        statuses[1].1.contains("too far in the past"),
        "{statuses:?}"
    );
}

/// DPoP (on by default from Keycloak 26.4): `dpop-client` (`dpop.bound.access.tokens`) gets a
/// `DPoP` token bound to the crate's key (`cnf.jkt`), and the resource server accepts the
/// crate's proofs, checking them against the JWT and, independently, against Keycloak's
/// introspection. Without a key Keycloak refuses it with `400 invalid_request` ("DPoP proof is
/// missing"; oidc-provider says `invalid_grant`).
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn dpop_bound_tokens_are_verified_by_the_resource_server() {
    let kc = Keycloak::shared("dpop_bound_tokens_are_verified_by_the_resource_server").await;
    let error = builder(&kc, DPOP)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect_err("dpop-client without a proof");
    assert_eq!(error.oauth_error(), Some("invalid_request"), "{error}");
    assert!(!error.is_transient());

    for algorithm in [DpopAlgorithm::ES256, DpopAlgorithm::EdDSA] {
        let key = DpopKey::generate(algorithm).expect("key");
        let handle = builder(&kc, DPOP)
            .dpop(key.clone())
            .build()
            .expect("configuration")
            .start()
            .await
            .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        let token = handle.current().expect("a token");
        assert_eq!(token.token_type(), "DPoP", "{algorithm}");
        assert_eq!(
            jwt_claims(token.access_token())["cnf"]["jkt"],
            key.thumbprint(),
            "{algorithm}"
        );
        let api = api(&handle);
        for rs in [
            ResourceServer::jwt(&kc).await,
            ResourceServer::introspecting(&kc).await,
        ] {
            for i in 0..5 {
                let request = Request::post(rs.url(&format!("/orders/{i}?q=1")))
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .expect("request");
                let response = api.clone().oneshot(request).await.expect("sent");
                assert_eq!(response.status(), StatusCode::OK, "{:?}", rs.reasons());
            }
            assert_eq!((rs.dpop_accepted(), rs.rejected()), (5, 0), "{algorithm}");
        }
        // The token as a plain bearer token is refused.
        let rs = ResourceServer::jwt(&kc).await;
        let request = Request::get(rs.url("/orders"))
            .header("authorization", format!("Bearer {}", token.access_token()))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let status = http_client().request(request).await.expect("sent").status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(rs.reasons(), ["DPoP-bound token as Bearer"]);
    }
}

/// A token revoked at `/protocol/openid-connect/revoke` is refused by the resource server
/// (which introspects every token); the middleware gets one new token and the request
/// succeeds on its one retry. Keycloak's events count the token requests.
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn a_revoked_token_is_replaced_after_one_retry() {
    let kc = Keycloak::shared("a_revoked_token_is_replaced_after_one_retry").await;
    let rs = ResourceServer::introspecting(&kc).await;
    let (before, _) = kc.client_logins(REVOKE.0).await;
    let handle = builder(&kc, REVOKE)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("first token");
    let first = handle.current().expect("token");
    let api = api(&handle);
    let url = rs.url("/orders");
    assert_eq!(get(&api, &url).await, StatusCode::OK);

    let (status, _, body) = kc
        .send(
            Method::POST,
            &kc.endpoint("revoke"),
            Some(REVOKE),
            &[
                ("token", first.access_token()),
                ("token_type_hint", "access_token"),
            ],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    assert_eq!(get(&api, &url).await, StatusCode::OK);
    assert_eq!((rs.accepted(), rs.rejected()), (2, 1), "{:?}", rs.reasons());
    assert_eq!(rs.reasons(), ["inactive"]);
    assert_eq!(rs.distinct_tokens(), 2);
    let second = handle.current().expect("token");
    assert_eq!(second.generation(), 2);
    assert_ne!(second.access_token(), first.access_token());
    let (after, errors) = kc.client_logins(REVOKE.0).await;
    assert_eq!((after - before, errors), (2, 0), "token requests");
}

/// Rotation under load: `rotation-client`'s access tokens live `ROTATION_LIFESPAN` (1 s, the
/// shortest Keycloak accepts), with `exp` in whole seconds (`exp = floor(now) + 1`). 16 tasks
/// send `GET`s through the crate, with its defaults, to a resource server with zero clock
/// tolerance for 20 s. No request may come back to its caller as 401, none may fail; the
/// figures (and the 401s the middleware retried) are printed.
#[tokio::test]
#[ignore = "needs Java and Keycloak (tests/keycloak/README.md): tests/keycloak/run.sh runs it"]
async fn under_load_16_tasks_with_the_shortest_tokens_get_no_401() {
    const RUN: Duration = Duration::from_secs(20);
    const TASKS: usize = 16;

    let test = "under_load_16_tasks_with_the_shortest_tokens_get_no_401";
    let kc = Keycloak::alone(test).await;
    let rs = ResourceServer::jwt(&kc).await;
    let (before, errors_before) = kc.client_logins(ROTATION.0).await;
    let handle = builder(&kc, ROTATION)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("first token");
    let first = handle.current().expect("token");
    let claims = jwt_claims(first.access_token());
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        ROTATION_LIFESPAN
    );

    let (tally, elapsed) = load::run(&api(&handle), &rs.url("/orders"), TASKS, RUN).await;
    let generation = handle.current().map(|t| t.generation());
    handle.shutdown();
    let (after, errors_after) = kc.client_logins(ROTATION.0).await;
    let token_requests = after - before;
    let reasons = load::count(rs.reasons());
    announce(&format!(
        "keycloak: {TASKS} tasks, {:.1} s, {ROTATION_LIFESPAN} s tokens: {}; the resource \
         server sent {} x 200 and {} x 401 {reasons:?}; {token_requests} tokens issued by \
         Keycloak ({} refused; the crate's generation: {generation:?}); {} distinct tokens used",
        elapsed.as_secs_f64(),
        tally.figures(elapsed),
        rs.accepted(),
        rs.rejected(),
        errors_after - errors_before,
        rs.distinct_tokens(),
    ));
    tally.assert_all_ok(rs.accepted(), rs.rejected(), &reasons);
    assert!(
        tally.sent > 1_000,
        "{} requests: not a load test",
        tally.sent
    );
    assert_eq!(errors_after, errors_before, "refused token requests");
    // At least one token per second of 1-second tokens.
    assert!(
        token_requests as u64 >= RUN.as_secs() / ROTATION_LIFESPAN,
        "{token_requests} token requests in {RUN:?}"
    );
}
