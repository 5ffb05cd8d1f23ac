//! The token request as the authorization server receives it: form (RFC 6749 §4.4.2) and
//! JSON bodies, `client_secret_basic` and `client_secret_post` with a secret full of characters
//! that need encoding, and the request parameters. The embedded server checks the client's
//! credentials itself, so a wrongly encoded secret fails these tests.

mod common;

use std::time::Duration;

use tower_client_credentials::{AuthMethod, ClientCredentials, RequestFormat};
use tower_client_credentials_testkit::{
    ClientAuthMethod, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer, RecordedRequest,
};

const SCOPES: [&str; 2] = ["orders:read", "orders:write"];

async fn request_with(
    format: Option<RequestFormat>,
    auth: Option<AuthMethod>,
) -> (RecordedRequest, MockAuthServer) {
    let auth_server = MockAuthServer::new();
    let mut builder = common::builder(&auth_server)
        .scopes(SCOPES)
        .audience("https://api.example")
        .resource("urn:a")
        .param("tenant", "acme corp");
    if let Some(format) = format {
        builder = builder.request_format(format);
    }
    if let Some(auth) = auth {
        builder = builder.auth_method(auth);
    }
    let handle = builder.build().unwrap().start().await.unwrap();
    // The granted scope the server reported is kept with the token.
    assert_eq!(
        handle.current().unwrap().scope(),
        Some("orders:read orders:write")
    );
    let recorded = auth_server.last_request().expect("a token request");
    (recorded, auth_server)
}

fn assert_parameters(recorded: &RecordedRequest) {
    assert_eq!(recorded.param("grant_type"), Some("client_credentials"));
    assert_eq!(recorded.param("scope"), Some("orders:read orders:write"));
    assert_eq!(recorded.param("audience"), Some("https://api.example"));
    assert_eq!(recorded.param("resource"), Some("urn:a"));
    assert_eq!(recorded.param("tenant"), Some("acme corp"));
}

#[tokio::test(start_paused = true)]
async fn form_body_with_basic_authentication_is_the_default() {
    let (recorded, auth) = request_with(None, None).await;
    assert_eq!(recorded.method, http::Method::POST);
    assert_eq!(
        recorded.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretBasic);
    assert_eq!(recorded.param("client_secret"), None);
    assert_parameters(&recorded);
    assert_eq!(auth.issued(), 1, "the server accepted the encoded secret");
}

#[tokio::test(start_paused = true)]
async fn form_body_with_post_authentication() {
    let (recorded, auth) = request_with(None, Some(AuthMethod::ClientSecretPost)).await;
    assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretPost);
    assert_eq!(recorded.param("client_id"), Some(DEFAULT_CLIENT_ID));
    assert_eq!(recorded.param("client_secret"), Some(DEFAULT_CLIENT_SECRET));
    assert!(recorded.headers.get(http::header::AUTHORIZATION).is_none());
    assert_parameters(&recorded);
    assert_eq!(auth.issued(), 1);
}

#[tokio::test(start_paused = true)]
async fn json_body_carries_the_credentials_as_the_seed_provider_documents() {
    let (recorded, auth) = request_with(Some(RequestFormat::Json), None).await;
    assert_eq!(recorded.content_type.as_deref(), Some("application/json"));
    assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretPost);
    let json: serde_json::Value = serde_json::from_slice(&recorded.body).unwrap();
    assert_eq!(json["grant_type"], "client_credentials");
    assert_eq!(json["client_id"], DEFAULT_CLIENT_ID);
    assert_eq!(json["client_secret"], DEFAULT_CLIENT_SECRET);
    assert_eq!(json["scope"], "orders:read orders:write");
    assert_parameters(&recorded);
    assert_eq!(auth.issued(), 1);
}

#[tokio::test(start_paused = true)]
async fn json_body_with_basic_authentication() {
    let (recorded, auth) = request_with(
        Some(RequestFormat::Json),
        Some(AuthMethod::ClientSecretBasic),
    )
    .await;
    assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretBasic);
    assert_eq!(recorded.param("client_secret"), None);
    assert_eq!(auth.issued(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_scope_of_star_passes_through_as_written() {
    let auth = MockAuthServer::new();
    common::builder(&auth)
        .scopes(["*"])
        .request_format(RequestFormat::Json)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(auth.last_request().unwrap().param("scope"), Some("*"));
}

#[tokio::test(start_paused = true)]
async fn a_secret_one_character_off_is_a_typed_invalid_client() {
    // `+` read as a space, the classic Basic-decoding mistake, as a wrong secret.
    let auth = MockAuthServer::new();
    let error = ClientCredentials::builder(
        "http://127.0.0.1/oauth/token",
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET.replace('+', " "),
    )
    .http_client(auth.service())
    .build()
    .unwrap()
    .start()
    .await
    .unwrap_err();
    assert_eq!(error.oauth_error(), Some("invalid_client"));
}

/// The same over a real socket, with the default hyper-util transport.
#[tokio::test]
async fn over_a_real_socket_with_the_default_transport() {
    let auth = MockAuthServer::start().await.unwrap();
    for (format, method) in [
        (RequestFormat::Form, AuthMethod::ClientSecretBasic),
        (RequestFormat::Form, AuthMethod::ClientSecretPost),
        (RequestFormat::Json, AuthMethod::ClientSecretPost),
    ] {
        let handle =
            ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
                .scopes(SCOPES)
                .request_format(format)
                .auth_method(method)
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap()
                .start()
                .await
                .unwrap();
        assert!(handle.current().is_some(), "{format:?} {method:?}");
    }
    assert_eq!(auth.issued(), 3);
}
