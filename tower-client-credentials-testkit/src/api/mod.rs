//! The mock protected resource: accepts live tokens from a [`TokenRegistry`] and echoes bodies.

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};

use percent_encoding::{AsciiSet, CONTROLS};
use tokio::time::Instant;

use super::{
    BoxBody, body,
    dpop::{self, JtiCache, ProofError},
    lock,
    registry::TokenRegistry,
    serve::{self, Handler, Running},
};

/// The header that carries the `jti` of the token an accepted request used.
pub const TOKEN_JTI_HEADER: HeaderName = HeaderName::from_static("x-token-jti");

/// The header that lists the request trailers of an accepted request, as `name=value;…`.
pub const TRAILERS_HEADER: HeaderName = HeaderName::from_static("x-trailers");

/// How many `jti` values [`MockApi::seen_jtis`] keeps.
const MAX_SEEN_JTIS: usize = 100_000;

/// The characters gRPC percent-encodes in `grpc-message` (besides non-ASCII).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Why a [`MockApi`] rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is malformed, badly signed, from another issuer, or unknown to the registry.
    Invalid,
    /// A token past its expiry on tokio's clock.
    Expired,
    /// A revoked token.
    Revoked,
    /// A token for another audience than the expected one.
    WrongAudience,
    /// Any token, because [`MockApi::set_reject_all`] is on.
    Forced,
    /// A DPoP-bound token with a missing, malformed or invalid `DPoP` proof
    /// (`invalid_dpop_proof`; [`MockApi::last_dpop_error`] says which check failed).
    DpopProof,
    /// A valid proof without the API's current nonce (`use_dpop_nonce`).
    DpopNonce,
    /// A valid proof signed by another key than the one the token is bound to.
    DpopKeyMismatch,
    /// A valid proof whose `jti` was seen before.
    DpopReplay,
    /// A DPoP-bound token sent with the `Bearer` scheme ([RFC 9449 §7.2]).
    ///
    /// [RFC 9449 §7.2]: https://www.rfc-editor.org/rfc/rfc9449#section-7.2
    DpopBoundAsBearer,
    /// A bearer (unbound) token sent with the `DPoP` scheme.
    DpopUnbound,
    /// A proof refused by [`MockApi::reject_next_proofs`].
    DpopForced,
}

impl RejectReason {
    const ALL: [Self; 13] = [
        Self::Missing,
        Self::Invalid,
        Self::Expired,
        Self::Revoked,
        Self::WrongAudience,
        Self::Forced,
        Self::DpopProof,
        Self::DpopNonce,
        Self::DpopKeyMismatch,
        Self::DpopReplay,
        Self::DpopBoundAsBearer,
        Self::DpopUnbound,
        Self::DpopForced,
    ];

    fn index(self) -> usize {
        match self {
            Self::Missing => 0,
            Self::Invalid => 1,
            Self::Expired => 2,
            Self::Revoked => 3,
            Self::WrongAudience => 4,
            Self::Forced => 5,
            Self::DpopProof => 6,
            Self::DpopNonce => 7,
            Self::DpopKeyMismatch => 8,
            Self::DpopReplay => 9,
            Self::DpopBoundAsBearer => 10,
            Self::DpopUnbound => 11,
            Self::DpopForced => 12,
        }
    }
}

/// The authorization scheme a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// Why a request is rejected: the counter, the challenge and the `DPoP-Nonce` to send.
struct Rejection {
    reason: RejectReason,
    /// `None`: no token at all (a bare `Bearer realm` challenge).
    description: Option<&'static str>,
    scheme: Scheme,
    error: &'static str,
    nonce: Option<String>,
}

impl Rejection {
    fn token(reason: RejectReason, scheme: Scheme, description: &'static str) -> Self {
        Self {
            reason,
            description: Some(description),
            scheme,
            error: "invalid_token",
            nonce: None,
        }
    }

    fn proof(reason: RejectReason, error: &ProofError) -> Self {
        Self {
            reason,
            description: Some(error.description()),
            scheme: Scheme::Dpop,
            error: error.error_code(),
            nonce: None,
        }
    }
}

/// A protected resource server that accepts the tokens of one
/// [`MockAuthServer`](super::MockAuthServer).
///
/// A request is accepted when it has `Authorization: Bearer <token>` and the token has a valid
/// HS256 signature and issuer, is in the [`TokenRegistry`], is not revoked, has not expired on
/// tokio's clock, and (if an audience is expected) is for that audience. An accepted request
/// gets `200 OK` whose body is the request body, with the request's `Content-Type`,
/// [`x-token-jti`](TOKEN_JTI_HEADER) and, when the request body had trailers,
/// [`x-trailers`](TRAILERS_HEADER). Any path and method is accepted.
///
/// A rejected request gets `401 Unauthorized` with
/// `WWW-Authenticate: Bearer error="invalid_token", error_description="…"` ([RFC 6750 §3]), or
/// `WWW-Authenticate: Bearer realm="mock"` when it had no token.
///
/// DPoP ([RFC 9449 §7]): a token bound to a key ([`IssuedToken::dpop_jkt`]) must come as
/// `Authorization: DPoP <token>` with one `DPoP` proof header that passes
/// [`verify_proof`](super::dpop::verify_proof) for the request's method and URL (the request
/// URI in memory; `http://127.0.0.1:PORT/path` over HTTP/1.1 on a socket) with `ath` for the
/// token, is signed by the token's key and has a `jti` not seen before. Otherwise the answer is
/// `401` with `WWW-Authenticate: DPoP error="invalid_token"` (a bound token as `Bearer`, an
/// unbound token as `DPoP`, or an invalid token) or `DPoP error="invalid_dpop_proof"`, and
/// `error_description` and `algs`. In [nonce mode](Self::dpop_nonce) a proof without the
/// API's current nonce gets `DPoP error="use_dpop_nonce"` and the nonce in `DPoP-Nonce`.
/// Bearer tokens work as before. In [gRPC mode](Self::grpc) a refused request gets `200 OK`
/// with `grpc-status: 16` (UNAUTHENTICATED) instead, and accepted responses end with a
/// `grpc-status: 0` trailer.
///
/// [`IssuedToken::dpop_jkt`]: super::IssuedToken::dpop_jkt
/// [RFC 9449 §7]: https://www.rfc-editor.org/rfc/rfc9449#section-7
///
/// Cloning is cheap and every clone is the same server. The listening task started by
/// [`serve`](Self::serve) stops on [`shutdown`](Self::shutdown) or when the last clone is
/// dropped.
///
/// [RFC 6750 §3]: https://www.rfc-editor.org/rfc/rfc6750#section-3
#[derive(Clone)]
pub struct MockApi {
    inner: Arc<Shared>,
}

struct Shared {
    state: Arc<State>,
    running: Mutex<Option<Running>>,
}

struct State {
    registry: TokenRegistry,
    config: Mutex<Config>,
    accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    jtis: Mutex<Vec<String>>,
    last_headers: Mutex<Option<HeaderMap>>,
    /// `http://127.0.0.1:PORT` while listening: the origin of requests in origin-form.
    base_url: Mutex<Option<String>>,
    dpop_nonce: Mutex<String>,
    dpop_jtis: Mutex<JtiCache>,
    proof_jtis: Mutex<Vec<String>>,
    nonce_challenges: AtomicU64,
    reject_next_proofs: AtomicU64,
    last_dpop_error: Mutex<Option<ProofError>>,
}

#[derive(Clone)]
struct Config {
    expected_audience: Option<String>,
    grpc: bool,
    reject_all: bool,
    delay: Option<Duration>,
    dpop_nonce: bool,
    dpop_iat_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            expected_audience: None,
            grpc: false,
            reject_all: false,
            delay: None,
            dpop_nonce: false,
            dpop_iat_window: dpop::DEFAULT_IAT_WINDOW,
        }
    }
}

impl MockApi {
    /// An API that accepts the tokens of `registry`, with any audience, answering plain HTTP,
    /// without delay.
    pub fn new(registry: TokenRegistry) -> Self {
        let state = State {
            registry,
            config: Mutex::new(Config::default()),
            accepted: AtomicU64::new(0),
            rejected: Default::default(),
            jtis: Mutex::new(Vec::new()),
            last_headers: Mutex::new(None),
            base_url: Mutex::new(None),
            dpop_nonce: Mutex::new(dpop::new_nonce()),
            dpop_jtis: Mutex::new(JtiCache::new()),
            proof_jtis: Mutex::new(Vec::new()),
            nonce_challenges: AtomicU64::new(0),
            reject_next_proofs: AtomicU64::new(0),
            last_dpop_error: Mutex::new(None),
        };
        Self {
            inner: Arc::new(Shared {
                state: Arc::new(state),
                running: Mutex::new(None),
            }),
        }
    }

    /// Accepts only tokens whose `aud` is `audience`. Defaults to any audience.
    pub fn expected_audience(self, audience: impl Into<String>) -> Self {
        self.set_expected_audience(Some(audience.into()));
        self
    }

    /// Answers rejections gRPC-style (`200 OK`, `grpc-status: 16`). Defaults to `false`.
    pub fn grpc(self, grpc: bool) -> Self {
        self.set_grpc(grpc);
        self
    }

    /// Rejects every token. Defaults to `false`.
    pub fn reject_all(self, reject_all: bool) -> Self {
        self.set_reject_all(reject_all);
        self
    }

    /// Waits `delay` before each response. Defaults to no delay.
    pub fn delay(self, delay: Duration) -> Self {
        self.set_delay(Some(delay));
        self
    }

    /// Requires the API's own DPoP nonce in proofs ([RFC 9449 §9]), separate from the
    /// authorization server's: a proof without the current one ([`Self::current_dpop_nonce`],
    /// changed by [`Self::rotate_dpop_nonce`]) gets `401` with
    /// `WWW-Authenticate: DPoP error="use_dpop_nonce"` and the nonce in `DPoP-Nonce`; accepted
    /// DPoP requests get `DPoP-Nonce` too. Defaults to `false`.
    ///
    /// [RFC 9449 §9]: https://www.rfc-editor.org/rfc/rfc9449#section-9
    pub fn dpop_nonce(self, nonce: bool) -> Self {
        self.set_dpop_nonce(nonce);
        self
    }

    /// How far a proof's `iat` may be from the API's (wall) clock, either way. Defaults to 60
    /// seconds.
    pub fn dpop_iat_window(self, window: Duration) -> Self {
        self.set_dpop_iat_window(window);
        self
    }

    /// Turns the DPoP nonce requirement on or off from now on.
    pub fn set_dpop_nonce(&self, nonce: bool) {
        lock(&self.inner.state.config).dpop_nonce = nonce;
    }

    /// Sets the `iat` window from now on.
    pub fn set_dpop_iat_window(&self, window: Duration) {
        lock(&self.inner.state.config).dpop_iat_window = window;
    }

    /// The API's current DPoP nonce, when nonces are required.
    pub fn current_dpop_nonce(&self) -> Option<String> {
        let enabled = lock(&self.inner.state.config).dpop_nonce;
        enabled.then(|| lock(&self.inner.state.dpop_nonce).clone())
    }

    /// Replaces the API's DPoP nonce with a new one and returns it.
    pub fn rotate_dpop_nonce(&self) -> String {
        let nonce = dpop::new_nonce();
        lock(&self.inner.state.dpop_nonce).clone_from(&nonce);
        nonce
    }

    /// Answers the next `n` requests that carry a DPoP-bound token and a `DPoP` header with
    /// `401 invalid_dpop_proof` ([`RejectReason::DpopForced`]), whatever the proof. Adds to
    /// any still pending.
    pub fn reject_next_proofs(&self, n: u64) {
        self.inner
            .state
            .reject_next_proofs
            .fetch_add(n, Ordering::SeqCst);
    }

    /// How many `use_dpop_nonce` answers were sent.
    pub fn dpop_nonce_challenges(&self) -> u64 {
        self.inner.state.nonce_challenges.load(Ordering::SeqCst)
    }

    /// The `jti` of the DPoP proof of each accepted DPoP request, in order (the first 100 000
    /// only).
    pub fn seen_proof_jtis(&self) -> Vec<String> {
        lock(&self.inner.state.proof_jtis).clone()
    }

    /// Why the last refused DPoP proof was refused.
    pub fn last_dpop_error(&self) -> Option<ProofError> {
        lock(&self.inner.state.last_dpop_error).clone()
    }

    /// Sets the expected audience (`None`: any) from now on.
    pub fn set_expected_audience(&self, audience: Option<String>) {
        lock(&self.inner.state.config).expected_audience = audience;
    }

    /// Turns gRPC mode on or off from now on.
    pub fn set_grpc(&self, grpc: bool) {
        lock(&self.inner.state.config).grpc = grpc;
    }

    /// Turns rejecting every token on or off from now on.
    pub fn set_reject_all(&self, reject_all: bool) {
        lock(&self.inner.state.config).reject_all = reject_all;
    }

    /// Sets the delay before each response (`None`: none) from now on.
    pub fn set_delay(&self, delay: Option<Duration>) {
        lock(&self.inner.state.config).delay = delay;
    }

    /// The API as an in-memory [`Service`](tower_service::Service): no socket, and it works on a paused clock.
    pub fn service(&self) -> MockApiService {
        MockApiService {
            handler: ApiHandler(self.inner.state.clone()),
        }
    }

    /// Answers one request whose body has been read (and had no trailers).
    pub async fn handle(&self, request: Request<Bytes>) -> Response<BoxBody> {
        self.inner.state.clone().handle(request, None).await
    }

    /// Starts listening on `127.0.0.1:0` (HTTP/1.1, and HTTP/2 with prior knowledge) from a
    /// task spawned on the current tokio runtime, and returns the address. If the API is
    /// already listening, returns its address.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn serve(&self) -> io::Result<SocketAddr> {
        if let Some(addr) = self.local_addr() {
            return Ok(addr);
        }
        let running = serve::serve(ApiHandler(self.inner.state.clone()), "api").await?;
        let mut slot = lock(&self.inner.running);
        let addr = slot.get_or_insert(running).addr();
        *lock(&self.inner.state.base_url) = Some(format!("http://{addr}"));
        Ok(addr)
    }

    /// The address the API listens on, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.inner.running).as_ref().map(Running::addr)
    }

    /// The API's base URL, `http://127.0.0.1:PORT`, to which any path may be appended.
    ///
    /// # Panics
    ///
    /// If the API is not listening: call [`serve`](Self::serve) first.
    pub fn url(&self) -> String {
        match self.local_addr() {
            Some(addr) => format!("http://{addr}"),
            None => panic!("MockApi::url called before MockApi::serve"),
        }
    }

    /// Stops listening and drops every open connection. The in-memory service keeps working,
    /// and [`serve`](Self::serve) may be called again (on a new port).
    pub fn shutdown(&self) {
        lock(&self.inner.running).take();
    }

    /// The registry whose tokens the API accepts.
    pub fn registry(&self) -> TokenRegistry {
        self.inner.state.registry.clone()
    }

    /// How many requests the API answered or is answering.
    pub fn requests(&self) -> u64 {
        self.accepted() + self.rejected_total()
    }

    /// How many requests were accepted.
    pub fn accepted(&self) -> u64 {
        self.inner.state.accepted.load(Ordering::SeqCst)
    }

    /// How many requests were rejected for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.inner.state.rejected[reason.index()].load(Ordering::SeqCst)
    }

    /// How many requests were rejected, for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.inner
            .state
            .rejected
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .sum()
    }

    /// The `jti` of the token of each accepted request, in order (the first 100 000 only, so
    /// that long benchmarks do not grow it without bound).
    pub fn seen_jtis(&self) -> Vec<String> {
        lock(&self.inner.state.jtis).clone()
    }

    /// The headers of the last request (the `Authorization` and `DPoP` headers marked sensitive).
    pub fn last_request_headers(&self) -> Option<HeaderMap> {
        lock(&self.inner.state.last_headers).clone()
    }
}

impl fmt::Debug for MockApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected: Vec<(RejectReason, u64)> = RejectReason::ALL
            .into_iter()
            .map(|reason| (reason, self.rejected(reason)))
            .filter(|(_, count)| *count > 0)
            .collect();
        f.debug_struct("MockApi")
            .field("local_addr", &self.local_addr())
            .field("accepted", &self.accepted())
            .field("rejected", &rejected)
            .finish_non_exhaustive()
    }
}

serve::in_memory_service! {
    /// [`MockApi`] as an in-memory [`Service`](tower_service::Service), from [`MockApi::service`]: always ready, it
    /// reads the whole request body (with its trailers), then answers; it fails only when the
    /// request body fails.
    MockApiService(ApiHandler)
}

#[derive(Clone)]
struct ApiHandler(Arc<State>);

impl Handler for ApiHandler {
    fn handle(
        &self,
        request: Request<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> impl Future<Output = Response<BoxBody>> + Send + 'static {
        self.0.clone().handle(request, trailers)
    }
}

impl State {
    async fn handle(
        self: Arc<Self>,
        request: Request<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> Response<BoxBody> {
        let config = lock(&self.config).clone();
        if let Some(delay) = config.delay {
            tokio::time::sleep(delay).await;
        }
        let mut headers = request.headers().clone();
        if let Some(value) = headers.get_mut(header::AUTHORIZATION) {
            value.set_sensitive(true);
        }
        if let http::header::Entry::Occupied(mut entry) = headers.entry(dpop::DPOP_HEADER) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
        *lock(&self.last_headers) = Some(headers);

        match self.check(&request, &config) {
            Ok((jti, nonce)) => {
                self.accepted.fetch_add(1, Ordering::SeqCst);
                let mut jtis = lock(&self.jtis);
                if jtis.len() < MAX_SEEN_JTIS {
                    jtis.push(jti.clone());
                }
                drop(jtis);
                tracing::debug!(jti, "mock API accepted a request");
                let mut response = accept(request, trailers, &jti, config.grpc);
                if let Some(nonce) = nonce.and_then(|nonce| HeaderValue::from_str(&nonce).ok()) {
                    response
                        .headers_mut()
                        .insert(dpop::DPOP_NONCE_HEADER, nonce);
                }
                response
            }
            Err(rejection) => {
                self.rejected[rejection.reason.index()].fetch_add(1, Ordering::SeqCst);
                tracing::debug!(reason = ?rejection.reason, "mock API rejected a request");
                if rejection.error == "use_dpop_nonce" {
                    self.nonce_challenges.fetch_add(1, Ordering::SeqCst);
                }
                reject(&rejection, config.grpc)
            }
        }
    }

    /// Returns the token's `jti` and the `DPoP-Nonce` to send, or why the request is
    /// rejected.
    fn check(
        &self,
        request: &Request<Bytes>,
        config: &Config,
    ) -> Result<(String, Option<String>), Rejection> {
        let (scheme, token) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                if scheme.eq_ignore_ascii_case("bearer") {
                    Some((Scheme::Bearer, token.trim()))
                } else if scheme.eq_ignore_ascii_case("dpop") {
                    Some((Scheme::Dpop, token.trim()))
                } else {
                    None
                }
            })
            .ok_or(Rejection {
                reason: RejectReason::Missing,
                description: None,
                scheme: Scheme::Bearer,
                error: "invalid_token",
                nonce: None,
            })?;
        if config.reject_all {
            return Err(Rejection::token(
                RejectReason::Forced,
                scheme,
                "the access token was rejected",
            ));
        }
        let invalid = || {
            Rejection::token(
                RejectReason::Invalid,
                scheme,
                "the access token is malformed, badly signed or unknown",
            )
        };
        let claims = self.registry.verify(token).map_err(|_| invalid())?;
        let issued = self.registry.get(token).ok_or_else(invalid)?;
        if issued.revoked {
            return Err(Rejection::token(
                RejectReason::Revoked,
                scheme,
                "the access token was revoked",
            ));
        }
        if Instant::now() >= issued.expires_at {
            return Err(Rejection::token(
                RejectReason::Expired,
                scheme,
                "the access token expired",
            ));
        }
        if let Some(expected) = &config.expected_audience
            && &issued.audience != expected
        {
            return Err(Rejection::token(
                RejectReason::WrongAudience,
                scheme,
                "the access token is for another audience",
            ));
        }
        match (scheme, issued.dpop_jkt) {
            (Scheme::Bearer, None) => Ok((claims.jti, None)),
            (Scheme::Dpop, None) => Err(Rejection::token(
                RejectReason::DpopUnbound,
                Scheme::Dpop,
                "the access token is not DPoP-bound",
            )),
            (Scheme::Bearer, Some(_)) => Err(Rejection::token(
                RejectReason::DpopBoundAsBearer,
                Scheme::Dpop,
                "the access token is DPoP-bound: send it with the DPoP scheme and a proof",
            )),
            (Scheme::Dpop, Some(jkt)) => {
                let nonce = self.check_proof(request, token, &jkt, config)?;
                Ok((claims.jti, nonce))
            }
        }
    }

    /// Checks the `DPoP` proof of a request with a token bound to `jkt`; returns the nonce to
    /// send back in nonce mode.
    fn check_proof(
        &self,
        request: &Request<Bytes>,
        token: &str,
        jkt: &str,
        config: &Config,
    ) -> Result<Option<String>, Rejection> {
        let nonce = config.dpop_nonce.then(|| lock(&self.dpop_nonce).clone());
        let refuse = |reason: RejectReason, error: ProofError| {
            let mut rejection = Rejection::proof(reason, &error);
            if error.is_nonce_error() {
                rejection.nonce.clone_from(&nonce);
            }
            *lock(&self.last_dpop_error) = Some(error);
            rejection
        };
        let proof = dpop::proof_header(request.headers())
            .map_err(|error| refuse(RejectReason::DpopProof, error))?;
        let forced = self
            .reject_next_proofs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if forced {
            return Err(refuse(RejectReason::DpopForced, ProofError::Forced));
        }
        let url = dpop::request_url(request.uri(), lock(&self.base_url).as_deref());
        let verified = dpop::verify_proof(
            proof,
            request.method(),
            &url,
            Some(token),
            nonce.as_deref(),
            SystemTime::now(),
            config.dpop_iat_window,
        )
        .map_err(|error| {
            let reason = if error.is_nonce_error() {
                RejectReason::DpopNonce
            } else {
                RejectReason::DpopProof
            };
            refuse(reason, error)
        })?;
        if verified.jkt != jkt {
            return Err(refuse(
                RejectReason::DpopKeyMismatch,
                ProofError::KeyMismatch,
            ));
        }
        lock(&self.dpop_jtis)
            .insert(&verified, config.dpop_iat_window)
            .map_err(|error| refuse(RejectReason::DpopReplay, error))?;
        let mut jtis = lock(&self.proof_jtis);
        if jtis.len() < MAX_SEEN_JTIS {
            jtis.push(verified.jti);
        }
        Ok(nonce)
    }
}

fn accept(
    request: Request<Bytes>,
    trailers: Option<HeaderMap>,
    jti: &str,
    grpc: bool,
) -> Response<BoxBody> {
    let (parts, bytes) = request.into_parts();
    let mut response = if grpc {
        let mut grpc_trailers = HeaderMap::new();
        grpc_trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Response::new(body::full_with_trailers(bytes, grpc_trailers))
    } else {
        Response::new(body::full(bytes))
    };
    let headers = response.headers_mut();
    match parts.headers.get(header::CONTENT_TYPE) {
        Some(content_type) => {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
        None if grpc => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
        }
        None => {}
    }
    if let Ok(jti) = HeaderValue::from_str(jti) {
        headers.insert(TOKEN_JTI_HEADER, jti);
    }
    if let Some(trailers) = trailers.filter(|trailers| !trailers.is_empty()) {
        let mut list = Vec::new();
        for (name, value) in &trailers {
            if !list.is_empty() {
                list.push(b';');
            }
            list.extend_from_slice(name.as_str().as_bytes());
            list.push(b'=');
            list.extend_from_slice(value.as_bytes());
        }
        if let Ok(list) = HeaderValue::from_bytes(&list) {
            headers.insert(TRAILERS_HEADER, list);
        }
    }
    response
}

fn reject(rejection: &Rejection, grpc: bool) -> Response<BoxBody> {
    let description = rejection.description;
    let error = rejection.error;
    let challenge = match (description, rejection.scheme) {
        (Some(description), Scheme::Bearer) => HeaderValue::from_str(&format!(
            r#"Bearer error="{error}", error_description="{description}""#
        )),
        (Some(description), Scheme::Dpop) => HeaderValue::from_str(&format!(
            r#"DPoP error="{error}", error_description="{description}", algs="{}""#,
            dpop::SUPPORTED_ALGORITHMS.join(" ")
        )),
        (None, _) => Ok(HeaderValue::from_static(r#"Bearer realm="mock""#)),
    };
    let message = description.unwrap_or("an access token is required");
    let mut response = if grpc {
        let mut response = Response::new(body::full(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("16"));
        let encoded = percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string();
        if let Ok(encoded) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", encoded);
        }
        response
    } else {
        let body = description.map_or_else(String::new, |description| {
            serde_json::json!({
                "error": error,
                "error_description": description,
            })
            .to_string()
        });
        let mut response = Response::new(body::full(body));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        if description.is_some() {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        response
    };
    if let Ok(challenge) = challenge {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(nonce) = rejection
        .nonce
        .as_deref()
        .and_then(|nonce| HeaderValue::from_str(nonce).ok())
    {
        response
            .headers_mut()
            .insert(dpop::DPOP_NONCE_HEADER, nonce);
    }
    response
}

#[cfg(test)]
mod tests;
