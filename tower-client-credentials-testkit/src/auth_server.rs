//! The mock authorization server: a client-credentials token endpoint with faults on demand.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::{
    BoxBody, BoxError, MockApi, body,
    dpop::{self, DecodedProof, JtiCache, ProofError},
    registry::{Claims, Confirmation, IssuedToken, TokenRegistry},
    serve::{self, Handler, ResponseFuture, Running},
};

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

/// A way for the token endpoint to misbehave.
///
/// Give faults to [`MockAuthServer::fail_next`] or [`MockAuthServer::set_fault_plan`]. A fault
/// replaces the normal answer, except [`Fault::delay`] which answers normally after a delay;
/// [`with_delay`](Fault::with_delay), [`with_status`](Fault::with_status) and
/// [`with_header`](Fault::with_header) adjust any fault. Delays use `tokio::time::sleep`, so they
/// follow a paused clock.
#[derive(Debug, Clone)]
pub struct Fault {
    delay: Option<Duration>,
    status: Option<StatusCode>,
    headers: HeaderMap,
    kind: FaultKind,
}

#[derive(Debug, Clone)]
enum FaultKind {
    /// The normal answer.
    Succeed,
    /// A complete response.
    Respond(Bytes),
    /// No answer at all.
    Hang,
    /// Response head, then these bytes, then nothing.
    Stall(Bytes),
    /// Response head, then these bytes, then a body error.
    Abort(Bytes),
}

impl Fault {
    fn new(kind: FaultKind) -> Self {
        Self {
            delay: None,
            status: None,
            headers: HeaderMap::new(),
            kind,
        }
    }

    /// Answers with `status` and an empty body.
    pub fn status(status: StatusCode) -> Self {
        Self::new(FaultKind::Respond(Bytes::new())).with_status(status)
    }

    /// Answers with the given status, headers and body.
    pub fn response(status: StatusCode, headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        let mut fault = Self::new(FaultKind::Respond(body.into())).with_status(status);
        fault.headers = headers;
        fault
    }

    /// Answers with an [RFC 6749 §5.2] error:
    /// `{"error": error, "error_description": description}` as `application/json`.
    ///
    /// [RFC 6749 §5.2]: https://www.rfc-editor.org/rfc/rfc6749#section-5.2
    pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Self {
        Self::json(status, error_body(error, description))
    }

    /// Answers with `body` as `application/json`; it need not be valid JSON.
    pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Respond(body.into()))
            .with_status(status)
            .with_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
    }

    /// Answers with an HTML page, as a proxy or load balancer in front of a server would.
    pub fn html(status: StatusCode, html: impl Into<String>) -> Self {
        Self::new(FaultKind::Respond(Bytes::from(html.into())))
            .with_status(status)
            .with_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )
    }

    /// Answers with `body` and no `Content-Type`.
    pub fn raw(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Respond(body.into())).with_status(status)
    }

    /// Answers normally, after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Self::new(FaultKind::Succeed).with_delay(delay)
    }

    /// Never answers. The request stays pending until the client gives up (or, over a socket,
    /// until the server shuts down).
    pub fn hang() -> Self {
        Self::new(FaultKind::Hang)
    }

    /// Answers `200 OK` as `application/json`, sends `prefix`, then never finishes the body.
    pub fn stall_body(prefix: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Stall(prefix.into())).with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
    }

    /// Answers `200 OK` as `application/json`, sends `prefix`, then fails the body with
    /// [`BodyAborted`](super::BodyAborted) (over a socket, the connection is cut).
    pub fn abort_body(prefix: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Abort(prefix.into())).with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
    }

    /// Waits `delay` before doing what the fault says.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Uses `status` for the response. Has no effect on [`Fault::hang`].
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets a response header, replacing any value the response had. Has no effect on
    /// [`Fault::hang`].
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// Builds a [`MockAuthServer`].
///
/// ```
/// use std::time::Duration;
/// use tower_client_credentials_testkit::{ExpiresIn, MockAuthServer};
///
/// let server = MockAuthServer::builder()
///     .client_with_scopes("reporting", "reporting-secret", ["read", "write"])
///     .lifetime(Duration::from_secs(3600))
///     .expires_in(ExpiresIn::String)
///     .build();
/// # drop(server);
/// ```
#[derive(Clone)]
pub struct MockAuthServerBuilder {
    default_client: bool,
    clients: Vec<(String, ClientEntry)>,
    lifetime: Duration,
    expires_in: ExpiresIn,
    token_type: String,
    signing_key: Option<Vec<u8>>,
    issuer: String,
    audience: String,
    default_scope: Option<String>,
    dpop: DpopConfig,
}

/// The DPoP settings of a [`MockAuthServer`].
#[derive(Debug, Clone)]
struct DpopConfig {
    enabled: bool,
    required: bool,
    nonce: bool,
    bound_as_bearer: bool,
    iat_window: Duration,
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            required: false,
            nonce: false,
            bound_as_bearer: false,
            iat_window: dpop::DEFAULT_IAT_WINDOW,
        }
    }
}

impl Default for MockAuthServerBuilder {
    fn default() -> Self {
        Self {
            default_client: true,
            clients: Vec::new(),
            lifetime: DEFAULT_LIFETIME,
            expires_in: ExpiresIn::Number,
            token_type: "Bearer".to_owned(),
            signing_key: None,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            default_scope: None,
            dpop: DpopConfig::default(),
        }
    }
}

impl MockAuthServerBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a client that may ask for any scope. Registering an id again replaces it.
    ///
    /// [`DEFAULT_CLIENT_ID`] stays registered unless
    /// [`without_default_client`](Self::without_default_client) is called.
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.clients.push((
            id.into(),
            ClientEntry {
                secret: secret.into(),
                scopes: None,
            },
        ));
        self
    }

    /// Registers a client that may ask only for `scopes`; other scopes get `400 invalid_scope`.
    /// A request without a `scope` is granted all of them.
    pub fn client_with_scopes<I>(
        mut self,
        id: impl Into<String>,
        secret: impl Into<String>,
        scopes: I,
    ) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.clients.push((
            id.into(),
            ClientEntry {
                secret: secret.into(),
                scopes: Some(scopes.into_iter().map(Into::into).collect()),
            },
        ));
        self
    }

    /// Does not register [`DEFAULT_CLIENT_ID`].
    pub fn without_default_client(mut self) -> Self {
        self.default_client = false;
        self
    }

    /// Sets how long tokens live. Defaults to 60 seconds.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets how `expires_in` is sent. Defaults to [`ExpiresIn::Number`].
    pub fn expires_in(mut self, expires_in: ExpiresIn) -> Self {
        self.expires_in = expires_in;
        self
    }

    /// Sets the `token_type` of token responses. Defaults to `"Bearer"`.
    pub fn token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = token_type.into();
        self
    }

    /// Sets the HS256 signing key. Defaults to 32 random bytes per server, so tokens from one
    /// server are invalid at another's API.
    pub fn signing_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.signing_key = Some(key.into());
        self
    }

    /// Sets the `iss` claim. Defaults to `"mock-auth-server"`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Sets the `aud` claim of tokens requested without an `audience` or `resource` parameter.
    /// Defaults to `"mock-api"`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Sets the scope granted to clients without a scope restriction that ask for none.
    /// Defaults to none, in which case the response has no `scope`.
    pub fn default_scope(mut self, scope: impl Into<String>) -> Self {
        self.default_scope = Some(scope.into());
        self
    }

    /// Whether the token endpoint supports DPoP ([RFC 9449]). Defaults to `true`: a request
    /// with a `DPoP` header must carry a valid proof and gets a DPoP-bound token
    /// (`token_type: DPoP`); a request without one gets a bearer token. With `false` the
    /// server ignores `DPoP` headers, as a server without DPoP support does, and issues bearer
    /// tokens.
    ///
    /// [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
    pub fn dpop(mut self, enabled: bool) -> Self {
        self.dpop.enabled = enabled;
        self
    }

    /// Refuses token requests without a `DPoP` proof (`400 invalid_dpop_proof`). Defaults to
    /// `false`.
    pub fn require_dpop(mut self, required: bool) -> Self {
        self.dpop.required = required;
        self
    }

    /// Requires a server-provided nonce in DPoP proofs ([RFC 9449 §8]). The server holds one
    /// current nonce ([`MockAuthServer::dpop_nonce`], changed by
    /// [`MockAuthServer::rotate_dpop_nonce`]); a proof without it or with another one gets
    /// `400 {"error": "use_dpop_nonce", …}` with the current nonce in `DPoP-Nonce`. Successful
    /// DPoP token responses carry `DPoP-Nonce` too. Defaults to `false`.
    ///
    /// [RFC 9449 §8]: https://www.rfc-editor.org/rfc/rfc9449#section-8
    pub fn dpop_nonce(mut self, nonce: bool) -> Self {
        self.dpop.nonce = nonce;
        self
    }

    /// Misbehaves: a token issued for a valid DPoP proof is still bound to the proof's key
    /// (registry and `cnf.jkt`), but the response says `token_type: Bearer`
    /// (the [`token_type`](Self::token_type) setting). Defaults to `false`.
    pub fn dpop_bound_as_bearer(mut self, misbehave: bool) -> Self {
        self.dpop.bound_as_bearer = misbehave;
        self
    }

    /// How far a proof's `iat` may be from the server's (wall) clock, either way. Defaults to
    /// 60 seconds.
    pub fn dpop_iat_window(mut self, window: Duration) -> Self {
        self.dpop.iat_window = window;
        self
    }

    /// Builds the server. It serves in memory at once ([`MockAuthServer::service`]); call
    /// [`MockAuthServer::serve`] to listen on a socket.
    pub fn build(self) -> MockAuthServer {
        let signing_key = self.signing_key.unwrap_or_else(|| {
            std::iter::repeat_with(|| fastrand::u8(..))
                .take(32)
                .collect()
        });
        let mut clients = HashMap::new();
        if self.default_client {
            clients.insert(
                DEFAULT_CLIENT_ID.to_owned(),
                ClientEntry {
                    secret: DEFAULT_CLIENT_SECRET.to_owned(),
                    scopes: None,
                },
            );
        }
        clients.extend(self.clients);
        let state = State {
            clients,
            config: Mutex::new(Config {
                lifetime: self.lifetime,
                expires_in: self.expires_in,
                token_type: self.token_type,
                audience: self.audience,
                default_scope: self.default_scope,
                dpop: self.dpop,
            }),
            registry: TokenRegistry::new(self.issuer, &signing_key),
            token_requests: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            jti_seq: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
            last_request: Mutex::new(None),
            dpop: DpopState::default(),
            base_url: Mutex::new(None),
        };
        MockAuthServer {
            inner: Arc::new(Shared {
                state: Arc::new(state),
                running: Mutex::new(None),
            }),
        }
    }

    /// Builds the server and starts listening on `127.0.0.1:0`.
    pub async fn start(self) -> io::Result<MockAuthServer> {
        let server = self.build();
        server.serve().await?;
        Ok(server)
    }
}

impl fmt::Debug for MockAuthServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients: Vec<&str> = self.clients.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("MockAuthServerBuilder")
            .field("default_client", &self.default_client)
            .field("clients", &clients)
            .field("lifetime", &self.lifetime)
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("default_scope", &self.default_scope)
            .field("dpop", &self.dpop)
            .finish_non_exhaustive()
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

    /// The server as an in-memory [`Service`]: no socket, and it works on a paused clock.
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

/// [`MockAuthServer`] as an in-memory [`Service`], from [`MockAuthServer::service`].
///
/// It reads the whole request body, then answers. It is always ready, and fails only when the
/// request body fails.
#[derive(Clone)]
pub struct MockAuthService {
    handler: AuthHandler,
}

impl<B> Service<Request<B>> for MockAuthService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::new(self.handler.clone(), request)
    }
}

impl fmt::Debug for MockAuthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockAuthService").finish_non_exhaustive()
    }
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

/// A token request, parsed as far as it goes.
struct Parsed {
    content_type: Option<String>,
    /// The body parameters in order, or why they could not be read.
    params: Result<Vec<(String, String)>, &'static str>,
    /// `Authorization: Basic` credentials, or why they could not be decoded.
    basic: Option<Result<(String, String), &'static str>>,
}

impl Parsed {
    fn new(request: &Request<Bytes>) -> Self {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        let params = match content_type.as_deref() {
            Some("application/x-www-form-urlencoded") => {
                serde_urlencoded::from_bytes(request.body()).map_err(|_| "malformed form body")
            }
            Some("application/json") => json_params(request.body()),
            _ => Err("the body must be application/x-www-form-urlencoded or application/json"),
        };
        let basic = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| basic_credentials(value.as_bytes()));
        Self {
            content_type,
            params,
            basic,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        let params = self.params.as_ref().ok()?;
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn auth_method(&self) -> ClientAuthMethod {
        match (self.basic.is_some(), self.param("client_secret").is_some()) {
            (true, true) => ClientAuthMethod::Multiple,
            (true, false) => ClientAuthMethod::ClientSecretBasic,
            (false, true) => ClientAuthMethod::ClientSecretPost,
            (false, false) => ClientAuthMethod::None,
        }
    }
}

/// Reads a JSON object's members as parameters: strings as they are, numbers and booleans as
/// their JSON text, `null` as absent.
fn json_params(body: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| "the body is not a JSON object")?;
    let mut params = Vec::with_capacity(object.len());
    for (name, value) in object {
        let value = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(value) => value,
            serde_json::Value::Bool(value) => value.to_string(),
            serde_json::Value::Number(value) => value.to_string(),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err("JSON parameters must be strings");
            }
        };
        params.push((name, value));
    }
    Ok(params)
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))` ([RFC 6749 §2.3.1]). Returns
/// `None` when the header is not Basic.
///
/// [RFC 6749 §2.3.1]: https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1
fn basic_credentials(value: &[u8]) -> Option<Result<(String, String), &'static str>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decode = || {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "malformed Basic credentials")?;
        let decoded = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or("malformed Basic credentials")?;
        Ok((form_decode(id)?, form_decode(secret)?))
    };
    Some(decode())
}

/// Percent-decodes `value`, reading `+` as a space (`application/x-www-form-urlencoded`).
fn form_decode(value: &str) -> Result<String, &'static str> {
    let value = value.replace('+', " ");
    percent_encoding::percent_decode_str(&value)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "malformed Basic credentials")
}

impl State {
    async fn handle(self: Arc<Self>, request: Request<Bytes>) -> Response<BoxBody> {
        if request.uri().path() != TOKEN_PATH {
            return error_response(StatusCode::NOT_FOUND, "invalid_request", "no such endpoint");
        }
        let index = self.token_requests.fetch_add(1, Ordering::SeqCst);
        let parsed = Parsed::new(&request);
        self.record(index, &request, &parsed);

        let Some(fault) = self.next_fault(index) else {
            let response = self.token_response(&request, &parsed);
            trace(index, &parsed, &response, "none");
            return response;
        };
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        let Fault {
            status,
            headers,
            kind,
            ..
        } = fault;
        let (fault_name, mut response) = match kind {
            FaultKind::Succeed => ("delay", self.token_response(&request, &parsed)),
            FaultKind::Respond(bytes) => ("respond", Response::new(body::full(bytes))),
            FaultKind::Stall(prefix) => ("stall_body", Response::new(body::stalled(prefix))),
            FaultKind::Abort(prefix) => ("abort_body", Response::new(body::aborted(prefix))),
            FaultKind::Hang => {
                tracing::debug!(index, "mock token endpoint hangs");
                return std::future::pending().await;
            }
        };
        if let Some(status) = status {
            *response.status_mut() = status;
        }
        response.headers_mut().extend(headers);
        trace(index, &parsed, &response, fault_name);
        response
    }

    fn record(&self, index: u64, request: &Request<Bytes>, parsed: &Parsed) {
        let mut headers = request.headers().clone();
        if let Some(value) = headers.get_mut(header::AUTHORIZATION) {
            value.set_sensitive(true);
        }
        if let http::header::Entry::Occupied(mut entry) = headers.entry(dpop::DPOP_HEADER) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
        let mut params = BTreeMap::new();
        if let Ok(list) = &parsed.params {
            for (name, value) in list {
                params.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        let recorded = RecordedRequest {
            index,
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers,
            content_type: parsed.content_type.clone(),
            params,
            auth_method: parsed.auth_method(),
            body: request.body().clone(),
        };
        *super::lock(&self.last_request) = Some(recorded);

        if super::lock(&self.config).dpop.enabled
            && let Some(proof) = request.headers().get(dpop::DPOP_HEADER)
        {
            self.dpop.proofs.fetch_add(1, Ordering::SeqCst);
            let decoded = proof.to_str().ok().and_then(DecodedProof::decode);
            *super::lock(&self.dpop.last_proof) = decoded;
        }
    }

    fn next_fault(&self, index: u64) -> Option<Fault> {
        let plan = {
            let mut faults = super::lock(&self.faults);
            if let Some(fault) = faults.queued.pop_front() {
                return Some(fault);
            }
            faults.plan.clone()
        };
        // Called without the lock, so a plan may use the server.
        plan.and_then(|plan| plan(index))
    }

    /// The normal answer to a token request.
    fn token_response(&self, request: &Request<Bytes>, parsed: &Parsed) -> Response<BoxBody> {
        match self
            .authorize(request, parsed)
            .and_then(|grant| Ok((grant, self.check_dpop(request)?)))
        {
            Ok((grant, jkt)) => self.issue(grant, parsed, jkt),
            Err(refusal) => refusal.into_response(),
        }
    }

    /// Checks the request's DPoP proof, if DPoP is on; returns the thumbprint to bind the
    /// token to, or `None` for a bearer token.
    fn check_dpop(&self, request: &Request<Bytes>) -> Result<Option<String>, Refusal> {
        let config = super::lock(&self.config).dpop.clone();
        if !config.enabled {
            return Ok(None);
        }
        let nonce = config.nonce.then(|| super::lock(&self.dpop.nonce).clone());
        let proof = match dpop::proof_header(request.headers()) {
            Ok(proof) => proof,
            Err(ProofError::Missing) if !config.required => return Ok(None),
            Err(error) => return Err(self.refuse_proof(error, nonce)),
        };
        let url = dpop::request_url(request.uri(), super::lock(&self.base_url).as_deref());
        let verified = dpop::verify_proof(
            proof,
            request.method(),
            &url,
            None,
            nonce.as_deref(),
            SystemTime::now(),
            config.iat_window,
        )
        .and_then(|verified| {
            super::lock(&self.dpop.jtis).insert(&verified, config.iat_window)?;
            Ok(verified)
        })
        .map_err(|error| self.refuse_proof(error, nonce))?;
        Ok(Some(verified.jkt))
    }

    /// `400 use_dpop_nonce` with the current nonce, or `400 invalid_dpop_proof`.
    fn refuse_proof(&self, error: ProofError, nonce: Option<String>) -> Refusal {
        self.dpop.rejected.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(%error, "mock token endpoint refused a DPoP proof");
        let refusal = Refusal::bad_request(error.error_code(), error.description());
        *super::lock(&self.dpop.last_error) = Some(error.clone());
        match nonce.and_then(|nonce| HeaderValue::from_str(&nonce).ok()) {
            Some(nonce) if error.is_nonce_error() => {
                self.dpop.nonce_challenges.fetch_add(1, Ordering::SeqCst);
                refusal.with_header(dpop::DPOP_NONCE_HEADER, nonce)
            }
            _ => refusal,
        }
    }

    /// Checks the request and the client; returns the client id and the scope to grant.
    fn authorize(
        &self,
        request: &Request<Bytes>,
        parsed: &Parsed,
    ) -> Result<(String, String), Refusal> {
        if request.method() != Method::POST {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "the token endpoint accepts only POST",
            )
            .with_header(header::ALLOW, HeaderValue::from_static("POST")));
        }
        let params = parsed
            .params
            .as_ref()
            .map_err(|description| Refusal::bad_request("invalid_request", *description))?;
        let mut seen = BTreeSet::new();
        // RFC 8707 lets `resource` repeat; no other parameter may (RFC 6749 §3.1).
        if let Some((name, _)) = params
            .iter()
            .find(|(name, _)| name.as_str() != "resource" && !seen.insert(name))
        {
            return Err(Refusal::bad_request(
                "invalid_request",
                format!("parameter {name} is repeated"),
            ));
        }

        let client_id = self.authenticate(parsed)?;

        match parsed.param("grant_type") {
            Some("client_credentials") => {}
            Some(_) => {
                return Err(Refusal::bad_request(
                    "unsupported_grant_type",
                    "only client_credentials is supported",
                ));
            }
            None => {
                return Err(Refusal::bad_request(
                    "invalid_request",
                    "grant_type is missing",
                ));
            }
        }

        let scope = self.grant_scope(&client_id, parsed.param("scope"))?;
        Ok((client_id, scope))
    }

    /// Authenticates the client; returns its id.
    fn authenticate(&self, parsed: &Parsed) -> Result<String, Refusal> {
        let body_id = parsed.param("client_id");
        let body_secret = parsed.param("client_secret");
        let (id, secret, basic) = match (&parsed.basic, body_secret) {
            (Some(_), Some(_)) => {
                return Err(Refusal::invalid_client(
                    "use one client authentication method, not both",
                    true,
                ));
            }
            (Some(Err(description)), None) => {
                return Err(Refusal::invalid_client(description, true));
            }
            (Some(Ok((id, secret))), None) => {
                if body_id.is_some_and(|body_id| body_id != id) {
                    return Err(Refusal::invalid_client(
                        "client_id does not match the Basic credentials",
                        true,
                    ));
                }
                (id.as_str(), secret.as_str(), true)
            }
            (None, Some(secret)) => match body_id {
                Some(id) => (id, secret, false),
                None => return Err(Refusal::invalid_client("client_id is missing", false)),
            },
            (None, None) => {
                return Err(Refusal::invalid_client(
                    "client authentication is required",
                    true,
                ));
            }
        };
        match self.clients.get(id) {
            Some(client) if client.secret == secret => Ok(id.to_owned()),
            _ => Err(Refusal::invalid_client(
                "unknown client or wrong secret",
                basic,
            )),
        }
    }

    /// The scope to grant `client_id` for the `requested` scope.
    fn grant_scope(&self, client_id: &str, requested: Option<&str>) -> Result<String, Refusal> {
        let allowed = self
            .clients
            .get(client_id)
            .and_then(|client| client.scopes.as_ref());
        let Some(requested) = requested else {
            return Ok(match allowed {
                Some(allowed) => allowed
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                None => super::lock(&self.config)
                    .default_scope
                    .clone()
                    .unwrap_or_default(),
            });
        };
        let mut granted = Vec::new();
        for scope in requested.split(' ').filter(|scope| !scope.is_empty()) {
            // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if !scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(Refusal::bad_request("invalid_scope", "malformed scope"));
            }
            if allowed.is_some_and(|allowed| !allowed.contains(scope)) {
                return Err(Refusal::bad_request(
                    "invalid_scope",
                    format!("scope {scope} is not allowed"),
                ));
            }
            if !granted.contains(&scope) {
                granted.push(scope);
            }
        }
        Ok(granted.join(" "))
    }

    /// Issues a token and answers with it.
    fn issue(
        &self,
        (client_id, scope): (String, String),
        parsed: &Parsed,
        jkt: Option<String>,
    ) -> Response<BoxBody> {
        let config = super::lock(&self.config).clone();
        let audience = [parsed.param("audience"), parsed.param("resource")]
            .into_iter()
            .flatten()
            .find(|audience| !audience.is_empty())
            .unwrap_or(&config.audience)
            .to_owned();
        // Milliseconds, so that the JSON number is short and exact enough.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as f64
            / 1000.0;
        let lifetime_secs = config.lifetime.as_secs_f64();
        let jti = format!(
            "{:016x}-{}",
            fastrand::u64(..),
            self.jti_seq.fetch_add(1, Ordering::SeqCst)
        );
        let claims = Claims {
            iss: self.registry.issuer().to_owned(),
            sub: client_id.clone(),
            aud: audience.clone(),
            iat: now,
            exp: now + lifetime_secs,
            jti: jti.clone(),
            scope: scope.clone(),
            client_id: client_id.clone(),
            cnf: jkt.clone().map(|jkt| Confirmation { jkt }),
        };
        let access_token = match self.registry.sign(&claims) {
            Ok(token) => token,
            Err(error) => {
                tracing::warn!(%error, "mock token endpoint failed to sign a token");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "failed to sign the token",
                );
            }
        };
        let issued_at = Instant::now();
        let expires_at = issued_at
            .checked_add(config.lifetime)
            .unwrap_or_else(|| issued_at + Duration::from_secs(86400 * 365 * 30));
        self.registry.insert(IssuedToken {
            access_token: access_token.clone(),
            jti,
            client_id,
            audience,
            scope: scope.clone(),
            issued_at,
            expires_at,
            revoked: false,
            dpop_jkt: jkt.clone(),
        });
        self.issued.fetch_add(1, Ordering::SeqCst);

        let mut body = serde_json::Map::new();
        body.insert("access_token".into(), access_token.into());
        let token_type = match jkt {
            Some(_) if !config.dpop.bound_as_bearer => "DPoP".to_owned(),
            _ => config.token_type,
        };
        body.insert("token_type".into(), token_type.into());
        match config.expires_in {
            ExpiresIn::Number => {
                body.insert("expires_in".into(), config.lifetime.as_secs().into());
            }
            ExpiresIn::String => {
                body.insert(
                    "expires_in".into(),
                    config.lifetime.as_secs().to_string().into(),
                );
            }
            ExpiresIn::Omitted => {}
        }
        if !scope.is_empty() {
            body.insert("scope".into(), scope.into());
        }
        let mut response = json_response(
            StatusCode::OK,
            serde_json::Value::Object(body).to_string().into(),
        );
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if jkt.is_some()
            && config.dpop.nonce
            && let Ok(nonce) = HeaderValue::from_str(&super::lock(&self.dpop.nonce))
        {
            headers.insert(dpop::DPOP_NONCE_HEADER, nonce);
        }
        response
    }
}

/// A refused token request: an [RFC 6749 §5.2] error response.
///
/// [RFC 6749 §5.2]: https://www.rfc-editor.org/rfc/rfc6749#section-5.2
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: Cow<'static, str>,
    header: Option<(header::HeaderName, HeaderValue)>,
}

impl Refusal {
    fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            header: None,
        }
    }

    fn bad_request(error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    /// `401 invalid_client`, with a Basic challenge when the client tried Basic (or nothing).
    fn invalid_client(description: &'static str, challenge: bool) -> Self {
        let refusal = Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description);
        if challenge {
            refusal.with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="mock""#),
            )
        } else {
            refusal
        }
    }

    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.header = Some((name, value));
        self
    }

    fn into_response(self) -> Response<BoxBody> {
        let mut response = error_response(self.status, self.error, &self.description);
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Logs a token request, without its secrets.
fn trace(index: u64, parsed: &Parsed, response: &Response<BoxBody>, fault: &str) {
    let client_id = match &parsed.basic {
        Some(Ok((id, _))) => Some(id.as_str()),
        _ => parsed.param("client_id"),
    };
    tracing::debug!(
        index,
        client_id,
        auth_method = ?parsed.auth_method(),
        status = response.status().as_u16(),
        fault,
        "mock token request"
    );
}

/// `{"error": error, "error_description": description}`.
fn error_body(error: &str, description: &str) -> Bytes {
    serde_json::json!({ "error": error, "error_description": description })
        .to_string()
        .into()
}

fn error_response(status: StatusCode, error: &str, description: &str) -> Response<BoxBody> {
    json_response(status, error_body(error, description))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<BoxBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Empty, Full};
    use serde_json::Value;
    use tokio::time::timeout;

    use super::super::{BodyAborted, test_support::*};
    use super::*;
    use crate::dpop::ProofError;

    fn dpop_request(proof: Option<&str>) -> Request<Full<Bytes>> {
        let mut request = form_basic(&[GRANT]);
        if let Some(proof) = proof {
            request
                .headers_mut()
                .append("dpop", HeaderValue::from_str(proof).expect("ascii"));
        }
        request
    }

    const TOKEN_URL: &str = "http://auth.test/oauth/token";

    #[tokio::test]
    async fn dpop_proof_binds_the_token() {
        let server = MockAuthServer::builder().signing_key(*b"key").build();
        let key = ProofKey::es256();
        let proof = key.proof("POST", TOKEN_URL, None, None);
        let (status, headers, body) =
            json(send(&mut server.service(), dpop_request(Some(&proof))).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        assert!(headers.get("dpop-nonce").is_none());
        let issued = server.last_token().expect("issued");
        assert_eq!(issued.dpop_jkt.as_deref(), Some(key.thumbprint().as_str()));
        assert_eq!(server.last_token_jkt(), Some(key.thumbprint()));
        // The JWT carries cnf.jkt.
        let token = body["access_token"].as_str().expect("token");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&["mock-api"]);
        let claims: Value = jsonwebtoken::decode(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"key"),
            &validation,
        )
        .expect("valid JWT")
        .claims;
        assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
        assert_eq!((server.dpop_proofs(), server.dpop_rejected()), (1, 0));
        let decoded = server.last_dpop_proof().expect("decoded");
        assert_eq!(decoded.header["typ"], "dpop+jwt");
        assert_eq!(decoded.claim("htu"), Some(TOKEN_URL));

        // Without a proof: a bearer token without cnf.
        let (status, _, body) = json(send(&mut server.service(), dpop_request(None)).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(server.last_token_jkt(), None);
        assert_eq!(server.dpop_proofs(), 1);
    }

    #[tokio::test]
    async fn dpop_invalid_proofs_and_replays_are_refused() {
        let server = MockAuthServer::new();
        let mut service = server.service();
        let key = ProofKey::es256();
        for (proof, expected) in [
            (key.proof("GET", TOKEN_URL, None, None), ProofError::Method),
            (
                key.proof("POST", "http://auth.test/other", None, None),
                ProofError::Url,
            ),
            ("garbage".to_owned(), ProofError::Malformed),
        ] {
            let (status, headers, body) =
                json(send(&mut service, dpop_request(Some(&proof))).await).await;
            assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
            assert_eq!(body["error_description"], expected.description());
            assert!(headers.get("dpop-nonce").is_none());
            assert_eq!(server.last_dpop_error(), Some(expected));
        }
        // Two DPoP headers.
        let proof = key.proof("POST", TOKEN_URL, None, None);
        let mut request = dpop_request(Some(&proof));
        request
            .headers_mut()
            .append("dpop", HeaderValue::from_str(&proof).expect("ascii"));
        let (status, _, body) = json(send(&mut service, request).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
        assert_eq!(server.last_dpop_error(), Some(ProofError::Multiple));
        // The same valid proof twice: the second is a replay.
        let (status, _, _) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
        assert_eq!(server.last_dpop_error(), Some(ProofError::Replay));
        assert_eq!(server.issued(), 1);
        assert_eq!((server.dpop_proofs(), server.dpop_rejected()), (6, 5));
        assert_eq!(server.dpop_nonce_challenges(), 0);
    }

    #[tokio::test]
    async fn dpop_required_off_and_misbehaving() {
        let server = MockAuthServer::builder().require_dpop(true).build();
        let mut service = server.service();
        let (status, _, body) = json(send(&mut service, dpop_request(None)).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
        assert_eq!(server.last_dpop_error(), Some(ProofError::Missing));
        assert_eq!(server.issued(), 0);

        // Misbehaving: bound, but labelled Bearer.
        server.set_dpop_bound_as_bearer(true);
        let key = ProofKey::ed25519();
        let proof = key.proof("POST", TOKEN_URL, None, None);
        let (status, _, body) = json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(server.last_token_jkt(), Some(key.thumbprint()));

        // DPoP off: the header is ignored, even a garbage one, and the token is a bearer one.
        server.set_dpop(false);
        let (status, _, body) = json(send(&mut service, dpop_request(Some("garbage"))).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(server.last_token_jkt(), None);
        assert_eq!(server.dpop_proofs(), 1);
    }

    #[tokio::test]
    async fn dpop_nonce_challenge_and_rotation() {
        let server = MockAuthServer::builder().dpop_nonce(true).build();
        let mut service = server.service();
        let key = ProofKey::rs256();
        let nonce = server.dpop_nonce().expect("nonce mode");

        let proof = key.proof("POST", TOKEN_URL, None, None);
        let (status, headers, body) =
            json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "use_dpop_nonce");
        assert_eq!(headers["dpop-nonce"], nonce.as_str());

        let proof = key.proof("POST", TOKEN_URL, None, Some(&nonce));
        let (status, headers, body) =
            json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        assert_eq!(headers["dpop-nonce"], nonce.as_str());

        // After a rotation the old nonce is stale.
        let fresh = server.rotate_dpop_nonce();
        assert_ne!(fresh, nonce);
        assert_eq!(server.dpop_nonce().as_deref(), Some(fresh.as_str()));
        let proof = key.proof("POST", TOKEN_URL, None, Some(&nonce));
        let (status, headers, body) =
            json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "use_dpop_nonce");
        assert_eq!(headers["dpop-nonce"], fresh.as_str());
        assert_eq!(server.last_dpop_error(), Some(ProofError::StaleNonce));
        // A bad proof is not a nonce challenge.
        let proof = key.proof("GET", TOKEN_URL, None, Some(&fresh));
        let (status, headers, body) =
            json(send(&mut service, dpop_request(Some(&proof))).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dpop_proof");
        assert!(headers.get("dpop-nonce").is_none());
        assert_eq!(server.dpop_nonce_challenges(), 2);
        assert_eq!(server.issued(), 1);

        server.set_dpop_nonce(false);
        assert_eq!(server.dpop_nonce(), None);
    }

    #[tokio::test]
    async fn dpop_over_a_socket_uses_the_listening_url() {
        let server = MockAuthServer::start().await.expect("listening");
        let key = ProofKey::es256();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        for (htu, ok) in [
            (server.token_url(), true),
            (format!("http://auth.test{TOKEN_PATH}"), false),
        ] {
            let proof = key.proof("POST", &htu, None, None);
            let mut request = dpop_request(Some(&proof));
            *request.uri_mut() = server.token_url().parse().expect("uri");
            let response = client.request(request).await.expect("response");
            assert_eq!(response.status() == StatusCode::OK, ok, "{htu}");
        }
        assert_eq!(server.last_dpop_error(), Some(ProofError::Url));
    }

    #[tokio::test]
    async fn form_with_basic_and_awkward_secret() {
        let server = MockAuthServer::builder().signing_key(*b"key").build();
        let response = send(
            &mut server.service(),
            form_basic(&[GRANT, ("scope", "read write")]),
        )
        .await;
        let (status, headers, body) = json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 60);
        assert_eq!(body["scope"], "read write");

        let token = body["access_token"].as_str().expect("token");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&["mock-api"]);
        validation.set_issuer(&["mock-auth-server"]);
        let claims: Value = jsonwebtoken::decode(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"key"),
            &validation,
        )
        .expect("valid JWT")
        .claims;
        assert_eq!(claims["sub"], DEFAULT_CLIENT_ID);
        assert_eq!(claims["client_id"], DEFAULT_CLIENT_ID);
        assert_eq!(claims["scope"], "read write");
        assert_eq!(
            claims["exp"].as_f64().expect("exp") - claims["iat"].as_f64().expect("iat"),
            60.0
        );

        let issued = server.last_token().expect("issued");
        assert_eq!(issued.access_token, token);
        assert_eq!(issued.jti, claims["jti"]);
        assert_eq!(
            issued.expires_at - issued.issued_at,
            Duration::from_secs(60)
        );
        assert!(!format!("{issued:?}").contains(token));

        let recorded = server.last_request().expect("recorded");
        assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretBasic);
        assert_eq!(recorded.param("grant_type"), Some("client_credentials"));
        assert_eq!(
            recorded.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!((server.token_requests(), server.issued()), (1, 1));
    }

    #[tokio::test]
    async fn basic_accepts_plus_for_space_and_refuses_unencoded_credentials() {
        let server = MockAuthServer::new();
        // `+` for space, as form encoding does.
        let encoded = serde_urlencoded::to_string([("x", DEFAULT_CLIENT_SECRET)]).expect("form");
        let secret = encoded.trim_start_matches("x=");
        assert!(secret.contains('+'));
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{DEFAULT_CLIENT_ID}:{secret}"));
        let request = token_request(
            "application/x-www-form-urlencoded",
            Some(format!("Basic {credentials}")),
            form(&[GRANT]),
        );
        let (status, _, body) = json(send(&mut server.service(), request).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Not encoded at all.
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}"));
        let request = token_request(
            "application/x-www-form-urlencoded",
            Some(format!("Basic {credentials}")),
            form(&[GRANT]),
        );
        let (status, headers, body) = json(send(&mut server.service(), request).await).await;
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Basic realm="mock""#);
    }

    #[tokio::test]
    async fn form_with_client_secret_post() {
        let server = MockAuthServer::new();
        let (status, _, body) = json(send(&mut server.service(), form_post(&[GRANT])).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("scope").is_none());
        let recorded = server.last_request().expect("recorded");
        assert_eq!(recorded.auth_method, ClientAuthMethod::ClientSecretPost);
        let debug = format!("{recorded:?}");
        assert!(!debug.contains(DEFAULT_CLIENT_SECRET), "{debug}");
        assert!(!debug.contains("s3cr"), "{debug}");
    }

    #[tokio::test]
    async fn json_body() {
        let server = MockAuthServer::new();
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "scope": "read",
            "audience": "https://api.example",
        });
        let request = token_request("application/json; charset=utf-8", None, body.to_string());
        let (status, _, body) = json(send(&mut server.service(), request).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["scope"], "read");
        let issued = server.last_token().expect("issued");
        assert_eq!(issued.audience, "https://api.example");
        let recorded = server.last_request().expect("recorded");
        assert_eq!(recorded.content_type.as_deref(), Some("application/json"));
        assert_eq!(recorded.param("scope"), Some("read"));
    }

    #[tokio::test]
    async fn audience_falls_back_to_resource_then_default() {
        let server = MockAuthServer::builder().audience("default-aud").build();
        let mut service = server.service();
        send(
            &mut service,
            form_basic(&[GRANT, ("resource", "https://r.example")]),
        )
        .await;
        assert_eq!(
            server.last_token().expect("token").audience,
            "https://r.example"
        );
        send(
            &mut service,
            form_basic(&[
                GRANT,
                ("resource", "https://r.example"),
                ("audience", "aud"),
            ]),
        )
        .await;
        assert_eq!(server.last_token().expect("token").audience, "aud");
        send(&mut service, form_basic(&[GRANT])).await;
        assert_eq!(server.last_token().expect("token").audience, "default-aud");
    }

    #[tokio::test]
    async fn wrong_secret() {
        let server = MockAuthServer::new();
        let request = token_request(
            "application/x-www-form-urlencoded",
            Some(basic(DEFAULT_CLIENT_ID, "nope")),
            form(&[GRANT]),
        );
        let (status, headers, body) = json(send(&mut server.service(), request).await).await;
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Basic realm="mock""#);

        let request = token_request(
            "application/x-www-form-urlencoded",
            None,
            form(&[
                GRANT,
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", "nope"),
            ]),
        );
        let (status, headers, body) = json(send(&mut server.service(), request).await).await;
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(headers.get(header::WWW_AUTHENTICATE).is_none());

        let request = token_request(
            "application/x-www-form-urlencoded",
            Some(basic("someone-else", DEFAULT_CLIENT_SECRET)),
            form(&[GRANT]),
        );
        let (status, _, body) = json(send(&mut server.service(), request).await).await;
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!((server.token_requests(), server.issued()), (3, 0));
    }

    #[tokio::test]
    async fn missing_or_double_client_authentication() {
        let server = MockAuthServer::new();
        let request = token_request("application/x-www-form-urlencoded", None, form(&[GRANT]));
        let (status, _, body) = json(send(&mut server.service(), request).await).await;
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(
            server.last_request().expect("recorded").auth_method,
            ClientAuthMethod::None
        );

        let request = token_request(
            "application/x-www-form-urlencoded",
            Some(basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
            form(&[
                GRANT,
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
            ]),
        );
        let (status, _, body) = json(send(&mut server.service(), request).await).await;
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(
            server.last_request().expect("recorded").auth_method,
            ClientAuthMethod::Multiple
        );
    }

    #[tokio::test]
    async fn bad_requests() {
        let server = MockAuthServer::new();
        let mut service = server.service();
        let (status, _, body) =
            json(send(&mut service, form_basic(&[("grant_type", "password")])).await).await;
        assert_oauth_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        );

        let (status, _, body) = json(send(&mut service, form_basic(&[])).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

        let (status, _, body) = json(
            send(
                &mut service,
                form_basic(&[GRANT, ("scope", "a"), ("scope", "b")]),
            )
            .await,
        )
        .await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

        let request = token_request(
            "text/plain",
            Some(basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
            "grant_type=client_credentials",
        );
        let (status, _, body) = json(send(&mut service, request).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

        let request = Request::get(format!("http://auth.test{TOKEN_PATH}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, headers, _) = read(send(&mut service, request).await).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "POST");

        let request = Request::post("http://auth.test/elsewhere")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, _, _) = read(send(&mut service, request).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The 404 did not reach the token endpoint.
        assert_eq!(server.token_requests(), 5);
    }

    #[tokio::test]
    async fn scopes_per_client() {
        let server = MockAuthServer::builder()
            .client_with_scopes("limited", "pw", ["read", "write"])
            .build();
        let mut service = server.service();
        let request = |scope: Option<&str>| {
            let mut pairs = vec![GRANT];
            if let Some(scope) = scope {
                pairs.push(("scope", scope));
            }
            token_request(
                "application/x-www-form-urlencoded",
                Some(basic("limited", "pw")),
                form(&pairs),
            )
        };
        let (status, _, body) = json(send(&mut service, request(Some("read admin"))).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");

        let (status, _, body) = json(send(&mut service, request(Some("write"))).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["scope"], "write");

        let (status, _, body) = json(send(&mut service, request(None)).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["scope"], "read write");

        // The default client is still there, with any scope.
        let (status, _, body) =
            json(send(&mut service, form_basic(&[GRANT, ("scope", "admin")])).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    #[tokio::test]
    async fn lifetime_and_expires_in_formats() {
        let server = MockAuthServer::new();
        let mut service = server.service();
        server.set_lifetime(Duration::from_secs(3599));
        let (_, _, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(body["expires_in"], 3599);
        let issued = server.last_token().expect("token");
        assert_eq!(
            issued.expires_at - issued.issued_at,
            Duration::from_secs(3599)
        );

        server.set_expires_in(ExpiresIn::String);
        let (_, _, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(body["expires_in"], "3599");

        server.set_expires_in(ExpiresIn::Omitted);
        server.set_token_type("bearer");
        let (_, _, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
        assert!(body.get("expires_in").is_none());
        assert_eq!(body["token_type"], "bearer");

        let server = MockAuthServer::builder()
            .expires_in(ExpiresIn::String)
            .lifetime(Duration::from_secs(5))
            .build();
        let (_, _, body) = json(send(&mut server.service(), form_basic(&[GRANT])).await).await;
        assert_eq!(body["expires_in"], "5");
    }

    #[tokio::test]
    async fn fault_responses() {
        let server = MockAuthServer::new();
        let mut service = server.service();

        server.fail_next(2, Fault::status(StatusCode::SERVICE_UNAVAILABLE));
        server.fail_next(
            1,
            Fault::oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "nope")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
        );
        server.fail_next(
            1,
            Fault::html(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>"),
        );
        server.fail_next(1, Fault::raw(StatusCode::OK, "not json"));
        server.fail_next(1, Fault::json(StatusCode::OK, r#"{"token_type":"Bearer"}"#));

        for _ in 0..2 {
            let (status, _, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(bytes.is_empty());
        }
        let (status, headers, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_client");
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let (status, headers, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(bytes, "<html>bad gateway</html>");
        let (status, headers, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(header::CONTENT_TYPE).is_none());
        assert_eq!(bytes, "not json");
        let (_, headers, bytes) = read(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(bytes, r#"{"token_type":"Bearer"}"#);

        // Back to normal.
        let (status, _, _) = read(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((server.token_requests(), server.issued()), (7, 1));

        // A success with extra headers and another status.
        server.fail_next(
            1,
            Fault::delay(Duration::ZERO)
                .with_status(StatusCode::CREATED)
                .with_header(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5")),
        );
        let (status, headers, body) = json(send(&mut service, form_basic(&[GRANT])).await).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=5");
        assert!(body["access_token"].is_string());
    }

    #[tokio::test]
    async fn fault_plan_by_index() {
        let server = MockAuthServer::new();
        let mut service = server.service();
        server.set_fault_plan(|index| {
            (index % 2 == 1).then(|| Fault::status(StatusCode::BAD_GATEWAY))
        });
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(send(&mut service, form_basic(&[GRANT])).await.status());
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::BAD_GATEWAY,
                StatusCode::OK,
                StatusCode::BAD_GATEWAY
            ]
        );
        // Queued faults go before the plan.
        server.fail_next(1, Fault::status(StatusCode::IM_A_TEAPOT));
        assert_eq!(
            send(&mut service, form_basic(&[GRANT])).await.status(),
            StatusCode::IM_A_TEAPOT
        );
        server.clear_faults();
        assert_eq!(
            send(&mut service, form_basic(&[GRANT])).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            send(&mut service, form_basic(&[GRANT])).await.status(),
            StatusCode::OK
        );
        assert_eq!(server.last_request().expect("recorded").index, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_follows_the_paused_clock() {
        let server = MockAuthServer::new();
        let mut service = server.service();
        server.fail_next(1, Fault::delay(Duration::from_secs(5)));
        server.fail_next(
            1,
            Fault::status(StatusCode::SERVICE_UNAVAILABLE).with_delay(Duration::from_secs(2)),
        );

        let start = Instant::now();
        let mut call = service.call(form_basic(&[GRANT]));
        assert!(timeout(Duration::from_secs(4), &mut call).await.is_err());
        let response = call.await.expect("response");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(response.status(), StatusCode::OK);
        // The token's lifetime starts when it is issued, after the delay.
        let issued = server.last_token().expect("token");
        assert_eq!(issued.issued_at, start + Duration::from_secs(5));

        let start = Instant::now();
        let response = send(&mut service, form_basic(&[GRANT])).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test(start_paused = true)]
    async fn hang_never_answers() {
        let server = MockAuthServer::new();
        server.fail_next(1, Fault::hang());
        let call = server.service().call(form_basic(&[GRANT]));
        assert!(timeout(Duration::from_secs(3600), call).await.is_err());
        assert_eq!((server.token_requests(), server.issued()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_and_aborted_bodies() {
        let server = MockAuthServer::new();
        let mut service = server.service();
        server.fail_next(1, Fault::stall_body(r#"{"access_token":"#));
        server.fail_next(
            1,
            Fault::abort_body(r#"{"access"#).with_status(StatusCode::BAD_GATEWAY),
        );

        let response = send(&mut service, form_basic(&[GRANT])).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let mut body = response.into_body();
        let frame = body.frame().await.expect("frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), r#"{"access_token":"#);
        assert!(
            timeout(Duration::from_secs(60), body.frame())
                .await
                .is_err()
        );

        let response = send(&mut service, form_basic(&[GRANT])).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let mut body = response.into_body();
        let frame = body.frame().await.expect("frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), r#"{"access"#);
        let error = body.frame().await.expect("frame").expect_err("error");
        assert!(error.is::<BodyAborted>(), "{error}");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn request_body_errors_fail_the_call() {
        let server = MockAuthServer::new();
        let body = Empty::<Bytes>::new()
            .map_err(|never: Infallible| -> BoxError { match never {} })
            .with_trailers(async { Some(Err::<HeaderMap, BoxError>("boom".into())) });
        let request = Request::post(format!("http://auth.test{TOKEN_PATH}"))
            .body(body)
            .expect("request");
        let error = server
            .service()
            .call(request)
            .await
            .expect_err("body error");
        assert_eq!(error.to_string(), "boom");
    }
}
