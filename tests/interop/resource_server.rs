//! The protected API of the interop tests: a hyper server on `127.0.0.1:0` that checks every
//! request's bearer token the way a real resource server would, and counts what it accepted
//! and rejected.
//!
//! - [`ResourceServer::jwt`]: JWT access tokens (RFC 9068). The provider's JWKS is fetched
//!   once; each token must have `typ: at+jwt`, a `kid` from that set, a valid ES256 signature,
//!   `aud = urn:tcc:api`, `iss` = the issuer, and an `exp` still in the future with zero
//!   leeway: refused from the instant `now >= exp` (RFC 7519 §4.1.4, "on or after"), as strict
//!   verifiers do. jsonwebtoken alone compares whole seconds (`exp < now_secs`) and would
//!   accept a token for up to a second after its `exp`, so the check is made here again with
//!   the sub-second clock.
//! - [`ResourceServer::introspecting`]: opaque tokens, each one looked up at the provider's
//!   introspection endpoint (RFC 7662) with the resource server's own client credentials; it
//!   must be `active` with `aud = urn:tcc:opaque`.
//!
//! Anything else gets 401 with `WWW-Authenticate: Bearer error="invalid_token"` (just
//! `Bearer` when there is no token at all, RFC 6750 §3.1).
//!
//! DPoP (RFC 9449): a token bound to a key (`cnf.jkt` in the JWT, or in the introspection
//! answer) must come as `Authorization: DPoP <token>` with one `DPoP` proof that passes the
//! crate's fixture verifier (`test_util::dpop::verify_proof`: `typ`, asymmetric `alg`, public
//! `jwk`, signature, `htm`, `htu` = `http://127.0.0.1:PORT/path`, `iat` within 60 s, `ath`),
//! whose key thumbprint is `cnf.jkt` and whose `jti` was not seen before. A bound token as
//! `Bearer`, or an unbound one as `DPoP`, is refused with `DPoP error="invalid_token"`; a bad
//! proof with `DPoP error="invalid_dpop_proof"`. With
//! [`require_dpop_nonce`](ResourceServer::require_dpop_nonce), proofs must also carry the
//! resource server's own nonce (`DPoP error="use_dpop_nonce"` and `DPoP-Nonce` otherwise).

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
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle};
use tower_client_credentials::test_util::dpop::{self, JtiCache, ProofError};

use super::authorization_server::{AuthServer, HttpClient, basic_authorization, http_client};

/// The audience of the provider's JWT access tokens.
pub(crate) const JWT_AUDIENCE: &str = "urn:tcc:api";
/// The audience of its opaque access tokens.
pub(crate) const OPAQUE_AUDIENCE: &str = "urn:tcc:opaque";

/// The claims the resource server reads from a JWT access token.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    pub(crate) jti: String,
    pub(crate) sub: String,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
    pub(crate) scope: Option<String>,
    /// `cnf.jkt` of a DPoP-bound token.
    pub(crate) cnf: Option<Confirmation>,
}

/// The `cnf` claim (RFC 9449 §6.1).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Confirmation {
    pub(crate) jkt: String,
}

enum Check {
    Jwt {
        keys: JwkSet,
        validation: Validation,
        /// Tokens whose signature, header, `aud` and `iss` passed, with their claims.
        verified: Mutex<HashMap<String, Claims>>,
    },
    Introspect {
        url: String,
        authorization: String,
        client: HttpClient,
    },
}

struct Inner {
    check: Check,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Why requests were rejected, in order.
    reasons: Mutex<Vec<String>>,
    /// The accepted JWTs' claims, in order (JWT mode).
    claims: Mutex<Vec<Claims>>,
    /// The distinct tokens accepted (jti for JWTs, the token itself for opaque ones).
    tokens: Mutex<HashSet<String>>,
    /// `http://127.0.0.1:PORT`, the origin of the `htu` of proofs.
    base_url: String,
    /// The nonce proofs must carry, when one is required.
    dpop_nonce: Mutex<Option<String>>,
    dpop_jtis: Mutex<JtiCache>,
    dpop_accepted: AtomicU64,
    nonce_challenges: AtomicU64,
}

/// A refusal: the reason recorded, the challenge, and the `DPoP-Nonce` to send.
struct Refusal {
    reason: String,
    challenge: String,
    nonce: Option<String>,
}

impl Refusal {
    fn bearer(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            challenge: r#"Bearer error="invalid_token""#.to_owned(),
            nonce: None,
        }
    }

    fn dpop(reason: impl Into<String>, error: &str) -> Self {
        Self {
            reason: reason.into(),
            challenge: format!(
                r#"DPoP error="{error}", algs="{}""#,
                dpop::SUPPORTED_ALGORITHMS.join(" ")
            ),
            nonce: None,
        }
    }
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
    /// Validates JWTs from `auth`, with the keys published at its `/jwks` now.
    pub(crate) async fn jwt(auth: &AuthServer) -> Self {
        Self::jwt_expecting(auth, auth.issuer(), JWT_AUDIENCE).await
    }

    /// Like [`jwt`](Self::jwt), but expecting another `iss` or `aud`: it then rejects the
    /// provider's tokens, which shows those claims are checked.
    pub(crate) async fn jwt_expecting(auth: &AuthServer, issuer: &str, audience: &str) -> Self {
        let (status, _, body) = auth.send(Method::GET, "/jwks", None, &[]).await;
        assert_eq!(status, StatusCode::OK, "GET /jwks");
        let keys: JwkSet = serde_json::from_slice(&body).expect("JWKS");
        assert!(!keys.keys.is_empty(), "empty JWKS");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = 0;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        Self::serve(Check::Jwt {
            keys,
            validation,
            verified: Mutex::default(),
        })
        .await
    }

    /// Introspects every token at `auth`, authenticating as `client` (id, secret).
    pub(crate) async fn introspecting(auth: &AuthServer, client: (&str, &str)) -> Self {
        Self::serve(Check::Introspect {
            url: format!("{}/token/introspection", auth.issuer()),
            authorization: basic_authorization(client.0, client.1),
            client: http_client(),
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
            dpop_nonce: Mutex::default(),
            dpop_jtis: Mutex::default(),
            dpop_accepted: AtomicU64::new(0),
            nonce_challenges: AtomicU64::new(0),
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

    /// How many `use_dpop_nonce` answers were sent.
    pub(crate) fn nonce_challenges(&self) -> u64 {
        self.inner.nonce_challenges.load(Ordering::SeqCst)
    }

    /// Requires a resource-server nonce in DPoP proofs from now on, a new one at each call;
    /// returns it.
    pub(crate) fn require_dpop_nonce(&self) -> String {
        let nonce = dpop::new_nonce();
        *lock(&self.inner.dpop_nonce) = Some(nonce.clone());
        nonce
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
            _ => {
                return self.reject(Refusal {
                    reason: "no bearer token".to_owned(),
                    challenge: "Bearer".to_owned(),
                    nonce: None,
                });
            }
        };
        let invalid = |reason: String| {
            if dpop_scheme {
                Refusal::dpop(reason, "invalid_token")
            } else {
                Refusal::bearer(reason)
            }
        };
        let verdict = match &self.check {
            Check::Jwt {
                keys,
                validation,
                verified,
            } => validate_jwt(&token, keys, validation, verified)
                .map(|c| {
                    let jkt = c.cnf.as_ref().map(|cnf| cnf.jkt.clone());
                    (Some(c), jkt)
                })
                .map_err(invalid),
            Check::Introspect {
                url,
                authorization,
                client,
            } => introspect(&token, url, authorization, client)
                .await
                .map_err(invalid),
        };
        let verdict = verdict.and_then(|(claims, jkt)| {
            let dpop_bound = jkt.is_some();
            match (dpop_scheme, jkt) {
                (false, None) => {}
                (false, Some(_)) => {
                    return Err(Refusal::dpop("DPoP-bound token as Bearer", "invalid_token"));
                }
                (true, None) => {
                    return Err(Refusal::dpop("token not DPoP-bound", "invalid_token"));
                }
                (true, Some(jkt)) => self.check_proof(&request, &token, &jkt)?,
            }
            Ok((claims, dpop_bound))
        });
        match verdict {
            Ok((claims, dpop_bound)) => {
                let id = claims.as_ref().map_or(token, |c| c.jti.clone());
                if let Some(claims) = claims {
                    lock(&self.claims).push(claims);
                }
                lock(&self.tokens).insert(id);
                self.accepted.fetch_add(1, Ordering::SeqCst);
                if dpop_bound {
                    self.dpop_accepted.fetch_add(1, Ordering::SeqCst);
                }
                Response::new(Full::new(Bytes::from_static(b"ok")))
            }
            Err(refusal) => self.reject(refusal),
        }
    }

    /// The DPoP proof checks for a token bound to `jkt` (RFC 9449 §7.1).
    fn check_proof(
        &self,
        request: &Request<Incoming>,
        token: &str,
        jkt: &str,
    ) -> Result<(), Refusal> {
        let nonce = lock(&self.dpop_nonce).clone();
        let refuse = |error: ProofError| {
            let mut refusal = Refusal::dpop(format!("dpop: {error}"), error.error_code());
            if error.is_nonce_error() {
                refusal.nonce.clone_from(&nonce);
            }
            refusal
        };
        let proof = dpop::proof_header(request.headers()).map_err(refuse)?;
        let url = format!("{}{}", self.base_url, request.uri().path());
        let verified = dpop::verify_proof(
            proof,
            request.method(),
            &url,
            Some(token),
            nonce.as_deref(),
            std::time::SystemTime::now(),
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

    fn reject(&self, refusal: Refusal) -> Response<Full<Bytes>> {
        lock(&self.reasons).push(refusal.reason);
        self.rejected.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, refusal.challenge)
            .body(Full::new(Bytes::new()))
            .expect("response");
        if let Some(nonce) = refusal.nonce {
            self.nonce_challenges.fetch_add(1, Ordering::SeqCst);
            response.headers_mut().insert(
                dpop::DPOP_NONCE_HEADER,
                HeaderValue::from_str(&nonce).expect("nonce"),
            );
        }
        response
    }
}

/// Checks a JWT access token. The signature is verified once per token, as resource servers
/// that cache validated tokens do (an ES256 verification in a debug build costs milliseconds,
/// which would make the resource server, not the middleware, the bottleneck of the load
/// test); a changed byte makes another token, verified afresh. The expiry is checked on every
/// request.
fn validate_jwt(
    token: &str,
    keys: &JwkSet,
    validation: &Validation,
    verified: &Mutex<HashMap<String, Claims>>,
) -> Result<Claims, String> {
    let cached = lock(verified).get(token).cloned();
    let claims = match cached {
        Some(claims) => claims,
        None => {
            let claims = verify_jwt(token, keys, validation)?;
            let mut verified = lock(verified);
            // Bounded: a load test sees a few dozen tokens.
            if verified.len() >= 256 {
                verified.clear();
            }
            verified.insert(token.to_owned(), claims.clone());
            claims
        }
    };
    // Strict expiry, to the sub-second: `exp` is the first instant the token is refused.
    // jsonwebtoken's own check (`exp < now` in whole seconds) is weaker and is not relied on.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    if now >= Duration::from_secs(claims.exp) {
        return Err("ExpiredSignature".to_owned());
    }
    Ok(claims)
}

/// Header, signature and the claims jsonwebtoken checks (`aud`, `iss`, required claims).
fn verify_jwt(token: &str, keys: &JwkSet, validation: &Validation) -> Result<Claims, String> {
    let head = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e:?}"))?;
    if head.typ.as_deref() != Some("at+jwt") {
        return Err(format!("typ {:?} is not at+jwt", head.typ));
    }
    let kid = head.kid.ok_or("no kid")?;
    let jwk = keys.find(&kid).ok_or("unknown kid")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key: {e:?}"))?;
    jsonwebtoken::decode::<Claims>(token, &key, validation)
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
        serde_json::Value::String(aud) => aud == OPAQUE_AUDIENCE,
        serde_json::Value::Array(auds) => auds.iter().any(|a| a == OPAQUE_AUDIENCE),
        _ => false,
    };
    if !audience_ok {
        return Err(format!("audience {}", answer["aud"]));
    }
    let jkt = answer["cnf"]["jkt"].as_str().map(str::to_owned);
    Ok((None, jkt))
}
