//! The mock authorization server: a client-credentials token endpoint with faults on demand.
//!
//! One file per concern: the faults it can be told to inject (`fault.rs`), its builder
//! (`builder.rs`), how it reads a token request (`request.rs`), how it answers one
//! (`handler.rs`), and its tests (`tests.rs`); the server's state and handle are here.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};

use super::{
    BoxBody, MockApi,
    dpop::{self, DecodedProof, JtiCache, ProofError},
    registry::{IssuedToken, TokenRegistry},
    serve::{self, Handler, Running},
};

mod builder;
mod fault;
mod handler;
mod request;
#[cfg(test)]
mod tests;

pub use self::{builder::MockAuthServerBuilder, fault::Fault};
use self::{builder::*, fault::*, handler::*, request::*};

/// The client id registered by default.
pub const DEFAULT_CLIENT_ID: &str = "demo-client";

/// The secret of [`DEFAULT_CLIENT_ID`]. It holds characters that must be encoded in
/// `client_secret_basic` (`+`, `%`, `:`, space, …), so a client that skips the encoding of
/// [RFC 6749 §2.3.1] is refused.
///
/// [RFC 6749 §2.3.1]: https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1
pub const DEFAULT_CLIENT_SECRET: &str = "s3cr+t%:@/&= x";

/// The path of the token endpoint. Requests to other paths get `404 Not Found` and are not
/// counted.
pub const TOKEN_PATH: &str = "/oauth/token";

const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
const DEFAULT_ISSUER: &str = "mock-auth-server";
const DEFAULT_AUDIENCE: &str = "mock-api";

/// How a [`MockAuthServer`] sends `expires_in` in its token responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiresIn {
    /// As a JSON number, `"expires_in": 60` (the default).
    #[default]
    Number,
    /// As a JSON string, `"expires_in": "60"`, as some servers do.
    String,
    /// Not at all.
    Omitted,
}

/// How the client authenticated a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// HTTP Basic authentication (`Authorization: Basic …`).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
    /// Both of the above, which the server refuses.
    Multiple,
    /// No client secret at all.
    None,
}

/// A copy of a request made to the token endpoint.
///
/// `Debug` redacts the `client_secret` parameter and the raw body; the `Authorization` and
/// `DPoP` headers are marked sensitive.
#[derive(Clone)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The request's 0-based position among the requests to the token endpoint.
    pub index: u64,
    /// The request method.
    pub method: Method,
    /// The request URI.
    pub uri: Uri,
    /// The request headers.
    pub headers: HeaderMap,
    /// The media type of the `Content-Type` header, without parameters, lowercased.
    pub content_type: Option<String>,
    /// The body parameters, from a form or JSON body; empty when the body could not be parsed.
    /// When a parameter is repeated, the first value is kept.
    pub params: BTreeMap<String, String>,
    /// How the client authenticated.
    pub auth_method: ClientAuthMethod,
    /// The raw request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: BTreeMap<&str, &str> = self
            .params
            .iter()
            .map(|(name, value)| {
                let value = if name == "client_secret" {
                    "[redacted]"
                } else {
                    value.as_str()
                };
                (name.as_str(), value)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("index", &self.index)
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers)
            .field("content_type", &self.content_type)
            .field("params", &params)
            .field("auth_method", &self.auth_method)
            .field("body", &format_args!("[{} bytes]", self.body.len()))
            .finish()
    }
}

/// An in-process OAuth 2.0 authorization server with one endpoint, [`TOKEN_PATH`], for the
/// client-credentials grant ([RFC 6749 §4.4]).
///
/// It accepts `POST` requests whose body is a form (`application/x-www-form-urlencoded`) or a
/// JSON object, authenticates the client with `client_secret_basic` or `client_secret_post`,
/// and answers with an HS256 JWT:
///
/// ```json
/// {"access_token": "eyJ…", "token_type": "Bearer", "expires_in": 60, "scope": "read"}
/// ```
///
/// The token's `aud` is the `audience` parameter, else the `resource` parameter, else the
/// configured audience. Errors are [RFC 6749 §5.2] JSON bodies: `401 invalid_client` (unknown
/// client, wrong secret, no or both authentication methods), `400 unsupported_grant_type`,
/// `400 invalid_scope`, `400 invalid_request` (unreadable body, missing `grant_type`, repeated
/// parameter). Every issued token is kept in the [`TokenRegistry`] shared with [`MockApi`].
///
/// DPoP ([RFC 9449]): a token request with a `DPoP` header must carry one valid proof (checked
/// by [`verify_proof`](super::dpop::verify_proof) against `POST` and the token endpoint's URL,
/// its `jti` not seen before); it gets a token bound to the proof key's thumbprint
/// ([`IssuedToken::dpop_jkt`], and `cnf.jkt` in the JWT) with `token_type: DPoP`. An invalid
/// proof gets `400 invalid_dpop_proof`. See [`MockAuthServerBuilder::dpop`],
/// [`require_dpop`](MockAuthServerBuilder::require_dpop),
/// [`dpop_nonce`](MockAuthServerBuilder::dpop_nonce) and
/// [`dpop_bound_as_bearer`](MockAuthServerBuilder::dpop_bound_as_bearer). The URL a proof's
/// `htu` must match is the request's URI when it is absolute (in memory), else
/// `http://127.0.0.1:PORT/oauth/token` (over a socket).
///
/// Cloning is cheap and every clone is the same server. The listening task started by
/// [`serve`](Self::serve) stops on [`shutdown`](Self::shutdown) or when the last clone is
/// dropped.
///
/// [RFC 6749 §4.4]: https://www.rfc-editor.org/rfc/rfc6749#section-4.4
/// [RFC 6749 §5.2]: https://www.rfc-editor.org/rfc/rfc6749#section-5.2
/// [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
#[derive(Clone)]
pub struct MockAuthServer {
    inner: Arc<Shared>,
}

struct Shared {
    state: Arc<State>,
    running: Mutex<Option<Running>>,
}

struct State {
    clients: HashMap<String, ClientEntry>,
    config: Mutex<Config>,
    registry: TokenRegistry,
    token_requests: AtomicU64,
    issued: AtomicU64,
    jti_seq: AtomicU64,
    faults: Mutex<Faults>,
    last_request: Mutex<Option<RecordedRequest>>,
    dpop: DpopState,
    /// `http://127.0.0.1:PORT` while listening: the origin of requests in origin-form.
    base_url: Mutex<Option<String>>,
}

/// What the token endpoint remembers of DPoP proofs.
struct DpopState {
    nonce: Mutex<String>,
    jtis: Mutex<JtiCache>,
    proofs: AtomicU64,
    rejected: AtomicU64,
    nonce_challenges: AtomicU64,
    last_proof: Mutex<Option<DecodedProof>>,
    last_error: Mutex<Option<ProofError>>,
}

impl Default for DpopState {
    fn default() -> Self {
        Self {
            nonce: Mutex::new(dpop::new_nonce()),
            jtis: Mutex::new(JtiCache::new()),
            proofs: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            nonce_challenges: AtomicU64::new(0),
            last_proof: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }
}

#[derive(Clone)]
struct ClientEntry {
    secret: String,
    scopes: Option<BTreeSet<String>>,
}

#[derive(Clone)]
struct Config {
    lifetime: Duration,
    expires_in: ExpiresIn,
    token_type: String,
    audience: String,
    default_scope: Option<String>,
    dpop: DpopConfig,
}

type FaultPlan = dyn Fn(u64) -> Option<Fault> + Send + Sync;

#[derive(Default)]
struct Faults {
    queued: VecDeque<Fault>,
    plan: Option<Arc<FaultPlan>>,
}

impl Default for MockAuthServer {
    fn default() -> Self {
        Self::new()
    }
}

impl MockAuthServer {
    /// A server with the defaults: client [`DEFAULT_CLIENT_ID`] with [`DEFAULT_CLIENT_SECRET`],
    /// 60-second tokens, `expires_in` as a number, `token_type` `"Bearer"`.
    pub fn new() -> Self {
        MockAuthServerBuilder::new().build()
    }

    /// A builder to configure the server.
    pub fn builder() -> MockAuthServerBuilder {
        MockAuthServerBuilder::new()
    }

    /// A server with the defaults, already listening on `127.0.0.1:0`.
    pub async fn start() -> io::Result<Self> {
        MockAuthServerBuilder::new().start().await
    }

    /// The server as an in-memory [`Service`](tower_service::Service): no socket, and it works on a paused clock.
    pub fn service(&self) -> MockAuthService {
        MockAuthService {
            handler: AuthHandler(self.inner.state.clone()),
        }
    }

    /// Answers one request whose body has been read.
    pub async fn handle(&self, request: Request<Bytes>) -> Response<BoxBody> {
        self.inner.state.clone().handle(request).await
    }

    /// Starts listening on `127.0.0.1:0` (HTTP/1.1, and HTTP/2 with prior knowledge) from a
    /// task spawned on the current tokio runtime, and returns the address. If the server is
    /// already listening, returns its address.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn serve(&self) -> io::Result<SocketAddr> {
        if let Some(addr) = self.local_addr() {
            return Ok(addr);
        }
        let running = serve::serve(AuthHandler(self.inner.state.clone()), "auth").await?;
        let mut slot = super::lock(&self.inner.running);
        // Another caller may have won the race; keep its listener.
        let addr = slot.get_or_insert(running).addr();
        *super::lock(&self.inner.state.base_url) = Some(format!("http://{addr}"));
        Ok(addr)
    }

    /// The address the server listens on, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        super::lock(&self.inner.running).as_ref().map(Running::addr)
    }

    /// The token endpoint's URL, `http://127.0.0.1:PORT/oauth/token`.
    ///
    /// # Panics
    ///
    /// If the server is not listening: call [`serve`](Self::serve) first.
    pub fn token_url(&self) -> String {
        match self.local_addr() {
            Some(addr) => format!("http://{addr}{TOKEN_PATH}"),
            None => panic!("MockAuthServer::token_url called before MockAuthServer::serve"),
        }
    }

    /// Stops listening and drops every open connection. The in-memory service keeps working,
    /// and [`serve`](Self::serve) may be called again (on a new port).
    pub fn shutdown(&self) {
        super::lock(&self.inner.running).take();
    }

    /// A new protected API that accepts this server's tokens.
    pub fn api(&self) -> MockApi {
        MockApi::new(self.registry())
    }

    /// The tokens issued by this server.
    pub fn registry(&self) -> TokenRegistry {
        self.inner.state.registry.clone()
    }

    /// How many requests reached the token endpoint, including failed and faulted ones.
    pub fn token_requests(&self) -> u64 {
        self.inner.state.token_requests.load(Ordering::SeqCst)
    }

    /// How many tokens were issued.
    pub fn issued(&self) -> u64 {
        self.inner.state.issued.load(Ordering::SeqCst)
    }

    /// The last request to the token endpoint.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        super::lock(&self.inner.state.last_request).clone()
    }

    /// Every issued token, oldest first.
    pub fn tokens(&self) -> Vec<IssuedToken> {
        self.inner.state.registry.tokens()
    }

    /// The most recently issued token.
    pub fn last_token(&self) -> Option<IssuedToken> {
        self.inner.state.registry.last()
    }

    /// Sets the lifetime of the tokens issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        super::lock(&self.inner.state.config).lifetime = lifetime;
    }

    /// The lifetime of newly issued tokens.
    pub fn lifetime(&self) -> Duration {
        super::lock(&self.inner.state.config).lifetime
    }

    /// Sets how `expires_in` is sent from now on.
    pub fn set_expires_in(&self, expires_in: ExpiresIn) {
        super::lock(&self.inner.state.config).expires_in = expires_in;
    }

    /// Sets the `token_type` sent from now on.
    pub fn set_token_type(&self, token_type: impl Into<String>) {
        super::lock(&self.inner.state.config).token_type = token_type.into();
    }

    /// Decides the fault of each request from its 0-based index among the token endpoint's
    /// requests (`None`: answer normally). Replaces any previous plan; faults queued with
    /// [`fail_next`](Self::fail_next) go first.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_client_credentials_testkit::{Fault, MockAuthServer};
    ///
    /// let server = MockAuthServer::new();
    /// // Every other request fails.
    /// server.set_fault_plan(|index| {
    ///     (index % 2 == 0).then(|| Fault::status(StatusCode::SERVICE_UNAVAILABLE))
    /// });
    /// ```
    pub fn set_fault_plan(&self, plan: impl Fn(u64) -> Option<Fault> + Send + Sync + 'static) {
        super::lock(&self.inner.state.faults).plan = Some(Arc::new(plan));
    }

    /// Answers the next `n` requests with `fault`, after any faults already queued.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        super::lock(&self.inner.state.faults)
            .queued
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Removes the fault plan and the queued faults.
    pub fn clear_faults(&self) {
        let mut faults = super::lock(&self.inner.state.faults);
        faults.queued.clear();
        faults.plan = None;
    }

    /// Revokes `access_token`. Returns whether this server issued it.
    pub fn revoke(&self, access_token: &str) -> bool {
        self.inner.state.registry.revoke(access_token)
    }

    /// Revokes every token issued so far.
    pub fn revoke_all(&self) {
        self.inner.state.registry.revoke_all();
    }

    /// Turns DPoP support on or off from now on (see [`MockAuthServerBuilder::dpop`]).
    pub fn set_dpop(&self, enabled: bool) {
        super::lock(&self.inner.state.config).dpop.enabled = enabled;
    }

    /// Turns requiring a DPoP proof on or off from now on (see
    /// [`MockAuthServerBuilder::require_dpop`]).
    pub fn set_require_dpop(&self, required: bool) {
        super::lock(&self.inner.state.config).dpop.required = required;
    }

    /// Turns the DPoP nonce requirement on or off from now on (see
    /// [`MockAuthServerBuilder::dpop_nonce`]).
    pub fn set_dpop_nonce(&self, nonce: bool) {
        super::lock(&self.inner.state.config).dpop.nonce = nonce;
    }

    /// Turns the `token_type: Bearer` misbehaviour on or off from now on (see
    /// [`MockAuthServerBuilder::dpop_bound_as_bearer`]).
    pub fn set_dpop_bound_as_bearer(&self, misbehave: bool) {
        super::lock(&self.inner.state.config).dpop.bound_as_bearer = misbehave;
    }

    /// Sets the `iat` window from now on (see [`MockAuthServerBuilder::dpop_iat_window`]).
    pub fn set_dpop_iat_window(&self, window: Duration) {
        super::lock(&self.inner.state.config).dpop.iat_window = window;
    }

    /// The current DPoP nonce, when nonces are required.
    pub fn dpop_nonce(&self) -> Option<String> {
        let enabled = super::lock(&self.inner.state.config).dpop.nonce;
        enabled.then(|| super::lock(&self.inner.state.dpop.nonce).clone())
    }

    /// Replaces the current DPoP nonce with a new one and returns it: proofs with the old one
    /// get `use_dpop_nonce` from now on.
    pub fn rotate_dpop_nonce(&self) -> String {
        let nonce = dpop::new_nonce();
        super::lock(&self.inner.state.dpop.nonce).clone_from(&nonce);
        nonce
    }

    /// How many token requests carried a `DPoP` header while DPoP was on (faulted ones
    /// included).
    pub fn dpop_proofs(&self) -> u64 {
        self.inner.state.dpop.proofs.load(Ordering::SeqCst)
    }

    /// How many token requests were refused for their DPoP proof (`invalid_dpop_proof` or
    /// `use_dpop_nonce`), a missing required proof included.
    pub fn dpop_rejected(&self) -> u64 {
        self.inner.state.dpop.rejected.load(Ordering::SeqCst)
    }

    /// How many `use_dpop_nonce` answers were sent.
    pub fn dpop_nonce_challenges(&self) -> u64 {
        self.inner
            .state
            .dpop
            .nonce_challenges
            .load(Ordering::SeqCst)
    }

    /// The header and claims of the last `DPoP` proof received, decoded without checks (so a
    /// refused proof can be looked at too).
    pub fn last_dpop_proof(&self) -> Option<DecodedProof> {
        super::lock(&self.inner.state.dpop.last_proof).clone()
    }

    /// Why the last refused DPoP proof was refused.
    pub fn last_dpop_error(&self) -> Option<ProofError> {
        super::lock(&self.inner.state.dpop.last_error).clone()
    }

    /// The `jkt` the most recently issued token is bound to (`None` for a bearer token or
    /// when no token was issued).
    pub fn last_token_jkt(&self) -> Option<String> {
        self.last_token().and_then(|token| token.dpop_jkt)
    }
}

impl fmt::Debug for MockAuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockAuthServer")
            .field("local_addr", &self.local_addr())
            .field("token_requests", &self.token_requests())
            .field("issued", &self.issued())
            .finish_non_exhaustive()
    }
}

serve::in_memory_service! {
    /// [`MockAuthServer`] as an in-memory [`Service`](tower_service::Service), from [`MockAuthServer::service`]: always
    /// ready, it reads the whole request body, then answers; it fails only when the request
    /// body fails.
    MockAuthService(AuthHandler)
}

#[derive(Clone)]
struct AuthHandler(Arc<State>);

impl Handler for AuthHandler {
    fn handle(
        &self,
        request: Request<Bytes>,
        _trailers: Option<HeaderMap>,
    ) -> impl Future<Output = Response<BoxBody>> + Send + 'static {
        self.0.clone().handle(request)
    }
}
