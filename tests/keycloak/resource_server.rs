//! The protected API of the Keycloak tests: a hyper server on `127.0.0.1:0` that checks every
//! request's token the way a real resource server would, and counts what it accepted and
//! rejected. A small copy of `tests/interop/resource_server.rs`, which is written against
//! oidc-provider (ES256, `typ: at+jwt`, its `/jwks` and introspection paths, its audiences):
//!
//! - [`ResourceServer::jwt`]: Keycloak's JWT access tokens. The realm's JWKS
//!   (`/protocol/openid-connect/certs`, signing keys only) is fetched once; each token must
//!   have a `kid` from it, a valid RS256 or ES256 signature, `aud` containing `urn:tcc:api`,
//!   `iss` = the realm's issuer, and an `exp` still in the future with zero leeway, to the
//!   sub-second (jsonwebtoken alone compares whole seconds). Keycloak writes `typ: JWT`, not
//!   RFC 9068's `at+jwt`, so the header type is not checked.
//! - [`ResourceServer::introspecting`]: every token is looked up at Keycloak's introspection
//!   endpoint (RFC 7662) as `introspector`; it must be `active` with `aud` `urn:tcc:api`.
//!   Revoked tokens are inactive there, which JWKS checks cannot see.
//!
//! DPoP (RFC 9449): a token bound to a key (`cnf.jkt`) must come as `Authorization: DPoP` with
//! a proof that passes `test_util::dpop::verify_proof` (`typ`, `alg`, `jwk`, signature, `htm`,
//! `htu`, `iat` within 60 s, `ath`), whose key thumbprint is `cnf.jkt` and whose `jti` is new.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle};
use tower_client_credentials::test_util::dpop::{self, JtiCache, ProofError};

use super::server::{HttpClient, Keycloak, basic_authorization, http_client};

/// The audience the realm's `tcc-api` client scope puts in every access token.
pub(crate) const AUDIENCE: &str = "urn:tcc:api";
/// The client the resource server introspects as.
pub(crate) const INTROSPECTOR: (&str, &str) = ("introspector", "introspector-secret-0123456789");

/// The claims the resource server reads from a JWT access token.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    pub(crate) jti: String,
    /// The client the token was issued to.
    pub(crate) azp: String,
    pub(crate) exp: u64,
    pub(crate) cnf: Option<Confirmation>,
}

/// The `cnf` claim (RFC 9449 §6.1).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Confirmation {
    pub(crate) jkt: String,
}

enum Check {
    Jwt {
        keys: HashMap<String, (Algorithm, DecodingKey)>,
        issuer: String,
        /// Tokens whose signature and claims passed, with their claims.
        verified: Mutex<HashMap<String, Claims>>,
    },
    Introspect {
        url: String,
        authorization: String,
        client: Box<HttpClient>,
    },
}

struct Inner {
    check: Check,
    accepted: AtomicU64,
    rejected: AtomicU64,
    reasons: Mutex<Vec<String>>,
    claims: Mutex<Vec<Claims>>,
    tokens: Mutex<HashSet<String>>,
    base_url: String,
    dpop_jtis: Mutex<JtiCache>,
    dpop_accepted: AtomicU64,
}

/// A running resource server; stops when dropped.
pub(crate) struct ResourceServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for ResourceServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ResourceServer {
    /// Validates JWTs from Keycloak's realm, with the signing keys it publishes now.
    pub(crate) async fn jwt(kc: &Keycloak) -> Self {
        let (status, _, body) = kc
            .send(Method::GET, &kc.endpoint("certs"), None, &[], &[])
            .await;
        assert_eq!(status, StatusCode::OK, "GET certs");
        let set: serde_json::Value = serde_json::from_slice(&body).expect("JWKS");
        let mut keys = HashMap::new();
        for jwk in set["keys"].as_array().expect("keys") {
            // The realm also publishes an RSA-OAEP encryption key.
            if jwk["use"] != "sig" {
                continue;
            }
            let algorithm = match jwk["alg"].as_str() {
                Some("RS256") => Algorithm::RS256,
                Some("ES256") => Algorithm::ES256,
                _ => continue,
            };
            let parsed: Jwk = serde_json::from_value(jwk.clone()).expect("JWK");
            let key = DecodingKey::from_jwk(&parsed).expect("decoding key");
            let kid = jwk["kid"].as_str().expect("kid").to_owned();
            keys.insert(kid, (algorithm, key));
        }
        assert!(!keys.is_empty(), "no RS256/ES256 signing key in {set}");
        Self::serve(Check::Jwt {
            keys,
            issuer: kc.issuer(),
            verified: Mutex::default(),
        })
        .await
    }

    /// Introspects every token at Keycloak as [`INTROSPECTOR`].
    pub(crate) async fn introspecting(kc: &Keycloak) -> Self {
        Self::serve(Check::Introspect {
            url: kc.endpoint("token/introspect"),
            authorization: basic_authorization(INTROSPECTOR.0, INTROSPECTOR.1),
            client: Box::new(http_client()),
        })
        .await
    }

    async fn serve(check: Check) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner {
            check,
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            reasons: Mutex::default(),
            claims: Mutex::default(),
            tokens: Mutex::default(),
            base_url: format!("http://{addr}"),
            dpop_jtis: Mutex::default(),
            dpop_accepted: AtomicU64::new(0),
        });
        let state = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(state.handle(request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, inner, task }
    }

    /// The URL of `path` on this server.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::SeqCst)
    }

    /// Why requests were rejected, in order.
    pub(crate) fn reasons(&self) -> Vec<String> {
        lock(&self.inner.reasons).clone()
    }

    /// The claims of every accepted JWT, in order.
    pub(crate) fn claims(&self) -> Vec<Claims> {
        lock(&self.inner.claims).clone()
    }

    /// How many distinct tokens were accepted.
    pub(crate) fn distinct_tokens(&self) -> usize {
        lock(&self.inner.tokens).len()
    }

    /// How many accepted requests used a DPoP-bound token with a valid proof.
    pub(crate) fn dpop_accepted(&self) -> u64 {
        self.inner.dpop_accepted.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (dpop_scheme, token) = match authorization {
            Some(value) if value.starts_with("Bearer ") => (false, value[7..].to_owned()),
            Some(value) if value.starts_with("DPoP ") => (true, value[5..].to_owned()),
            _ => return self.reject("no token".to_owned(), "Bearer"),
        };
        let verdict = match &self.check {
            Check::Jwt {
                keys,
                issuer,
                verified,
            } => validate_jwt(&token, keys, issuer, verified).map(|c| {
                let jkt = c.cnf.as_ref().map(|cnf| cnf.jkt.clone());
                (Some(c), jkt)
            }),
            Check::Introspect {
                url,
                authorization,
                client,
            } => introspect(&token, url, authorization, client).await,
        };
        let verdict = verdict.and_then(|(claims, jkt)| {
            let bound = jkt.is_some();
            match (dpop_scheme, jkt) {
                (false, None) => {}
                (false, Some(_)) => return Err("DPoP-bound token as Bearer".to_owned()),
                (true, None) => return Err("token not DPoP-bound".to_owned()),
                (true, Some(jkt)) => self.check_proof(&request, &token, &jkt)?,
            }
            Ok((claims, bound))
        });
        match verdict {
            Ok((claims, bound)) => {
                let id = claims.as_ref().map_or(token, |c| c.jti.clone());
                if let Some(claims) = claims {
                    lock(&self.claims).push(claims);
                }
                lock(&self.tokens).insert(id);
                self.accepted.fetch_add(1, Ordering::SeqCst);
                if bound {
                    self.dpop_accepted.fetch_add(1, Ordering::SeqCst);
                }
                Response::new(Full::new(Bytes::from_static(b"ok")))
            }
            Err(reason) => {
                let challenge = if dpop_scheme {
                    r#"DPoP error="invalid_token""#
                } else {
                    r#"Bearer error="invalid_token""#
                };
                self.reject(reason, challenge)
            }
        }
    }

    /// The DPoP proof checks for a token bound to `jkt` (RFC 9449 §7.1).
    fn check_proof(
        &self,
        request: &Request<Incoming>,
        token: &str,
        jkt: &str,
    ) -> Result<(), String> {
        let refuse = |error: ProofError| format!("dpop: {error}");
        let proof = dpop::proof_header(request.headers()).map_err(refuse)?;
        let url = format!("{}{}", self.base_url, request.uri().path());
        let verified = dpop::verify_proof(
            proof,
            request.method(),
            &url,
            Some(token),
            None,
            SystemTime::now(),
            dpop::DEFAULT_IAT_WINDOW,
        )
        .map_err(refuse)?;
        if verified.jkt != jkt {
            return Err(refuse(ProofError::KeyMismatch));
        }
        lock(&self.dpop_jtis)
            .insert(&verified, dpop::DEFAULT_IAT_WINDOW)
            .map_err(refuse)
    }

    fn reject(&self, reason: String, challenge: &'static str) -> Response<Full<Bytes>> {
        lock(&self.reasons).push(reason);
        self.rejected.fetch_add(1, Ordering::SeqCst);
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, challenge)
            .body(Full::new(Bytes::new()))
            .expect("response")
    }
}

/// Checks a JWT access token: the signature once per token (as caching resource servers do),
/// the expiry on every request, with zero leeway to the sub-second.
fn validate_jwt(
    token: &str,
    keys: &HashMap<String, (Algorithm, DecodingKey)>,
    issuer: &str,
    verified: &Mutex<HashMap<String, Claims>>,
) -> Result<Claims, String> {
    let cached = lock(verified).get(token).cloned();
    let claims = match cached {
        Some(claims) => claims,
        None => {
            let claims = verify_jwt(token, keys, issuer)?;
            let mut verified = lock(verified);
            if verified.len() >= 256 {
                verified.clear();
            }
            verified.insert(token.to_owned(), claims.clone());
            claims
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    if now >= Duration::from_secs(claims.exp) {
        return Err("ExpiredSignature".to_owned());
    }
    Ok(claims)
}

fn verify_jwt(
    token: &str,
    keys: &HashMap<String, (Algorithm, DecodingKey)>,
    issuer: &str,
) -> Result<Claims, String> {
    let head = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e:?}"))?;
    let kid = head.kid.ok_or("no kid")?;
    let (algorithm, key) = keys.get(&kid).ok_or("unknown kid")?;
    if head.alg != *algorithm {
        return Err(format!("alg {:?} for a {algorithm:?} key", head.alg));
    }
    let mut validation = Validation::new(*algorithm);
    validation.leeway = 0;
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("{:?}", e.kind()))
}

async fn introspect(
    token: &str,
    url: &str,
    authorization: &str,
    client: &HttpClient,
) -> Result<(Option<Claims>, Option<String>), String> {
    let form = serde_urlencoded::to_string([("token", token)]).expect("form");
    let request = Request::post(url)
        .header(header::AUTHORIZATION, authorization)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .expect("request");
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("introspection request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("introspection body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("introspection answered {status}"));
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("introspection JSON: {e}"))?;
    if answer["active"] != serde_json::Value::Bool(true) {
        return Err("inactive".into());
    }
    let audience_ok = match &answer["aud"] {
        serde_json::Value::String(aud) => aud == AUDIENCE,
        serde_json::Value::Array(auds) => auds.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    if !audience_ok {
        return Err(format!("audience {}", answer["aud"]));
    }
    let jkt = answer["cnf"]["jkt"].as_str().map(str::to_owned);
    Ok((None, jkt))
}
