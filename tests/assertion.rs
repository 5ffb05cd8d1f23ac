//! Signed client assertions (`private_key_jwt`, `client_secret_jwt`): what goes on the wire.
//!
//! The token endpoint here is an in-memory service that records every request. Each test
//! decodes the recorded `client_assertion` with the public key (or the secret) through
//! `jsonwebtoken`'s own verification, and checks every header field and claim. Keys are made
//! by the test process (`tower_client_credentials_testkit::keys`), in each format a user's key
//! file may come in.

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tower_client_credentials::{
    AssertionAudience, AuthMethod, ClientCredentials, ClientCredentialsBuilder, ClientKey,
    ConfigError, RequestFormat, SigningAlgorithm,
};
use tower_client_credentials_testkit::keys::TestKey;

const TOKEN_URL: &str = "https://auth.example/oauth2/token";
const CLIENT_ID: &str = "svc-orders";
const SECRET: &str = "hs256-secret-of-at-least-32-bytes-0123456789";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The key file `name` (`<kind>.<format>`, as a user would keep it) of this process's keys.
fn fixture(name: &str) -> String {
    let (kind, format) = name.split_once('.').expect("<kind>.<format>");
    let key = match kind {
        "p256" => TestKey::p256(),
        "p384" => TestKey::p384(),
        "ed25519" => TestKey::ed25519(),
        "rsa2048" => TestKey::rsa2048(),
        other => panic!("no test key {other}"),
    };
    match format {
        "private.pem" => key.private_pem(),
        "public.pem" => key.public_pem(),
        "sec1.pem" => key.sec1_pem(),
        "private.jwk.json" => key.private_jwk().to_string(),
        other => panic!("no key format {other}"),
    }
}

/// One recorded token request.
#[derive(Debug, Clone)]
struct Recorded {
    authorization: Option<String>,
    content_type: Option<String>,
    form: Vec<(String, String)>,
}

impl Recorded {
    fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn assertion(&self) -> &str {
        self.get("client_assertion").expect("client_assertion")
    }
}

/// An in-memory token endpoint that records requests and issues `expires_in` tokens.
#[derive(Clone, Default)]
struct Endpoint {
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Endpoint {
    fn builder(
        &self,
        builder: ClientCredentialsBuilder,
        expires_in: u64,
    ) -> ClientCredentialsBuilder {
        let requests = Arc::clone(&self.requests);
        builder.http_client(tower::service_fn(move |request: Request<Full<Bytes>>| {
            let requests = Arc::clone(&requests);
            async move {
                let header = |name| {
                    request
                        .headers()
                        .get(name)
                        .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
                };
                let authorization = header(header::AUTHORIZATION);
                let content_type = header(header::CONTENT_TYPE);
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let form = serde_urlencoded::from_bytes(&body).unwrap();
                let mut requests = requests.lock().unwrap();
                requests.push(Recorded {
                    authorization,
                    content_type,
                    form,
                });
                let token = serde_json::json!({
                    "access_token": format!("token-{}", requests.len()),
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                });
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(token.to_string()))))
            }
        }))
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Starts `builder` against a fresh endpoint and returns the one request it made.
async fn first_request(builder: ClientCredentialsBuilder) -> Recorded {
    let endpoint = Endpoint::default();
    let handle = endpoint
        .builder(builder, 300)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("first token");
    assert_eq!(handle.current().expect("token").access_token(), "token-1");
    let mut requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    requests.remove(0)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Verifies the assertion's signature with `key` (and `alg` only), then checks every header
/// field and claim; returns the claims.
fn verify(
    recorded: &Recorded,
    key: &DecodingKey,
    alg: Algorithm,
    kid: Option<&str>,
    audience: &str,
    lifetime: u64,
    issued_between: (u64, u64),
) -> Value {
    // The form: the crate's parameters, then the assertion; no secret, no Basic header.
    let names: Vec<&str> = recorded.form.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "client_id",
            "scope",
            "client_assertion_type",
            "client_assertion"
        ]
    );
    assert_eq!(recorded.get("grant_type"), Some("client_credentials"));
    assert_eq!(recorded.get("client_id"), Some(CLIENT_ID));
    assert_eq!(recorded.get("client_assertion_type"), Some(ASSERTION_TYPE));
    assert_eq!(recorded.authorization, None);
    assert_eq!(
        recorded.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );

    let jwt = recorded.assertion();
    let header = jsonwebtoken::decode_header(jwt).expect("JWS header");
    assert_eq!(header.alg, alg);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), kid);
    assert_eq!((header.x5t, header.x5t_s256), (None, None));

    let mut validation = Validation::new(alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.sub = Some(CLIENT_ID.to_owned());
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .unwrap_or_else(|e| panic!("the assertion does not verify: {e:?}"))
        .claims;
    let object = claims.as_object().expect("claims object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["aud", "exp", "iat", "iss", "jti", "sub"]);
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["sub"], CLIENT_ID);
    assert_eq!(claims["aud"], audience);
    let iat = claims["iat"].as_u64().expect("iat");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        (issued_between.0..=issued_between.1).contains(&iat),
        "iat {iat} not within {issued_between:?}"
    );
    assert_eq!(exp - iat, lifetime);
    let jti = claims["jti"].as_str().expect("jti");
    assert_eq!(jti.len(), 22, "16 random bytes, base64url: {jti}");
    assert!(
        jti.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    claims
}

struct Case {
    name: &'static str,
    key: ClientKey,
    decoding: DecodingKey,
    alg: Algorithm,
    kid: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let pem = |alg, name: &str| {
        ClientKey::from_pem(alg, fixture(&format!("{name}.private.pem"))).expect("PEM key")
    };
    let jwk = |name: &str| {
        ClientKey::from_jwk(&fixture(&format!("{name}.private.jwk.json"))).expect("JWK")
    };
    let rsa = || DecodingKey::from_rsa_pem(fixture("rsa2048.public.pem").as_bytes()).unwrap();
    let ec = |name: &str| {
        DecodingKey::from_ec_pem(fixture(&format!("{name}.public.pem")).as_bytes()).unwrap()
    };
    let ed = || DecodingKey::from_ed_pem(fixture("ed25519.public.pem").as_bytes()).unwrap();
    vec![
        Case {
            name: "RS256 PEM",
            key: pem(SigningAlgorithm::RS256, "rsa2048"),
            decoding: rsa(),
            alg: Algorithm::RS256,
            kid: None,
        },
        Case {
            name: "PS256 PEM with a key id",
            key: pem(SigningAlgorithm::PS256, "rsa2048").with_key_id("rsa-1"),
            decoding: rsa(),
            alg: Algorithm::PS256,
            kid: Some("rsa-1"),
        },
        Case {
            name: "RS256 JWK",
            key: jwk("rsa2048"),
            decoding: rsa(),
            alg: Algorithm::RS256,
            kid: Some("tcc-test-rsa"),
        },
        Case {
            name: "ES256 PEM",
            key: pem(SigningAlgorithm::ES256, "p256"),
            decoding: ec("p256"),
            alg: Algorithm::ES256,
            kid: None,
        },
        Case {
            name: "ES256 JWK",
            key: jwk("p256"),
            decoding: ec("p256"),
            alg: Algorithm::ES256,
            kid: Some("tcc-test-p256"),
        },
        Case {
            name: "ES384 PEM",
            key: pem(SigningAlgorithm::ES384, "p384"),
            decoding: ec("p384"),
            alg: Algorithm::ES384,
            kid: None,
        },
        Case {
            name: "ES384 JWK",
            key: jwk("p384"),
            decoding: ec("p384"),
            alg: Algorithm::ES384,
            kid: Some("tcc-test-p384"),
        },
        Case {
            name: "EdDSA PEM",
            key: pem(SigningAlgorithm::EdDSA, "ed25519"),
            decoding: ed(),
            alg: Algorithm::EdDSA,
            kid: None,
        },
        Case {
            name: "EdDSA JWK",
            key: jwk("ed25519"),
            decoding: ed(),
            alg: Algorithm::EdDSA,
            kid: Some("tcc-test-ed25519"),
        },
    ]
}

/// `private_key_jwt` with RSA (PKCS#1 v1.5 and PSS), P-256, P-384 and Ed25519 keys, from PEM
/// and from JWK: the assertion verifies with the public key and carries exactly the claims
/// and header RFC 7523 and OpenID Connect Core §9 ask for.
#[tokio::test]
async fn private_key_jwt_assertions_verify_with_the_public_key() {
    for case in cases() {
        assert_eq!(case.key.key_id(), case.kid, "{}", case.name);
        let before = now();
        let recorded = first_request(
            ClientCredentials::builder_with_key(TOKEN_URL, CLIENT_ID, case.key)
                .scopes(["orders:read"]),
        )
        .await;
        let after = now();
        assert_eq!(recorded.get("scope"), Some("orders:read"), "{}", case.name);
        verify(
            &recorded,
            &case.decoding,
            case.alg,
            case.kid,
            TOKEN_URL,
            60,
            (before, after),
        );
    }
}

/// `client_secret_jwt`: HS256 keyed with the client secret; the secret itself is never sent.
#[tokio::test]
async fn client_secret_jwt_is_hs256_keyed_with_the_secret() {
    let before = now();
    let recorded = first_request(
        ClientCredentials::builder(TOKEN_URL, CLIENT_ID, SECRET)
            .auth_method(AuthMethod::ClientSecretJwt)
            .scopes(["orders:read"]),
    )
    .await;
    let after = now();
    verify(
        &recorded,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
        None,
        TOKEN_URL,
        60,
        (before, after),
    );
    let wire = format!("{recorded:?}");
    assert!(!wire.contains(SECRET), "the secret was sent: {wire}");
    // Another secret does not verify it.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[TOKEN_URL]);
    assert!(
        jsonwebtoken::decode::<Value>(
            recorded.assertion(),
            &DecodingKey::from_secret(b"another-secret-of-at-least-32-bytes-000000"),
            &validation,
        )
        .is_err()
    );
}

/// The audience and lifetime options, and the certificate thumbprint headers.
#[tokio::test]
async fn audience_lifetime_and_thumbprint_options() {
    let key = ClientKey::from_pem(SigningAlgorithm::ES256, fixture("p256.private.pem"))
        .unwrap()
        .with_x5t("x5t-thumbprint")
        .with_x5t_s256("x5t-s256-thumbprint");
    let before = now();
    let recorded = first_request(
        ClientCredentials::builder_with_key(TOKEN_URL, CLIENT_ID, key)
            .scopes(["orders:read"])
            .assertion_audience(AssertionAudience::Custom("https://auth.example".into()))
            // Rounded up to whole seconds.
            .assertion_lifetime(Duration::from_millis(299_001)),
    )
    .await;
    let after = now();
    let header = jsonwebtoken::decode_header(recorded.assertion()).unwrap();
    assert_eq!(header.x5t.as_deref(), Some("x5t-thumbprint"));
    assert_eq!(header.x5t_s256.as_deref(), Some("x5t-s256-thumbprint"));
    let decoding = DecodingKey::from_ec_pem(fixture("p256.public.pem").as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["https://auth.example"]);
    let claims = jsonwebtoken::decode::<Value>(recorded.assertion(), &decoding, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["aud"], "https://auth.example");
    let iat = claims["iat"].as_u64().unwrap();
    assert!((before..=after).contains(&iat));
    assert_eq!(claims["exp"].as_u64().unwrap() - iat, 300);
}

/// Every token request signs a new assertion: across a run of refreshes (paused clock,
/// 10-second tokens), no two requests share a `jti` or an assertion.
#[tokio::test(start_paused = true)]
async fn every_token_request_carries_a_new_assertion() {
    let endpoint = Endpoint::default();
    let key = ClientKey::from_jwk(&fixture("p256.private.jwk.json")).unwrap();
    let handle = endpoint
        .builder(
            ClientCredentials::builder_with_key(TOKEN_URL, CLIENT_ID, key),
            10,
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(100)).await;
    let requests = endpoint.requests();
    // A 10-second token is refreshed at about 8 s: about 12 fetches in 100 s.
    assert!(requests.len() >= 10, "{} token requests", requests.len());
    assert_eq!(
        handle.current().unwrap().access_token(),
        format!("token-{}", requests.len())
    );
    let decoding = DecodingKey::from_ec_pem(fixture("p256.public.pem").as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[TOKEN_URL]);
    let mut jtis = HashSet::new();
    let mut assertions = HashSet::new();
    for recorded in &requests {
        let claims = jsonwebtoken::decode::<Value>(recorded.assertion(), &decoding, &validation)
            .expect("each assertion verifies")
            .claims;
        jtis.insert(claims["jti"].as_str().unwrap().to_owned());
        assertions.insert(recorded.assertion().to_owned());
    }
    assert_eq!(jtis.len(), requests.len(), "a jti was reused");
    assert_eq!(assertions.len(), requests.len(), "an assertion was reused");
}

/// Many assertions signed in a row (no refresher involved): all `jti`s differ.
#[tokio::test]
async fn a_thousand_assertions_have_a_thousand_jtis() {
    let endpoint = Endpoint::default();
    let builder = || {
        endpoint.builder(
            ClientCredentials::builder(TOKEN_URL, CLIENT_ID, SECRET)
                .auth_method(AuthMethod::ClientSecretJwt),
            300,
        )
    };
    for _ in 0..1000 {
        builder().build().unwrap().start().await.unwrap().shutdown();
    }
    let jtis: HashSet<String> = endpoint
        .requests()
        .iter()
        .map(|recorded| {
            let claims: Value = jsonwebtoken::dangerous::insecure_decode(recorded.assertion())
                .unwrap()
                .claims;
            claims["jti"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(endpoint.requests().len(), 1000);
    assert_eq!(jtis.len(), 1000);
}

fn key_error(result: Result<ClientKey, ConfigError>) -> String {
    match result {
        Err(error @ ConfigError::InvalidClientKey { .. }) => error.to_string(),
        Err(other) => panic!("expected a client_key error, got {other:?}"),
        Ok(key) => panic!("expected a client_key error, got {key:?}"),
    }
}

/// A key that cannot sign is a configuration error when the key is created, with a reason,
/// and no error shows key material.
#[test]
fn unusable_keys_are_refused_up_front() {
    let p256 = fixture("p256.private.pem");
    let rsa = fixture("rsa2048.private.pem");
    let secret_lines: Vec<String> = [&p256, &rsa]
        .iter()
        .flat_map(|pem| {
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned)
        })
        .collect();
    let pem_cases = [
        (
            SigningAlgorithm::ES256,
            "not a pem".to_owned(),
            "not a P-256 EC private key",
        ),
        (
            SigningAlgorithm::RS256,
            p256.clone(),
            "not an RSA private key",
        ),
        (
            SigningAlgorithm::ES256,
            rsa.clone(),
            "not a P-256 EC private key",
        ),
        (
            SigningAlgorithm::EdDSA,
            p256.clone(),
            "not an Ed25519 private key",
        ),
        // A P-256 key cannot sign ES384.
        (SigningAlgorithm::ES384, p256.clone(), "cannot sign ES384"),
        (
            SigningAlgorithm::ES256,
            fixture("p256.public.pem"),
            "the private key is needed",
        ),
        (
            SigningAlgorithm::ES256,
            fixture("p256.sec1.pem"),
            "convert it to PKCS#8",
        ),
    ];
    let mut texts = Vec::new();
    for (alg, pem, reason) in pem_cases {
        let text = key_error(ClientKey::from_pem(alg, &pem));
        assert!(text.contains(reason), "{alg}: {text}");
        texts.push(text);
    }

    let jwk: Value = serde_json::from_str(&fixture("p256.private.jwk.json")).unwrap();
    let d = jwk["d"].as_str().unwrap().to_owned();
    let with = |changes: &[(&str, Value)]| {
        let mut jwk = jwk.clone();
        for (name, value) in changes {
            if value.is_null() {
                jwk.as_object_mut().unwrap().remove(*name);
            } else {
                jwk[*name] = value.clone();
            }
        }
        jwk.to_string()
    };
    let jwk_cases = [
        (with(&[("d", Value::Null)]), "has no `d`"),
        (with(&[("d", "not base64!".into())]), "not base64url"),
        (with(&[("d", "AAAA".into())]), "is 3 bytes, expected 32"),
        (
            with(&[("alg", "RS256".into())]),
            "`alg` is RS256 but the key is a P-256 EC key",
        ),
        (with(&[("alg", "HS256".into())]), "unsupported `alg`"),
        (with(&[("crv", "P-521".into())]), "unsupported curve"),
        (with(&[("kty", Value::Null)]), "no `kty`"),
        (with(&[("use", "enc".into())]), "`use` is `enc`"),
        (
            with(&[("key_ops", serde_json::json!(["verify"]))]),
            "`key_ops`",
        ),
        // The public point of another key.
        (
            with(&[(
                "x",
                serde_json::from_str::<Value>(&fixture("rsa2048.private.jwk.json")).unwrap()["n"]
                    .clone(),
            )]),
            "`x` does not belong",
        ),
        (
            r#"{"kty":"oct","k":"c2VjcmV0"}"#.to_owned(),
            "ClientSecretJwt",
        ),
        (format!(r#"{{"keys":[{}]}}"#, jwk), "JWK Set"),
        ("[1, 2]".to_owned(), "not a JWK JSON object"),
    ];
    for (json, reason) in jwk_cases {
        let text = key_error(ClientKey::from_jwk(&json));
        assert!(text.contains(reason), "{json}: {text}");
        texts.push(text);
    }
    // An RSA JWK without its CRT members.
    let mut rsa_jwk: Value = serde_json::from_str(&fixture("rsa2048.private.jwk.json")).unwrap();
    rsa_jwk.as_object_mut().unwrap().remove("qi");
    let text = key_error(ClientKey::from_jwk(&rsa_jwk.to_string()));
    assert!(text.contains("has no `qi`"), "{text}");
    texts.push(text);

    for text in &texts {
        assert!(!text.contains(&d), "key material in: {text}");
        for line in &secret_lines {
            assert!(!text.contains(line.as_str()), "key material in: {text}");
        }
    }
}

/// Combinations that cannot work are refused by `build`: an assertion in a JSON body, a key
/// with a secret-based method, a secret with `private_key_jwt`, the issuer as audience
/// without an issuer, a zero lifetime.
#[test]
fn impossible_combinations_are_refused_by_build() {
    let key = || ClientKey::from_pem(SigningAlgorithm::ES256, fixture("p256.private.pem")).unwrap();
    let with_key = || ClientCredentials::builder_with_key(TOKEN_URL, CLIENT_ID, key());
    let with_secret = || ClientCredentials::builder(TOKEN_URL, CLIENT_ID, SECRET);
    let name_of = |builder: ClientCredentialsBuilder| match builder.build() {
        Err(ConfigError::InvalidParameter { name, .. }) => name,
        Err(ConfigError::InvalidTiming { name, .. }) => name.to_owned(),
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("expected a configuration error"),
    };
    assert_eq!(
        name_of(with_key().request_format(RequestFormat::Json)),
        "request_format"
    );
    assert_eq!(
        name_of(
            with_secret()
                .auth_method(AuthMethod::ClientSecretJwt)
                .request_format(RequestFormat::Json)
        ),
        "request_format"
    );
    assert_eq!(
        name_of(with_key().auth_method(AuthMethod::ClientSecretBasic)),
        "auth_method"
    );
    assert_eq!(
        name_of(with_secret().auth_method(AuthMethod::PrivateKeyJwt)),
        "auth_method"
    );
    assert_eq!(
        name_of(with_key().assertion_audience(AssertionAudience::Issuer)),
        "assertion_audience"
    );
    assert_eq!(
        name_of(with_key().assertion_lifetime(Duration::ZERO)),
        "assertion_lifetime"
    );
    // The issuer audience only matters to assertion methods.
    assert!(
        with_secret()
            .assertion_audience(AssertionAudience::Issuer)
            .build()
            .is_ok()
    );
    // The parameter names the crate sets are still reserved.
    assert_eq!(
        name_of(with_key().param("client_assertion", "x")),
        "client_assertion"
    );
    assert!(with_key().build().is_ok());
}

/// Neither the key nor the secret shows in `Debug` of the key or the builder.
#[test]
fn debug_output_never_shows_the_key() {
    let pem = fixture("p256.private.pem");
    let jwk: Value = serde_json::from_str(&fixture("p256.private.jwk.json")).unwrap();
    let d = jwk["d"].as_str().unwrap();
    let key = ClientKey::from_pem(SigningAlgorithm::ES256, &pem)
        .unwrap()
        .with_key_id("kid-7");
    let builder = ClientCredentials::builder_with_key(TOKEN_URL, CLIENT_ID, key.clone());
    let secret_builder = ClientCredentials::builder(TOKEN_URL, CLIENT_ID, SECRET)
        .auth_method(AuthMethod::ClientSecretJwt);
    let text = format!("{key:?} {builder:?} {secret_builder:?}");
    assert!(text.contains("kid-7") && text.contains("ES256"), "{text}");
    assert!(!text.contains(d), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "{text}");
    }
}
