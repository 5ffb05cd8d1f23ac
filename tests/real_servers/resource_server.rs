//! The protected API of the real-server suites: a hyper server on `127.0.0.1:0` that checks
//! every request's token the way a real resource server would, independently of the crate,
//! and counts what it accepted and rejected. Each suite builds it from its own server's keys
//! and endpoints (`tests/interop/resource_server.rs`, `tests/keycloak/resource_server.rs`)
//! and reads the claims it needs (the `C` of [`ResourceServer`]).
//!
//! - [`ResourceServer::serve_jwt`]: JWT access tokens. The keys ([`JwtRules`]) are fetched
//!   once by the suite; each token must have the required `typ` if there is one (RFC 9068's
//!   `at+jwt`), a `kid` from those keys, the `alg` of that key and a valid signature, the
//!   expected `aud` and `iss`, and an `exp` still in the future with zero leeway: refused from
//!   the instant `now >= exp` (RFC 7519 §4.1.4, "on or after"), as strict verifiers do.
//!   jsonwebtoken alone compares whole seconds (`exp < now_secs`) and would accept a token for
//!   up to a second after its `exp`, so the check is made here again with the sub-second clock.
//! - [`ResourceServer::serve_introspecting`]: every token is looked up at the authorization
//!   server's introspection endpoint (RFC 7662) with the resource server's own client
//!   credentials; it must be `active` with the expected `aud`. Revoked tokens are inactive
//!   there, which JWKS checks cannot see.
//!
//! Anything else gets 401 with `WWW-Authenticate: Bearer error="invalid_token"` (just
//! `Bearer` when there is no token at all, RFC 6750 §3.1).
//!
//! DPoP (RFC 9449): a token bound to a key (`cnf.jkt` in the JWT, or in the introspection
//! answer) must come as `Authorization: DPoP <token>` with one `DPoP` proof that passes the
//! crate's fixture verifier (`tower_client_credentials_testkit::dpop::verify_proof`: `typ`, asymmetric `alg`, public
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
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, de::DeserializeOwned};
use tokio::{net::TcpListener, task::JoinHandle};
use tower_client_credentials_testkit::dpop::{self, JtiCache, ProofError};

use super::http::{HttpClient, basic_authorization, http_client};

/// The claims every resource server reads from a JWT access token, whatever else the suite's
/// claims type `C` holds.
#[derive(Debug, Clone, Deserialize)]
struct Common {
    /// What makes two tokens distinct.
    jti: String,
    /// In seconds since the epoch.
    exp: u64,
    /// `cnf.jkt` of a DPoP-bound token.
    cnf: Option<Confirmation>,
}

/// The `cnf` claim (RFC 9449 §6.1).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Confirmation {
    pub(crate) jkt: String,
}

/// What a JWT access token must satisfy.
pub(crate) struct JwtRules {
    /// The signing keys by `kid`, each with the one algorithm it verifies.
    pub(crate) keys: HashMap<String, (Algorithm, DecodingKey)>,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    /// The `typ` header the tokens must carry, if any.
    pub(crate) typ: Option<&'static str>,
}

enum Check<C> {
    Jwt {
        rules: JwtRules,
        /// Tokens whose signature, header and claims passed, with their claims.
        verified: Mutex<HashMap<String, (Common, C)>>,
    },
    Introspect {
        url: String,
        authorization: String,
        audience: String,
        client: Box<HttpClient>,
    },
}

struct Inner<C> {
    check: Check<C>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Why requests were rejected, in order.
    reasons: Mutex<Vec<String>>,
    /// The accepted JWTs' claims, in order (JWT mode).
    claims: Mutex<Vec<C>>,
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
pub(crate) struct ResourceServer<C> {
    addr: SocketAddr,
    inner: Arc<Inner<C>>,
    task: JoinHandle<()>,
}

impl<C> Drop for ResourceServer<C> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> ResourceServer<C> {
    /// Validates JWTs by `rules`.
    pub(crate) async fn serve_jwt(rules: JwtRules) -> Self {
        assert!(!rules.keys.is_empty(), "no signing key");
        Self::serve(Check::Jwt {
            rules,
            verified: Mutex::default(),
        })
        .await
    }

    /// Introspects every token at `url`, authenticating as `client` (id, secret); active
    /// tokens must have `audience`.
    pub(crate) async fn serve_introspecting(
        url: String,
        client: (&str, &str),
        audience: &str,
    ) -> Self {
        Self::serve(Check::Introspect {
            url,
            authorization: basic_authorization(client.0, client.1),
            audience: audience.to_owned(),
            client: Box::new(http_client()),
        })
        .await
    }

    async fn serve(check: Check<C>) -> Self {
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
    pub(crate) fn claims(&self) -> Vec<C> {
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

impl<C: DeserializeOwned + Clone> Inner<C> {
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
                    reason: "no token".to_owned(),
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
            Check::Jwt { rules, verified } => validate_jwt(&token, rules, verified)
                .map(|(common, claims)| {
                    let jkt = common.cnf.map(|cnf| cnf.jkt);
                    (Some((common.jti, claims)), jkt)
                })
                .map_err(invalid),
            Check::Introspect {
                url,
                authorization,
                audience,
                client,
            } => introspect(&token, url, authorization, audience, client)
                .await
                .map(|jkt| (None, jkt))
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
                let id = match claims {
                    Some((jti, claims)) => {
                        lock(&self.claims).push(claims);
                        jti
                    }
                    None => token,
                };
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
fn validate_jwt<C: DeserializeOwned + Clone>(
    token: &str,
    rules: &JwtRules,
    verified: &Mutex<HashMap<String, (Common, C)>>,
) -> Result<(Common, C), String> {
    let cached = lock(verified).get(token).cloned();
    let claims = match cached {
        Some(claims) => claims,
        None => {
            let claims = verify_jwt(token, rules)?;
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
    if now >= Duration::from_secs(claims.0.exp) {
        return Err("ExpiredSignature".to_owned());
    }
    Ok(claims)
}

/// Header, signature and the claims jsonwebtoken checks (`aud`, `iss`, required claims); the
/// claims read as [`Common`] and as `C`.
fn verify_jwt<C: DeserializeOwned>(token: &str, rules: &JwtRules) -> Result<(Common, C), String> {
    let head = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e:?}"))?;
    if let Some(typ) = rules.typ
        && head.typ.as_deref() != Some(typ)
    {
        return Err(format!("typ {:?} is not {typ}", head.typ));
    }
    let kid = head.kid.ok_or("no kid")?;
    let (algorithm, key) = rules.keys.get(&kid).ok_or("unknown kid")?;
    if head.alg != *algorithm {
        return Err(format!("alg {:?} for a {algorithm:?} key", head.alg));
    }
    let mut validation = Validation::new(*algorithm);
    validation.leeway = 0;
    validation.set_audience(&[&rules.audience]);
    validation.set_issuer(&[&rules.issuer]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
        .map_err(|e| format!("{:?}", e.kind()))?
        .claims;
    let read = |e: serde_json::Error| format!("claims: {e}");
    let common = serde_json::from_value(claims.clone()).map_err(read)?;
    Ok((common, serde_json::from_value(claims).map_err(read)?))
}

/// `jwt` with one byte of its signature changed, so that no key verifies it.
pub(crate) fn tampered(jwt: &str) -> String {
    let (head, signature) = jwt.rsplit_once('.').expect("JWS");
    let mut signature = signature.to_owned().into_bytes();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    format!("{head}.{}", String::from_utf8(signature).expect("ASCII"))
}

/// Looks `token` up at the introspection endpoint; the `cnf.jkt` of an active token with
/// `audience`.
async fn introspect(
    token: &str,
    url: &str,
    authorization: &str,
    audience: &str,
    client: &HttpClient,
) -> Result<Option<String>, String> {
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
        serde_json::Value::String(aud) => aud == audience,
        serde_json::Value::Array(auds) => auds.iter().any(|a| a == audience),
        _ => false,
    };
    if !audience_ok {
        return Err(format!("audience {}", answer["aud"]));
    }
    Ok(answer["cnf"]["jkt"].as_str().map(str::to_owned))
}
