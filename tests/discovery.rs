//! Discovery of the token endpoint from an issuer (RFC 8414, OpenID Connect Discovery 1.0).
//!
//! The authorization server is an in-memory service that serves metadata documents and a
//! token endpoint and logs every request; one test runs the same over a real socket on
//! `127.0.0.1:0` with the crate's own HTTP client.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower_client_credentials::{
    AssertionAudience, AuthMethod, ClientCredentials, ClientCredentialsBuilder, ClientKey,
    ConfigError, DiscoveryError,
};

const ISSUER: &str = "https://auth.example/tenant-1";
const RFC8414: &str = "/.well-known/oauth-authorization-server/tenant-1";
const OIDC: &str = "/tenant-1/.well-known/openid-configuration";
const TOKEN_PATH: &str = "/tenant-1/oauth2/token";
const TOKEN_URL: &str = "https://auth.example/tenant-1/oauth2/token";
const CLIENT_ID: &str = "svc-orders";
const SECRET: &str = "discovery-test-secret-0123456789abcdef";

/// The `Authorization` header and the form of one token request.
type TokenRequest = (Option<String>, Vec<(String, String)>);

/// How a path answers.
#[derive(Clone)]
enum Route {
    Status(u16, String),
    Hang,
}

/// An in-memory authorization server: metadata routes, a token endpoint at [`TOKEN_PATH`],
/// and a log of `METHOD path` lines.
#[derive(Clone, Default)]
struct Server {
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<String>>>,
    token_requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl Server {
    fn route(self, path: &str, status: u16, body: impl Into<String>) -> Self {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), Route::Status(status, body.into()));
        self
    }

    fn hang(self, path: &str) -> Self {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), Route::Hang);
        self
    }

    /// Serves `document` at `path` and 404 everywhere else.
    fn document(path: &str, document: Value) -> Self {
        Self::default().route(path, 200, document.to_string())
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The `Authorization` header and form of each token request.
    fn token_requests(&self) -> Vec<TokenRequest> {
        self.token_requests.lock().unwrap().clone()
    }

    async fn handle(self, request: Request<Full<Bytes>>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {path}", request.method()));
        if path == TOKEN_PATH && request.method() == Method::POST {
            let authorization = request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let form = serde_urlencoded::from_bytes(&body).unwrap();
            self.token_requests
                .lock()
                .unwrap()
                .push((authorization, form));
            let token = json!({"access_token": "discovered-token", "token_type": "Bearer",
                               "expires_in": 300});
            return Response::new(Full::new(Bytes::from(token.to_string())));
        }
        assert_eq!(request.method(), Method::GET, "{path}");
        assert_eq!(request.headers()[header::ACCEPT], "application/json");
        let route = self.routes.lock().unwrap().get(&path).cloned();
        match route {
            Some(Route::Status(status, body)) => Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
            Some(Route::Hang) => std::future::pending().await,
            None => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::from_static(b"not found")))
                .unwrap(),
        }
    }

    fn attach(&self, builder: ClientCredentialsBuilder) -> ClientCredentialsBuilder {
        let server = self.clone();
        builder.http_client(tower::service_fn(move |request| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(request).await) }
        }))
    }

    fn issuer_builder(&self) -> ClientCredentialsBuilder {
        self.attach(ClientCredentials::from_issuer(ISSUER, CLIENT_ID, SECRET))
    }
}

fn metadata(auth_methods: Option<&[&str]>) -> Value {
    let mut document = json!({
        "issuer": ISSUER,
        "token_endpoint": TOKEN_URL,
        "jwks_uri": "https://auth.example/tenant-1/jwks",
        "grant_types_supported": ["client_credentials"],
    });
    if let Some(methods) = auth_methods {
        document["token_endpoint_auth_methods_supported"] = json!(methods);
    }
    document
}

fn p256_key() -> ClientKey {
    let jwk = tower_client_credentials_testkit::keys::TestKey::p256().private_jwk();
    ClientKey::from_jwk(&jwk.to_string()).unwrap()
}

/// The assertion's claims, after checking its signature with the test P-256 key's public half.
fn verified_claims(form: &[(String, String)], audience: &str) -> Value {
    let assertion = &form
        .iter()
        .find(|(name, _)| name == "client_assertion")
        .expect("client_assertion")
        .1;
    let public = tower_client_credentials_testkit::keys::TestKey::p256().public_pem();
    let key = jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[CLIENT_ID]);
    jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .expect("the assertion verifies")
        .claims
}

async fn discover_error(builder: ClientCredentialsBuilder) -> DiscoveryError {
    let error = builder.discover().await.expect_err("discovery should fail");
    let text = format!("{error} {error:?}");
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    error
}

/// A 404 at the RFC 8414 location, then the OpenID Connect document: its token endpoint is
/// used, and the default method for a secret, `client_secret_basic`, since the document lists
/// none (RFC 8414's default).
#[tokio::test]
async fn a_404_on_the_first_well_known_path_falls_back_to_the_second() {
    let server = Server::document(OIDC, metadata(None));
    let handle = server
        .issuer_builder()
        .discover()
        .await
        .expect("discovered")
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("a token");
    assert_eq!(handle.current().unwrap().access_token(), "discovered-token");
    assert_eq!(
        server.log(),
        [
            format!("GET {RFC8414}"),
            format!("GET {OIDC}"),
            format!("POST {TOKEN_PATH}"),
        ]
    );
    let (authorization, form) = server.token_requests().remove(0);
    assert!(authorization.unwrap().starts_with("Basic "));
    assert!(form.iter().all(|(name, _)| name != "client_secret"));
}

/// The RFC 8414 document, found at the path-inserted URL, is enough: the OpenID Connect one
/// is not asked for.
#[tokio::test]
async fn the_rfc_8414_document_comes_first() {
    let server = Server::document(RFC8414, metadata(Some(&["client_secret_post"]))).route(
        OIDC,
        500,
        "must not be asked",
    );
    server
        .issuer_builder()
        .discover()
        .await
        .expect("discovered")
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("a token");
    assert_eq!(
        server.log(),
        [format!("GET {RFC8414}"), format!("POST {TOKEN_PATH}")]
    );
    // The only method listed is used.
    let (authorization, form) = server.token_requests().remove(0);
    assert_eq!(authorization, None);
    assert!(form.contains(&("client_secret".to_owned(), SECRET.to_owned())));
}

/// A document naming another issuer is refused (a mix-up attack), also when it is the first
/// one found: no fallback, no token request.
#[tokio::test]
async fn a_mismatched_issuer_is_refused() {
    for other in [
        "https://evil.example/tenant-1",
        "https://auth.example/tenant-2",
        // Even a trailing slash: the comparison is exact.
        "https://auth.example/tenant-1/",
    ] {
        let mut document = metadata(None);
        document["issuer"] = other.into();
        let server =
            Server::document(RFC8414, document).route(OIDC, 200, metadata(None).to_string());
        let error = discover_error(server.issuer_builder()).await;
        match &error {
            DiscoveryError::IssuerMismatch { expected, found } => {
                assert_eq!((expected.as_str(), found.as_str()), (ISSUER, other));
            }
            other => panic!("expected IssuerMismatch, got {other:?}"),
        }
        assert!(!error.is_transient());
        assert!(error.to_string().contains(other), "{error}");
        assert_eq!(server.log(), [format!("GET {RFC8414}")]);
    }
}

#[tokio::test]
async fn a_missing_token_endpoint_is_refused() {
    let mut document = metadata(None);
    document.as_object_mut().unwrap().remove("token_endpoint");
    let server = Server::document(OIDC, document);
    match discover_error(server.issuer_builder()).await {
        DiscoveryError::MissingTokenEndpoint { url } => {
            assert_eq!(url, format!("https://auth.example{OIDC}"));
        }
        other => panic!("expected MissingTokenEndpoint, got {other:?}"),
    }
}

/// A 200 that is not JSON (an HTML login page, say), or JSON that is not an object.
#[tokio::test]
async fn a_non_json_document_is_refused() {
    for (body, reason) in [
        ("<!doctype html><title>Sign in</title>", "not JSON"),
        ("[\"issuer\"]", "not a JSON object"),
        ("", "empty"),
    ] {
        let server = Server::default().route(RFC8414, 200, body);
        match discover_error(server.issuer_builder()).await {
            DiscoveryError::InvalidDocument { url, reason: got } => {
                assert_eq!(url, format!("https://auth.example{RFC8414}"));
                assert!(got.contains(reason), "{body:?}: {got}");
            }
            other => panic!("{body:?}: expected InvalidDocument, got {other:?}"),
        }
        assert_eq!(server.log(), [format!("GET {RFC8414}")]);
    }
}

#[tokio::test]
async fn no_document_at_either_path_is_not_found() {
    let server = Server::default().route(OIDC, 403, "{}");
    let error = discover_error(server.issuer_builder()).await;
    match &error {
        DiscoveryError::NotFound { urls, status } => {
            assert_eq!(
                urls,
                &[
                    format!("https://auth.example{RFC8414}"),
                    format!("https://auth.example{OIDC}")
                ]
            );
            assert_eq!(*status, StatusCode::FORBIDDEN);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!error.is_transient());
}

/// A server error is not "not here": it is reported (as transient) without trying the other
/// path.
#[tokio::test]
async fn a_server_error_is_transient_and_not_a_reason_to_fall_back() {
    let server =
        Server::default()
            .route(RFC8414, 503, "{}")
            .route(OIDC, 200, metadata(None).to_string());
    let error = discover_error(server.issuer_builder()).await;
    assert!(
        matches!(&error, DiscoveryError::Http { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(server.log(), [format!("GET {RFC8414}")]);
}

/// With a secret, the server's list decides among basic, post and `client_secret_jwt`; with a
/// key, `private_key_jwt` must be listed. A method set by hand is kept.
#[tokio::test]
async fn the_auth_method_comes_from_the_supported_list() {
    // Only assertion methods: the secret signs a `client_secret_jwt` assertion.
    let server = Server::document(
        OIDC,
        metadata(Some(&["private_key_jwt", "client_secret_jwt"])),
    );
    server
        .issuer_builder()
        .discover()
        .await
        .unwrap()
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let (authorization, form) = server.token_requests().remove(0);
    assert_eq!(authorization, None);
    let assertion = &form
        .iter()
        .find(|(name, _)| name == "client_assertion")
        .unwrap()
        .1;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[TOKEN_URL]);
    jsonwebtoken::decode::<Value>(
        assertion,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("HS256 with the secret, aud = the discovered token endpoint");

    // A key, and the server takes secrets only.
    let server = Server::document(
        OIDC,
        metadata(Some(&["client_secret_basic", "client_secret_post"])),
    );
    let error = discover_error(server.attach(ClientCredentials::from_issuer_with_key(
        ISSUER,
        CLIENT_ID,
        p256_key(),
    )))
    .await;
    match &error {
        DiscoveryError::NoUsableAuthMethod { supported, usable } => {
            assert_eq!(supported, &["client_secret_basic", "client_secret_post"]);
            assert_eq!(usable, &[AuthMethod::PrivateKeyJwt]);
        }
        other => panic!("expected NoUsableAuthMethod, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "the token endpoint supports client authentication by client_secret_basic, \
         client_secret_post only; these credentials allow private_key_jwt"
    );

    // Chosen by hand: kept even though the server does not list it.
    let server = Server::document(OIDC, metadata(Some(&["client_secret_basic"])));
    server
        .issuer_builder()
        .auth_method(AuthMethod::ClientSecretPost)
        .discover()
        .await
        .unwrap()
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let (authorization, _) = server.token_requests().remove(0);
    assert_eq!(authorization, None);
}

/// `private_key_jwt` through discovery; the assertion is addressed to the discovered token
/// endpoint, or to the issuer when asked.
#[tokio::test]
async fn private_key_jwt_through_discovery_with_either_audience() {
    for (audience, expected) in [
        (AssertionAudience::TokenEndpoint, TOKEN_URL),
        (AssertionAudience::Issuer, ISSUER),
    ] {
        let server = Server::document(
            RFC8414,
            metadata(Some(&["client_secret_basic", "private_key_jwt"])),
        );
        server
            .attach(ClientCredentials::from_issuer_with_key(
                ISSUER,
                CLIENT_ID,
                p256_key(),
            ))
            .assertion_audience(audience)
            .discover()
            .await
            .unwrap()
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        let (authorization, form) = server.token_requests().remove(0);
        assert_eq!(authorization, None);
        let claims = verified_claims(&form, expected);
        assert_eq!(claims["aud"], expected);
    }
}

/// The https rule applies to the issuer (nothing is sent) and to the token endpoint the
/// document names.
#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    let server = Server::default();
    let error = discover_error(server.attach(ClientCredentials::from_issuer(
        "http://auth.example/tenant-1",
        CLIENT_ID,
        SECRET,
    )))
    .await;
    assert!(
        matches!(&error, DiscoveryError::InvalidIssuer { reason, .. } if reason.contains("plain http")),
        "{error:?}"
    );
    assert!(server.log().is_empty());

    let mut document = metadata(None);
    document["token_endpoint"] = "http://auth.example/tenant-1/oauth2/token".into();
    let server = Server::document(RFC8414, document);
    let error = discover_error(server.issuer_builder()).await;
    assert!(
        matches!(&error, DiscoveryError::InvalidDocument { reason, .. } if reason.contains("plain http")),
        "{error:?}"
    );
    // Unless allowed.
    let mut document = metadata(None);
    document["token_endpoint"] = "http://auth.example/tenant-1/oauth2/token".into();
    let server = Server::document(RFC8414, document);
    let builder = server
        .issuer_builder()
        .allow_insecure_http(true)
        .discover()
        .await
        .expect("allowed");
    assert!(format!("{builder:?}").contains("http://auth.example/tenant-1/oauth2/token"));
}

/// The response size limit and the timeout of token requests apply to each document.
#[tokio::test(start_paused = true)]
async fn size_limit_and_timeout_apply() {
    let mut document = metadata(None);
    document["padding"] = "x".repeat(2000).into();
    let server = Server::document(RFC8414, document);
    let error = discover_error(server.issuer_builder().max_response_size(1024)).await;
    assert!(
        matches!(&error, DiscoveryError::BodyTooLarge { limit: 1024, .. }),
        "{error:?}"
    );

    let server = Server::default().hang(RFC8414);
    let error = discover_error(server.issuer_builder().timeout(Duration::from_secs(5))).await;
    match &error {
        DiscoveryError::Timeout { url, after } => {
            assert_eq!(url, &format!("https://auth.example{RFC8414}"));
            assert_eq!(*after, Duration::from_secs(5));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(error.is_transient());
}

/// `build` before `discover` on an issuer builder, and `discover` without an issuer.
#[tokio::test]
async fn discover_and_build_in_the_right_order() {
    match Server::default().issuer_builder().build() {
        Err(ConfigError::InvalidTokenUrl { reason }) => {
            assert!(reason.contains("discover().await"), "{reason}");
        }
        other => panic!("expected InvalidTokenUrl, got {other:?}"),
    }
    let error = discover_error(ClientCredentials::builder(TOKEN_URL, CLIENT_ID, SECRET)).await;
    assert!(matches!(error, DiscoveryError::NoIssuer), "{error:?}");
}

/// The whole path over a real socket with the crate's built-in client: discovery (404, then
/// the OpenID Connect document) and the token request, on a hyper server on `127.0.0.1:0`.
#[tokio::test]
async fn over_a_real_socket_with_the_default_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let issuer = format!("{origin}/tenant-1");
    let mut document = metadata(None);
    document["issuer"] = issuer.clone().into();
    document["token_endpoint"] = format!("{origin}{TOKEN_PATH}").into();
    let server = Server::document(OIDC, document);
    let serving = server.clone();
    let accept = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let server = serving.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let server = server.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let request = Request::from_parts(parts, Full::new(body));
                            Ok::<_, hyper::Error>(server.handle(request).await)
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });

    let handle = ClientCredentials::from_issuer(&issuer, CLIENT_ID, SECRET)
        .discover()
        .await
        .expect("discovered over the socket")
        .build()
        .unwrap()
        .start()
        .await
        .expect("a token over the socket");
    assert_eq!(handle.current().unwrap().access_token(), "discovered-token");
    assert_eq!(
        server.log(),
        [
            format!("GET {RFC8414}"),
            format!("GET {OIDC}"),
            format!("POST {TOKEN_PATH}"),
        ]
    );
    handle.shutdown();
    accept.abort();
}
