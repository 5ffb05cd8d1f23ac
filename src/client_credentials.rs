//! Configuration: [`ClientCredentials::builder`] collects what the token request needs and how
//! the refresher should behave, [`build`](ClientCredentialsBuilder::build) checks it, and
//! [`start`](ClientCredentials::start) turns it into a running [`TokenHandle`].
//! [`ClientCredentials::from_issuer`] starts from the authorization server's issuer identifier
//! instead, and [`discover`](ClientCredentialsBuilder::discover) finds the token endpoint.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};
use tower_service::Service;

use crate::{
    dpop::{DpopKey, Prover},
    endpoint::{
        self, AssertionAudience, AssertionOptions, AuthMethod, ClientAssertion, ClientKey,
        Credential, DiscoveryError, HttpClient, Parameters, PreparedRequest, Proxies,
        RequestFormat, TlsOptions,
    },
    error::{BoxError, ConfigError, TokenError},
    refresh::{RefreshPolicy, Refresher, Shared, TokenHandle},
    source::{Fetcher, TokenSource},
    template::EndpointTemplate,
    token::{ExpirySource, MAX_LIFETIME},
};

/// The refresh options, written once for both builders: each holds `policy` and `max_wait`.
macro_rules! refresh_options {
    () => {
        /// Refresh at most this long before expiry. Default: 60 s; any length (the margin never
        /// exceeds what [`refresh_ratio`](Self::refresh_ratio) leaves).
        ///
        /// The refresh happens at whichever comes later of this margin and
        /// [`refresh_ratio`](Self::refresh_ratio) of the lifetime, made up to 10 % earlier at random
        /// so that many clients do not refresh in step: a 5-second token is refreshed at about
        /// 4 s, a 24-hour token about a minute before it expires.
        pub fn refresh_before(mut self, margin: Duration) -> Self {
            self.policy.refresh_before = margin;
            self
        }

        /// Refresh once this fraction of the lifetime has passed, at the latest. Default: `0.8`;
        /// at least `0.1` (below it, the jitter of the refresh margin could make a token due the
        /// moment it arrives), at most `1.0`.
        pub fn refresh_ratio(mut self, ratio: f64) -> Self {
            self.policy.refresh_ratio = ratio;
            self
        }

        /// Backoff after a transient failure: the first delay, doubling up to `max`, with jitter,
        /// and never past the current token's expiry. `Retry-After` is honoured (up to 10
        /// minutes). Default: 500 ms doubling to 30 s. The first delay is at least 1 ms and at most
        /// `max`; `max` is at most 10 minutes, the longest the refresher ever waits.
        pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
            self.policy.backoff_base = first;
            self.policy.backoff_max = max;
            self
        }

        /// The delay before trying again after a permanent failure (`invalid_client`, a malformed
        /// response, …). Default: 60 s; at least 1 s, at most 10 minutes (the longest the
        /// refresher ever waits).
        pub fn permanent_retry(mut self, delay: Duration) -> Self {
            self.policy.permanent_retry = delay;
            self
        }

        /// How the handle answers an API that refuses the fresh tokens it brings: the first delay
        /// and the cap of the refusal backoff. Default: 5 s doubling to 5 minutes; `first` from
        /// 1 ms to `max`, `max` at most a day.
        ///
        /// A token that an API accepted before and now refuses has expired or been revoked: it is
        /// replaced at once, always. A fresh token refused before any request succeeded with it is
        /// replaced at once the first time; each further one in a row waits `first`, then twice
        /// that, up to `max`, while the 401s go back to the callers. The first accepted request
        /// ends the backoff. See [`TokenStatus::refused_in_a_row`](crate::TokenStatus).
        pub fn refused_token_backoff(mut self, first: Duration, max: Duration) -> Self {
            self.policy.refusal_backoff = first;
            self.policy.refusal_backoff_max = max;
            self
        }

        /// How long a request waits for a token when none is valid. Default: 30 s; any length:
        /// `Duration::MAX` waits as long as it takes.
        pub fn max_wait(mut self, wait: Duration) -> Self {
            self.max_wait = wait;
            self
        }

        /// Starts lazily: no token is requested until a request (or
        /// [`TokenHandle::token`]) needs one; the requests that find no token then share the
        /// one fetch, and from then on the token is refreshed as usual. For a CLI or a rarely
        /// used client that should not call the authorization server at start-up.
        /// [`start`](ClientCredentials::start) then returns at once, so bad credentials show
        /// on the first request instead. For a [`TokenSet`](crate::TokenSet), `start` does not
        /// fetch the routed keys' tokens either. Default: `false`.
        pub fn lazy(mut self, lazy: bool) -> Self {
            self.lazy = lazy;
            self
        }
    };
}

/// A checked configuration of where tokens come from and how they are kept fresh, ready to
/// [`start`](Self::start): the built-in client-credentials request, or any
/// [`TokenSource`] ([`from_source`](Self::from_source)).
pub struct ClientCredentials {
    source: Fetcher,
    /// With DPoP (built-in source only): makes the proofs of API requests.
    dpop: Option<Arc<Prover>>,
    policy: RefreshPolicy,
    max_wait: Duration,
    lazy: bool,
    #[cfg(feature = "redis")]
    shared_cache: Option<crate::shared_cache::SharedSource>,
}

impl ClientCredentials {
    /// Starts configuring a client of the token endpoint at `token_url`.
    ///
    /// `token_url` must be `https`, except on a loopback host (`127.0.0.1`, `[::1]`,
    /// `localhost`), unless [`allow_insecure_http`](ClientCredentialsBuilder::allow_insecure_http)
    /// is set.
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new(
            token_url.into(),
            client_id.into(),
            Credential::Secret(SecretString::from(client_secret.into())),
            None,
        )
    }

    /// Starts configuring a client that authenticates with a private key (`private_key_jwt`,
    /// RFC 7523): every token request carries a freshly signed assertion instead of a secret.
    ///
    /// The same URL rules as [`builder`](Self::builder) apply. The assertion's `aud` is
    /// `token_url` unless [`assertion_audience`](ClientCredentialsBuilder::assertion_audience)
    /// says otherwise.
    ///
    /// ```no_run
    /// use tower_client_credentials::{ClientCredentials, ClientKey, SigningAlgorithm};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let pem = std::fs::read_to_string("client-key.pem")?;
    /// let key = ClientKey::from_pem(SigningAlgorithm::ES256, pem)?.with_key_id("key-2025-01");
    /// let tokens = ClientCredentials::builder_with_key(
    ///     "https://auth.example.com/oauth/token",
    ///     "my-client-id",
    ///     key,
    /// )
    /// .scopes(["orders:read"])
    /// .build()?
    /// .start()
    /// .await?;
    /// # let _ = tokens;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder_with_key(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        key: ClientKey,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new(
            token_url.into(),
            client_id.into(),
            Credential::Key(key),
            None,
        )
    }

    /// Starts configuring a client that authenticates with a client assertion made by someone
    /// else (workload identity federation): every token request carries the assertion's
    /// current value as `client_assertion`, with the jwt-bearer assertion type, and
    /// `client_id`, but no secret. The method is [`AuthMethod::PrivateKeyJwt`] (its wire form);
    /// the body must be a form.
    ///
    /// The same URL rules as [`builder`](Self::builder) apply.
    ///
    /// ```no_run
    /// use tower_client_credentials::{ClientAssertion, ClientCredentials};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// // Entra ID workload identity on Kubernetes: the kubelet rotates this file.
    /// let tokens = ClientCredentials::builder_with_assertion(
    ///     "https://login.microsoftonline.com/my-tenant/oauth2/v2.0/token",
    ///     "my-client-id",
    ///     ClientAssertion::from_file("/var/run/secrets/azure/tokens/azure-identity-token"),
    /// )
    /// .scopes(["api://orders/.default"])
    /// .build()?
    /// .start()
    /// .await?;
    /// # let _ = tokens;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder_with_assertion(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        assertion: ClientAssertion,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new(
            token_url.into(),
            client_id.into(),
            Credential::Assertion(assertion),
            None,
        )
    }

    /// Starts configuring a client of the authorization server identified by `issuer`, whose
    /// token endpoint [`discover`](ClientCredentialsBuilder::discover) finds in the server's
    /// metadata (RFC 8414, OpenID Connect Discovery). Set the options that discovery uses (HTTP
    /// client, timeout, size limit, `allow_insecure_http`, authentication method) before
    /// calling it.
    ///
    /// `issuer` must be exactly the issuer identifier the server publishes (a trailing slash
    /// counts). The https rule of [`builder`](Self::builder) applies to it and to the token
    /// endpoint found.
    ///
    /// ```no_run
    /// use tower_client_credentials::ClientCredentials;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let tokens = ClientCredentials::from_issuer(
    ///     "https://auth.example.com/realms/shop",
    ///     "my-client-id",
    ///     "my-client-secret",
    /// )
    /// .scopes(["orders:read"])
    /// .discover() // the token endpoint and a supported authentication method
    /// .await?
    /// .build()?
    /// .start()
    /// .await?;
    /// # let _ = tokens;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_issuer(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new(
            String::new(),
            client_id.into(),
            Credential::Secret(SecretString::from(client_secret.into())),
            Some(issuer.into()),
        )
    }

    /// Like [`from_issuer`](Self::from_issuer), for a client that authenticates with a private
    /// key (`private_key_jwt`).
    pub fn from_issuer_with_key(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        key: ClientKey,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new(
            String::new(),
            client_id.into(),
            Credential::Key(key),
            Some(issuer.into()),
        )
    }

    /// Starts configuring a client that authenticates with its TLS client certificate
    /// (mutual TLS, RFC 8705): [`AuthMethod::TlsClientAuth`] unless
    /// [`auth_method`](ClientCredentialsBuilder::auth_method) says
    /// [`AuthMethod::SelfSignedTlsClientAuth`]. Token requests carry `client_id` and no
    /// secret; the certificate proves the client's identity in the TLS handshake.
    ///
    /// Give the built-in transport the certificate with
    /// [`client_certificate`](ClientCredentialsBuilder::client_certificate) (the token
    /// endpoint must then be `https`), or pass your own
    /// [`http_client`](ClientCredentialsBuilder::http_client) that presents it.
    ///
    /// The server may bind the tokens to the certificate (RFC 8705 §3, `cnf.x5t#S256`): an API
    /// that checks the binding accepts them only over a connection that presents the same
    /// certificate, so the client under the layer needs it too. With hyper-util and rustls:
    ///
    /// ```no_run
    /// use tower_client_credentials::{BearerAuthLayer, ClientCredentials};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let chain = std::fs::read_to_string("client.crt")?;
    /// let key = std::fs::read_to_string("client.key")?;
    /// let tokens = ClientCredentials::builder_with_tls_auth(
    ///     "https://mtls.auth.example.com/oauth/token",
    ///     "my-client-id",
    /// )
    /// .client_certificate(chain.clone(), key.clone())
    /// .build()?
    /// .start()
    /// .await?;
    ///
    /// // The API client presents the same certificate.
    /// use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    /// let certs = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.add_parsable_certificates(CertificateDer::pem_file_iter("api-ca.pem")?.flatten());
    /// let tls = rustls::ClientConfig::builder()
    ///     .with_root_certificates(roots)
    ///     .with_client_auth_cert(certs, key)?;
    /// let https = hyper_rustls::HttpsConnectorBuilder::new()
    ///     .with_tls_config(tls)
    ///     .https_only()
    ///     .enable_http1()
    ///     .build();
    /// let client = hyper_util::client::legacy::Client::builder(
    ///     hyper_util::rt::TokioExecutor::new(),
    /// )
    /// .build::<_, http_body_util::Full<bytes::Bytes>>(https);
    /// let api = tower::ServiceBuilder::new()
    ///     .layer(BearerAuthLayer::new(tokens))
    ///     .service(client);
    /// # let _ = api; Ok(()) }
    /// ```
    ///
    /// With reqwest, the same PEM goes to `reqwest::Identity::from_pem` (the certificate and
    /// the key concatenated) and `ClientBuilder::identity`.
    pub fn builder_with_tls_auth(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new(token_url.into(), client_id.into(), Credential::Tls, None)
    }

    /// Like [`from_issuer`](Self::from_issuer), for a client that authenticates with its TLS
    /// client certificate ([`builder_with_tls_auth`](Self::builder_with_tls_auth)). When the
    /// metadata has `mtls_endpoint_aliases`, token requests go to its `token_endpoint` (RFC
    /// 8705 §5).
    pub fn from_issuer_with_tls_auth(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new(
            String::new(),
            client_id.into(),
            Credential::Tls,
            Some(issuer.into()),
        )
    }

    /// Starts configuring a handle whose tokens come from `source` instead of the built-in
    /// client-credentials request: the same refresh schedule, single flight, backoff and 401
    /// handling, for tokens obtained any other way. A closure makes a source with
    /// [`source_fn`](crate::source_fn), which is also how to unit-test code that uses the
    /// layer (see the [`source` module](crate::source)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_client_credentials::{ClientCredentials, IssuedToken, TokenError, source_fn};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let tokens = ClientCredentials::from_source(source_fn(|| async {
    ///     let token = std::env::var("API_TOKEN").map_err(TokenError::permanent)?;
    ///     Ok(IssuedToken::bearer(token, Duration::from_secs(3600)))
    /// }))
    /// .refresh_before(Duration::from_secs(300))
    /// .build()?
    /// .start()
    /// .await?;
    /// # let _ = tokens; Ok(()) }
    /// ```
    pub fn from_source(source: impl TokenSource) -> TokenSourceBuilder {
        TokenSourceBuilder::new(OneOrPerKey::One(Box::new(move |timeout| {
            Fetcher::of(source, timeout)
        })))
    }

    /// Starts configuring a [`TokenSet`](crate::TokenSet) whose keys each get a source of
    /// their own, `source_for(key)`, made when the key is first needed: one token per
    /// [`TokenKey`](crate::TokenKey) (its scopes, audience and resources are for your source
    /// to use), all on the builder's refresh options. Finish with
    /// [`build_set`](TokenSourceBuilder::build_set). See the
    /// [`token_set` module](crate::token_set).
    pub fn from_source_per_key<F, S>(source_for: F) -> TokenSourceBuilder
    where
        F: Fn(&crate::TokenKey) -> S + Send + Sync + 'static,
        S: TokenSource,
    {
        TokenSourceBuilder::new(OneOrPerKey::PerKey(Box::new(move |timeout| {
            Arc::new(move |key: &crate::TokenKey| Fetcher::of(source_for(key), timeout))
        })))
    }

    /// Spawns the refresher on the current tokio runtime and waits for the first token.
    ///
    /// Bad credentials, a wrong scope or an unreachable endpoint fail here rather than on the
    /// first request. With [`lazy`](ClientCredentialsBuilder::lazy), returns at once: nothing
    /// is fetched before a request needs a token.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn start(self) -> Result<TokenHandle, TokenError> {
        if self.lazy {
            return Ok(self.spawn());
        }
        let (handle, refresher) = self.into_parts();
        // Subscribed before the refresher runs: the first request's own outcome counts, not
        // that of a retry after it.
        let outcomes = handle.shared().outcomes();
        tokio::spawn(refresher.into_future());
        Shared::first_outcome(outcomes).await?;
        Ok(handle)
    }

    /// Spawns the refresher on the current tokio runtime without waiting for a token. The first
    /// requests wait for it.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn spawn(self) -> TokenHandle {
        let (handle, refresher) = self.into_parts();
        tokio::spawn(refresher.into_future());
        handle
    }

    /// The handle and the refresher, for running the refresher on an executor of your choice,
    /// like [`tower::buffer::Buffer::pair`](https://docs.rs/tower/latest/tower/buffer/struct.Buffer.html#method.pair). Requests wait until the refresher runs.
    pub fn into_parts(self) -> (TokenHandle, Refresher) {
        let shared = Shared::new(self.max_wait, &self.policy, self.dpop);
        let shared = Arc::new(if self.lazy { shared.lazy() } else { shared });
        let refresher = Refresher::new(Arc::clone(&shared), self.source, self.policy);
        #[cfg(feature = "redis")]
        let refresher = refresher.with_shared_cache(self.shared_cache);
        (TokenHandle::new(shared), refresher)
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials").finish_non_exhaustive()
    }
}

/// Builds a [`ClientCredentials`]. Created by [`ClientCredentials::builder`],
/// [`builder_with_key`](ClientCredentials::builder_with_key),
/// [`builder_with_assertion`](ClientCredentials::builder_with_assertion),
/// [`from_issuer`](ClientCredentials::from_issuer) or
/// [`from_issuer_with_key`](ClientCredentials::from_issuer_with_key).
pub struct ClientCredentialsBuilder {
    /// Empty until discovered when the builder starts from an issuer.
    token_url: String,
    client_id: String,
    credential: Credential,
    issuer: Option<String>,
    assertion_audience: AssertionAudience,
    assertion_lifetime: Duration,
    params: Parameters,
    auth: Option<AuthMethod>,
    format: RequestFormat,
    client: Option<HttpClient>,
    proxy_from_env: bool,
    proxies: Option<Proxies>,
    /// PEM: the chain and the key.
    client_certificate: Option<(String, SecretString)>,
    root_certificates: Vec<String>,
    allow_insecure_http: bool,
    timeout: Duration,
    max_response_size: usize,
    expiry: ExpirySource,
    default_lifetime: Duration,
    max_wait: Duration,
    lazy: bool,
    policy: RefreshPolicy,
    dpop: Option<DpopKey>,
    #[cfg(feature = "redis")]
    shared_cache: Option<crate::shared_cache::AnyCache>,
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("scopes", &self.params.scopes)
            .field("auth", &self.auth)
            .field("format", &self.format)
            .field("proxies", &self.proxies)
            .field("dpop", &self.dpop)
            .field("client_certificate", &self.client_certificate.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsBuilder {
    fn new(
        token_url: String,
        client_id: String,
        credential: Credential,
        issuer: Option<String>,
    ) -> Self {
        Self {
            token_url,
            client_id,
            credential,
            issuer,
            assertion_audience: AssertionAudience::default(),
            assertion_lifetime: endpoint::DEFAULT_ASSERTION_LIFETIME,
            params: Parameters::default(),
            auth: None,
            format: RequestFormat::default(),
            client: None,
            proxy_from_env: true,
            proxies: None,
            client_certificate: None,
            root_certificates: Vec::new(),
            allow_insecure_http: false,
            timeout: DEFAULT_TIMEOUT,
            max_response_size: 64 * 1024,
            expiry: ExpirySource::default(),
            default_lifetime: Duration::from_secs(300),
            max_wait: DEFAULT_MAX_WAIT,
            lazy: false,
            policy: RefreshPolicy::default(),
            dpop: None,
            #[cfg(feature = "redis")]
            shared_cache: None,
        }
    }

    /// The scopes to ask for, joined with spaces. `*` passes through as written. Default: none
    /// (the server's default).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.params.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The `audience` parameter (Auth0, Okta and others). Default: none.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.params.audience = Some(audience.into());
        self
    }

    /// Adds a `resource` parameter (RFC 8707). May be called more than once. Default: none.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.params.resources.push(resource.into());
        self
    }

    /// Adds any other parameter to the token request. The names this crate sets itself
    /// (`grant_type`, `client_id`, `scope`, …) are refused by [`build`](Self::build).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.extra.push((name.into(), value.into()));
        self
    }

    /// How the client authenticates. Default: [`AuthMethod::PrivateKeyJwt`] with a key; with a
    /// secret, [`AuthMethod::ClientSecretBasic`] for a form body and
    /// [`AuthMethod::ClientSecretPost`] for a JSON body, or after
    /// [`discover`](Self::discover), the first of `client_secret_basic`, `client_secret_post`
    /// and `client_secret_jwt` that the server supports. A method chosen here is used as is,
    /// whatever the server's metadata lists.
    pub fn auth_method(mut self, method: AuthMethod) -> Self {
        self.auth = Some(method);
        self
    }

    /// The `aud` claim of client assertions (`private_key_jwt`, `client_secret_jwt`). Default:
    /// [`AssertionAudience::TokenEndpoint`]. Not used by an assertion from outside
    /// ([`builder_with_assertion`](ClientCredentials::builder_with_assertion)), which comes
    /// with its own.
    pub fn assertion_audience(mut self, audience: AssertionAudience) -> Self {
        self.assertion_audience = audience;
        self
    }

    /// How long a client assertion is valid (`exp` - `iat`), rounded up to whole seconds. Each
    /// token request signs a new one. Default: 60 s; at least 1 s, at most 1 day. Not used by
    /// an assertion from outside.
    pub fn assertion_lifetime(mut self, lifetime: Duration) -> Self {
        self.assertion_lifetime = lifetime;
        self
    }

    /// The body encoding. Default: [`RequestFormat::Form`] (RFC 6749).
    pub fn request_format(mut self, format: RequestFormat) -> Self {
        self.format = format;
        self
    }

    /// Sends token requests through `client` instead of the built-in hyper-util client: your
    /// own client with a proxy, mTLS or custom roots, or a test double. The proxy options
    /// ([`proxy_from_env`](Self::proxy_from_env), [`proxies`](Self::proxies)) then do not
    /// apply: the client's own settings do. With mutual TLS ([`AuthMethod::TlsClientAuth`]),
    /// your client presents the certificate, and
    /// [`client_certificate`](Self::client_certificate) and
    /// [`add_root_certificates`](Self::add_root_certificates) are refused by
    /// [`build`](Self::build).
    pub fn http_client<S, B>(mut self, client: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.client = Some(endpoint::boxed(client));
        self
    }

    /// Sends token requests through `client` (feature `reqwest`): a shortcut for
    /// `http_client(ReqwestTransport::new(client))` (see [`http_client`](Self::http_client)).
    /// The client's proxies, TLS roots, client certificate and default headers then apply to
    /// token requests too. Build it with `redirect(reqwest::redirect::Policy::none())`: see
    /// [`ReqwestTransport`](crate::reqwest::ReqwestTransport) for why.
    #[cfg(feature = "reqwest")]
    pub fn reqwest_client(self, client: reqwest::Client) -> Self {
        self.http_client(endpoint::ReqwestTransport::new(client))
    }

    /// Whether the built-in transport takes its proxies from the environment (`HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, or their lower-case forms; see
    /// [`Proxies::from_env`]), read once by [`build`](Self::build) (and by
    /// [`discover`](Self::discover) for its own requests). Default: `true`. Loopback endpoints
    /// get no exception: list them in `NO_PROXY`. Not used with [`proxies`](Self::proxies),
    /// nor with a client of your own ([`http_client`](Self::http_client)), whose proxy
    /// settings are its own.
    pub fn proxy_from_env(mut self, from_env: bool) -> Self {
        self.proxy_from_env = from_env;
        self
    }

    /// The proxies of the built-in transport, instead of the environment's. Default: read
    /// from the environment (see [`proxy_from_env`](Self::proxy_from_env)). Not used with a
    /// client of your own ([`http_client`](Self::http_client)). An unusable proxy URL is
    /// refused by [`build`](Self::build).
    pub fn proxies(mut self, proxies: Proxies) -> Self {
        self.proxies = Some(proxies);
        self
    }

    /// The proxies of the built-in transport: the explicit ones, else the environment's
    /// (read now) unless turned off.
    fn effective_proxies(&self) -> Proxies {
        match &self.proxies {
            Some(proxies) => proxies.clone(),
            None if self.proxy_from_env => Proxies::from_env(),
            None => Proxies::new(),
        }
    }

    /// The client certificate the built-in transport presents to the token endpoint (mutual
    /// TLS, RFC 8705): `cert_chain_pem` holds the certificate, then any intermediates, as PEM
    /// `CERTIFICATE` sections; `private_key_pem` its key (PKCS#8, PKCS#1 or SEC1 PEM). Checked
    /// by [`build`](Self::build): a section that is not PEM, a key that does not match the
    /// certificate or that the crypto provider cannot use is a [`ConfigError`] that never
    /// quotes the key. Default: none.
    ///
    /// Needed by [`AuthMethod::TlsClientAuth`] and [`AuthMethod::SelfSignedTlsClientAuth`]
    /// on the built-in transport; with another method it lets the server bind the tokens to
    /// the certificate. The token endpoint must be `https`. Not with
    /// [`http_client`](Self::http_client), which would ignore it: give your client the
    /// certificate instead.
    pub fn client_certificate(
        mut self,
        cert_chain_pem: impl Into<String>,
        private_key_pem: impl Into<String>,
    ) -> Self {
        self.client_certificate = Some((
            cert_chain_pem.into(),
            SecretString::from(private_key_pem.into()),
        ));
        self
    }

    /// Adds the CA certificates in `pem` (PEM `CERTIFICATE` sections) to the roots the
    /// built-in transport trusts, besides those of the `native-roots`, `webpki-roots` or
    /// `platform-verifier` feature: for a token endpoint with a certificate from a private CA,
    /// as mutual-TLS endpoints often have. May be called more than once. Checked by
    /// [`build`](Self::build); not with [`http_client`](Self::http_client). Default: none.
    pub fn add_root_certificates(mut self, pem: impl Into<String>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Allows a plain `http` token endpoint on a non-loopback host. Default: `false`: the
    /// client secret would travel in clear text.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The longest a token request may take, response body included. Default: 30 s; must not
    /// be zero. `Duration::MAX` sets no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest token response body accepted. Default: 64 KiB; at least 1 byte, at most
    /// 16 MiB.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = bytes;
        self
    }

    /// Where a token's lifetime comes from. Default: [`ExpirySource::ExpiresIn`].
    pub fn expiry_source(mut self, source: ExpirySource) -> Self {
        self.expiry = source;
        self
    }

    /// The lifetime assumed for a token whose response has no `expires_in` and which is not a
    /// JWT with `exp`. Default: 5 minutes; at least 1 s, at most 365 days (the longest
    /// lifetime any token is given).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    refresh_options!();

    /// Shares the token with the other replicas of the service through a store (Redis, a
    /// [`RedisCache`](crate::RedisCache), or any other
    /// [`TokenStore`](crate::shared_cache::TokenStore)): a refresh adopts the token another
    /// replica fetched, or fetches it for all of them. Requests still read the token locally.
    /// Default: none, each handle fetches its own. See [`shared_cache`](crate::shared_cache).
    #[cfg(feature = "redis")]
    pub fn shared_cache<S: crate::shared_cache::TokenStore>(
        mut self,
        cache: crate::shared_cache::SharedCache<S>,
    ) -> Self {
        self.shared_cache = Some(cache.into_any());
        self
    }

    /// Fetches the issuer's metadata (RFC 8414, OpenID Connect Discovery 1.0) and takes the
    /// token endpoint from it, and, unless [`auth_method`](Self::auth_method) was set, an
    /// authentication method that the server supports and the credentials allow. For builders
    /// made by [`ClientCredentials::from_issuer`] and
    /// [`from_issuer_with_key`](ClientCredentials::from_issuer_with_key).
    ///
    /// It tries `/.well-known/oauth-authorization-server` (inserted before the issuer's path,
    /// RFC 8414 §3.1), then, if that answers with a client error such as 404,
    /// `/.well-known/openid-configuration` (appended to the issuer). The document must name
    /// exactly this issuer, otherwise it is refused. The requests use this builder's HTTP
    /// client, [`timeout`](Self::timeout) (for each document) and
    /// [`max_response_size`](Self::max_response_size), so set those first; redirects are not
    /// followed. Discovery happens once: the token endpoint is not looked up again later.
    ///
    /// # Errors
    ///
    /// A [`DiscoveryError`]; [`DiscoveryError::is_transient`] tells whether trying again later
    /// may help.
    pub async fn discover(mut self) -> Result<Self, DiscoveryError> {
        let issuer = self.issuer.clone().ok_or(DiscoveryError::NoIssuer)?;
        let issuer_uri = endpoint::check_issuer(&issuer, self.allow_insecure_http)?;
        check_timing(&self).map_err(DiscoveryError::Config)?;
        let client = match &self.client {
            Some(client) => client.clone(),
            None => endpoint::default_client(
                &issuer_uri,
                &self.effective_proxies(),
                &self.tls_options().map_err(DiscoveryError::Config)?,
            )
            .map_err(DiscoveryError::Config)?,
        };
        let metadata =
            endpoint::discover(&client, &issuer, self.timeout, self.max_response_size).await?;
        check_url(&metadata.token_endpoint, self.allow_insecure_http).map_err(|error| {
            DiscoveryError::InvalidDocument {
                url: metadata.url.clone(),
                reason: format!("unusable `token_endpoint`: {error}"),
            }
        })?;
        let auth = match self.auth {
            Some(auth) => auth,
            None => endpoint::choose_auth_method(
                metadata.auth_methods.as_deref(),
                &self.credential,
                self.format,
            )?,
        };
        self.auth = Some(auth);
        // RFC 8705 §5: a client that uses mutual TLS sends its token requests to the alias.
        let mut token_endpoint = metadata.token_endpoint;
        if (auth.is_mutual_tls() || self.client_certificate.is_some())
            && let Some(alias) = metadata.mtls_token_endpoint
        {
            check_url(&alias, self.allow_insecure_http).map_err(|error| {
                DiscoveryError::InvalidDocument {
                    url: metadata.url.clone(),
                    reason: format!("unusable `mtls_endpoint_aliases.token_endpoint`: {error}"),
                }
            })?;
            token_endpoint = alias;
        }
        tracing::debug!(
            issuer = %issuer,
            token_endpoint = %token_endpoint,
            auth_method = auth.as_str(),
            "discovered the token endpoint"
        );
        self.token_url = token_endpoint;
        Ok(self)
    }

    /// Binds the tokens to `key` with DPoP (RFC 9449): token requests and every API request
    /// carry a proof signed with it, and the tokens go out as `Authorization: DPoP …`. See
    /// the [`dpop` module](crate::dpop). Default: off (bearer tokens).
    ///
    /// ```
    /// # fn f() -> Result<(), tower_client_credentials::ConfigError> {
    /// use tower_client_credentials::{ClientCredentials, DpopAlgorithm, DpopKey};
    ///
    /// let config = ClientCredentials::builder("https://auth.example.com/token", "id", "secret")
    ///     .dpop(DpopKey::generate(DpopAlgorithm::ES256)?)
    ///     .build()?;
    /// # let _ = config; Ok(()) }
    /// ```
    pub fn dpop(mut self, key: DpopKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// Checks the configuration.
    ///
    /// A builder made from an issuer must be [discovered](Self::discover) first.
    pub fn build(self) -> Result<ClientCredentials, ConfigError> {
        let (template, request) = self.into_template()?;
        Ok(ClientCredentials {
            #[cfg(feature = "redis")]
            shared_cache: template.shared_source(&template.params)?,
            dpop: template.prover(),
            source: template.fetcher(template.endpoint_with(request)),
            policy: template.policy,
            max_wait: template.max_wait,
            lazy: template.lazy,
        })
    }

    /// Checks the configuration and starts configuring a [`TokenSet`](crate::TokenSet): one
    /// token per [`TokenKey`](crate::TokenKey) (scopes, audience, resources), all from this
    /// client. The scopes, audience and resources set on this builder are the defaults that
    /// each key overrides; everything else (credentials, endpoint, refresh schedule, …) is
    /// shared by all keys. See the [`token_set` module](crate::token_set).
    pub fn build_set(self) -> Result<crate::TokenSetBuilder, ConfigError> {
        let (template, _) = self.into_template()?;
        Ok(crate::TokenSetBuilder::new(
            crate::token_set::Sources::Endpoint(Box::new(template)),
        ))
    }

    /// Checks the configuration; returns what every token request of this client shares and
    /// the request for the builder's own parameters.
    fn into_template(self) -> Result<(EndpointTemplate, PreparedRequest), ConfigError> {
        if let Some(issuer) = self.issuer.as_deref().filter(|_| self.token_url.is_empty()) {
            return Err(ConfigError::InvalidTokenUrl {
                reason: format!(
                    "the token endpoint of issuer `{issuer}` is not known yet: call \
                     `discover().await` before `build()`"
                ),
            });
        }
        let uri = check_url(&self.token_url, self.allow_insecure_http)?;
        check_timing(&self)?;
        // Here and not only when a source is made: a token set makes one per key, later.
        #[cfg(feature = "redis")]
        if let Some(cache) = &self.shared_cache {
            cache.check()?;
        }
        let auth = self
            .auth
            .unwrap_or_else(|| self.credential.default_method(self.format));
        // Signs assertions here (an assertion from outside comes with its own `aud`).
        let uses_assertion = matches!(
            auth,
            AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt
        ) && !matches!(self.credential, Credential::Assertion(_));
        let audience = match (&self.assertion_audience, &self.issuer) {
            (AssertionAudience::Issuer, Some(issuer)) => issuer.clone(),
            (AssertionAudience::Issuer, None) if uses_assertion => {
                return Err(ConfigError::InvalidParameter {
                    name: "assertion_audience".into(),
                    reason: "the issuer is known only with `ClientCredentials::from_issuer`; \
                             use `AssertionAudience::Custom` with the issuer identifier"
                        .into(),
                });
            }
            (AssertionAudience::Custom(audience), _) => audience.clone(),
            _ => self.token_url.clone(),
        };
        let assertion = AssertionOptions {
            audience,
            lifetime: self.assertion_lifetime,
        };
        let request = PreparedRequest::new(
            uri.clone(),
            &self.client_id,
            &self.credential,
            auth,
            self.format,
            &self.params,
            &assertion,
        )?;
        let tls = self.tls_options()?;
        let refused = |name: &str, reason: &str| ConfigError::InvalidParameter {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if self.client.is_some() && self.client_certificate.is_some() {
            return Err(refused(
                "client_certificate",
                "your `http_client` would not present it: give that client the certificate",
            ));
        }
        if self.client.is_some() && !self.root_certificates.is_empty() {
            return Err(refused(
                "root_certificates",
                "your `http_client` would not use them: give that client the roots",
            ));
        }
        if tls.has_client_certificate() && uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Err(refused(
                "client_certificate",
                "a client certificate is presented over TLS: the token endpoint must be `https`",
            ));
        }
        if auth.is_mutual_tls() && self.client.is_none() && !tls.has_client_certificate() {
            return Err(refused(
                "client_certificate",
                &format!(
                    "`{}` needs a client certificate: set `client_certificate`, or pass an \
                     `http_client` that presents one",
                    auth.as_str()
                ),
            ));
        }
        let client = match self.client {
            Some(client) => client,
            None => endpoint::default_client(&uri, &self.effective_proxies(), &tls)?,
        };
        let dpop = match self.dpop {
            Some(key) => {
                // The token URL was checked to be absolute.
                let htu =
                    crate::dpop::htu(&uri, None).map_err(|error| ConfigError::InvalidTokenUrl {
                        reason: error.to_string(),
                    })?;
                Some((Arc::new(Prover::new(key)), Arc::from(htu)))
            }
            None => None,
        };
        Ok((
            EndpointTemplate {
                uri,
                client_id: self.client_id,
                credential: self.credential,
                auth,
                format: self.format,
                assertion,
                params: self.params,
                expiry: self.expiry,
                default_lifetime: self.default_lifetime,
                client,
                timeout: self.timeout,
                max_body: self.max_response_size,
                policy: self.policy,
                max_wait: self.max_wait,
                lazy: self.lazy,
                dpop,
                #[cfg(feature = "redis")]
                certificate_thumbprint: tls.client_certificate_thumbprint(),
                #[cfg(feature = "redis")]
                shared_cache: self.shared_cache,
            },
            request,
        ))
    }

    /// The client certificate and extra roots, parsed and checked.
    fn tls_options(&self) -> Result<TlsOptions, ConfigError> {
        TlsOptions::new(
            self.client_certificate
                .as_ref()
                .map(|(chain, key)| (chain.as_str(), key.expose_secret())),
            &self.root_certificates,
        )
    }

    /// The shared-cache key material of this configuration, for tests.
    #[cfg(all(test, feature = "redis"))]
    pub(crate) fn shared_cache_key_material(
        self,
    ) -> Result<crate::shared_cache::KeyMaterial, ConfigError> {
        let (template, _) = self.into_template()?;
        Ok(template.key_material(&template.params))
    }
}

/// The default [`timeout`](ClientCredentialsBuilder::timeout) of a token request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default [`max_wait`](ClientCredentialsBuilder::max_wait) of a request for a token.
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// Builds a [`ClientCredentials`] whose tokens come from a [`TokenSource`]. Created by
/// [`ClientCredentials::from_source`].
///
/// The refresh options are those of [`ClientCredentialsBuilder`], with the same defaults and
/// ranges.
pub struct TokenSourceBuilder {
    source: OneOrPerKey,
    /// The longest one fetch may take.
    timeout: Duration,
    policy: RefreshPolicy,
    max_wait: Duration,
    lazy: bool,
    /// The shared cache and the name of this source's tokens in it.
    #[cfg(feature = "redis")]
    shared_cache: Option<(crate::shared_cache::AnyCache, String)>,
}

/// The source of a [`TokenSourceBuilder`], made once the fetch timeout is known.
enum OneOrPerKey {
    One(Box<dyn FnOnce(Duration) -> Fetcher + Send>),
    PerKey(Box<dyn FnOnce(Duration) -> Arc<crate::token_set::SourceForKey> + Send>),
}

impl TokenSourceBuilder {
    fn new(source: OneOrPerKey) -> Self {
        Self {
            source,
            timeout: DEFAULT_TIMEOUT,
            policy: RefreshPolicy::default(),
            max_wait: DEFAULT_MAX_WAIT,
            lazy: false,
            #[cfg(feature = "redis")]
            shared_cache: None,
        }
    }
}

impl fmt::Debug for TokenSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSourceBuilder")
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .field("max_wait", &self.max_wait)
            .field("lazy", &self.lazy)
            .finish_non_exhaustive()
    }
}

impl TokenSourceBuilder {
    /// The longest one [`fetch`](TokenSource::fetch) may take; a slower one fails with the
    /// transient [`TokenError::Timeout`] and is dropped. Default: 30 s; must not be zero.
    /// `Duration::MAX` sets no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    refresh_options!();

    /// Shares the token with the other replicas through a store, as
    /// [`ClientCredentialsBuilder::shared_cache`] does. `name` tells this source's tokens apart
    /// from every other's: replicas whose sources give interchangeable tokens use the same
    /// name (say, the API and the identity they stand for). It is hashed into the Redis key;
    /// it must not be empty and should not be a secret. Default: none.
    #[cfg(feature = "redis")]
    pub fn shared_cache<S: crate::shared_cache::TokenStore>(
        mut self,
        cache: crate::shared_cache::SharedCache<S>,
        name: impl Into<String>,
    ) -> Self {
        self.shared_cache = Some((cache.into_any(), name.into()));
        self
    }

    /// Checks the configuration and starts configuring the [`TokenSet`](crate::TokenSet) of a
    /// builder made by [`ClientCredentials::from_source_per_key`].
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build); [`ConfigError::InvalidParameter`] for a builder of one source
    /// ([`from_source`](ClientCredentials::from_source), which would give every key the same
    /// token), or for an empty [`shared_cache`](Self::shared_cache) name.
    ///
    /// With a shared cache, each key's tokens are shared under the cache name and the key's
    /// scopes, audience and resources: replicas that name the same source share each key's
    /// token, and no two keys share one.
    pub fn build_set(self) -> Result<crate::TokenSetBuilder, ConfigError> {
        check_schedule(&self.policy, self.timeout)?;
        #[cfg(feature = "redis")]
        check_cache_name(&self.shared_cache)?;
        let OneOrPerKey::PerKey(source_for) = self.source else {
            return Err(ConfigError::InvalidParameter {
                name: "source".into(),
                reason: "one source gives every key the same token; make the builder with \
                         `ClientCredentials::from_source_per_key`"
                    .into(),
            });
        };
        Ok(crate::TokenSetBuilder::new(
            crate::token_set::Sources::Custom {
                source_for: source_for(self.timeout),
                policy: self.policy,
                max_wait: self.max_wait,
                lazy: self.lazy,
                #[cfg(feature = "redis")]
                shared_cache: self.shared_cache.map(Box::new),
            },
        ))
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTiming`] naming the option outside its range, and
    /// [`ConfigError::InvalidParameter`] for an empty shared-cache name or a builder made by
    /// [`from_source_per_key`](ClientCredentials::from_source_per_key).
    pub fn build(self) -> Result<ClientCredentials, ConfigError> {
        check_schedule(&self.policy, self.timeout)?;
        let OneOrPerKey::One(source) = self.source else {
            return Err(ConfigError::InvalidParameter {
                name: "source".into(),
                reason: "a source per key makes a token set: call `build_set()`".into(),
            });
        };
        #[cfg(feature = "redis")]
        check_cache_name(&self.shared_cache)?;
        #[cfg(feature = "redis")]
        let shared_cache = match &self.shared_cache {
            Some((cache, name)) => Some(crate::shared_cache::SharedSource::new(
                cache,
                &crate::shared_cache::KeyMaterial::token_source(name, &Parameters::default()),
                self.policy.latest_margin_fn(),
                false,
            )?),
            None => None,
        };
        Ok(ClientCredentials {
            source: source(self.timeout),
            dpop: None,
            policy: self.policy,
            max_wait: self.max_wait,
            lazy: self.lazy,
            #[cfg(feature = "redis")]
            shared_cache,
        })
    }
}

/// A custom source's shared-cache name must name something.
#[cfg(feature = "redis")]
fn check_cache_name(
    cache: &Option<(crate::shared_cache::AnyCache, String)>,
) -> Result<(), ConfigError> {
    match cache {
        Some((_, name)) if name.is_empty() => Err(ConfigError::InvalidParameter {
            name: "shared_cache.name".into(),
            reason: "must not be empty".into(),
        }),
        Some((cache, _)) => cache.prepare().map(drop),
        None => Ok(()),
    }
}

fn check_url(url: &str, allow_insecure_http: bool) -> Result<Uri, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidTokenUrl {
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let host = uri.host().ok_or_else(|| invalid("the URL has no host"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            if !allow_insecure_http && !endpoint::is_loopback(host) {
                return Err(ConfigError::InsecureTokenUrl {
                    host: host.to_owned(),
                });
            }
        }
        Some(other) => return Err(invalid(&format!("unsupported scheme `{other}`"))),
        None => return Err(invalid("the URL must be absolute (https://…)")),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(
            "credentials in the URL are not supported; pass them to the builder",
        ));
    }
    Ok(uri)
}

/// The largest [`max_response_size`](ClientCredentialsBuilder::max_response_size): token
/// responses and metadata documents are a few KiB, and the limit bounds the memory a response
/// can take.
const MAX_RESPONSE_SIZE: usize = 16 * 1024 * 1024;

/// The longest the refresher waits between two attempts, whatever the options say (see
/// `RefreshPolicy::retry_delay`): the bound of `backoff` and `permanent_retry`.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Checks every timing and size option against its documented range, so that no arithmetic
/// on them can overflow later.
fn check_timing(builder: &ClientCredentialsBuilder) -> Result<(), ConfigError> {
    check_schedule(&builder.policy, builder.timeout)?;
    check_range(
        "default_lifetime",
        builder.default_lifetime,
        Duration::from_secs(1),
        MAX_LIFETIME,
        "from 1 s to 365 days",
    )?;
    if !(1..=MAX_RESPONSE_SIZE).contains(&builder.max_response_size) {
        return Err(ConfigError::InvalidTiming {
            name: "max_response_size",
            reason: format!(
                "must be from 1 byte to 16 MiB, not {} bytes",
                builder.max_response_size
            ),
        });
    }
    Ok(())
}

/// Checks the options that every source shares: the refresh schedule and the fetch timeout.
fn check_schedule(policy: &RefreshPolicy, timeout: Duration) -> Result<(), ConfigError> {
    // `contains` is false for NaN.
    if !(0.1..=1.0).contains(&policy.refresh_ratio) {
        return Err(ConfigError::InvalidTiming {
            name: "refresh_ratio",
            reason: format!("must be from 0.1 to 1.0, not {}", policy.refresh_ratio),
        });
    }
    check_range(
        "timeout",
        timeout,
        Duration::from_nanos(1),
        Duration::MAX,
        "greater than zero",
    )?;
    check_backoff(
        "backoff",
        (policy.backoff_base, policy.backoff_max),
        MAX_RETRY_DELAY,
        "10 minutes",
    )?;
    check_range(
        "permanent_retry",
        policy.permanent_retry,
        Duration::from_secs(1),
        MAX_RETRY_DELAY,
        "from 1 s to 10 minutes",
    )?;
    check_backoff(
        "refused_token_backoff",
        (policy.refusal_backoff, policy.refusal_backoff_max),
        MAX_REFUSAL_BACKOFF,
        "1 day",
    )
}

/// `Ok` for an exponential backoff whose cap `max` is from 1 ms to `cap` (`cap_text`) and whose
/// first delay is from 1 ms to `max`; otherwise an error naming the option.
fn check_backoff(
    name: &'static str,
    (first, max): (Duration, Duration),
    cap: Duration,
    cap_text: &str,
) -> Result<(), ConfigError> {
    let millisecond = Duration::from_millis(1);
    if !(millisecond..=cap).contains(&max) {
        return Err(ConfigError::InvalidTiming {
            name,
            reason: format!("the maximum must be from 1 ms to {cap_text}, not {max:?}"),
        });
    }
    if !(millisecond..=max).contains(&first) {
        return Err(ConfigError::InvalidTiming {
            name,
            reason: format!(
                "the first delay must be from 1 ms to the maximum ({max:?}), not {first:?}"
            ),
        });
    }
    Ok(())
}

/// The bound of `refused_token_backoff`'s cap: an API that refuses every token is still asked
/// again once a day.
const MAX_REFUSAL_BACKOFF: Duration = Duration::from_secs(86_400);

/// `Ok` when `value` is in `min..=max`; otherwise an error naming the option and `range`.
fn check_range(
    name: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
    range: &str,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::InvalidTiming {
            name,
            reason: format!("must be {range}, not {value:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(url: &str) -> Result<ClientCredentials, ConfigError> {
        ClientCredentials::builder(url, "id", "secret")
            .http_client(tower::service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
            }))
            .build()
    }

    #[test]
    fn https_required_except_on_loopback() {
        assert!(build("https://auth.example/token").is_ok());
        assert!(build("http://127.0.0.1:8080/token").is_ok());
        assert!(build("http://[::1]:8080/token").is_ok());
        assert!(build("http://localhost/token").is_ok());
        assert_eq!(
            build("http://auth.example/token").unwrap_err(),
            ConfigError::InsecureTokenUrl {
                host: "auth.example".into()
            }
        );
        assert!(
            ClientCredentials::builder("http://auth.example/token", "id", "s")
                .allow_insecure_http(true)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn malformed_urls_are_config_errors() {
        for url in [
            "",
            "/token",
            "ftp://auth.example/x",
            "https://",
            "https://u:p@auth.example/t",
        ] {
            assert!(
                matches!(build(url), Err(ConfigError::InvalidTokenUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn timing_is_checked() {
        let builder = || ClientCredentials::builder("https://auth.example/t", "id", "s");
        assert!(builder().refresh_ratio(0.0).build().is_err());
        assert!(builder().refresh_ratio(1.5).build().is_err());
        assert!(builder().timeout(Duration::ZERO).build().is_err());
        assert!(
            builder()
                .backoff(Duration::from_secs(2), Duration::from_secs(1))
                .build()
                .is_err()
        );
    }

    /// The option `builder` is refused for, or `None` when it builds.
    fn refused(builder: ClientCredentialsBuilder) -> Option<&'static str> {
        let builder = builder.http_client(tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
        }));
        crate::error::refused_option(builder.build())
    }

    /// Every checked option builds at the limits of its range and is refused, by name, just
    /// past them.
    #[test]
    fn options_are_accepted_at_their_limits_and_refused_past_them() {
        type Set = fn(ClientCredentialsBuilder, Duration) -> ClientCredentialsBuilder;
        let nanos = Duration::from_nanos;
        let secs = Duration::from_secs;
        let year = secs(365 * 24 * 60 * 60);
        let ten_minutes = secs(600);
        let day = secs(24 * 60 * 60);
        let cases: [(&str, Set, &[Duration], &[Duration]); 6] = [
            (
                "timeout",
                |b, d| b.timeout(d),
                &[nanos(1), Duration::MAX],
                &[Duration::ZERO],
            ),
            (
                "default_lifetime",
                |b, d| b.default_lifetime(d),
                &[secs(1), year],
                &[
                    Duration::ZERO,
                    secs(1) - nanos(1),
                    year + nanos(1),
                    Duration::MAX,
                ],
            ),
            (
                "backoff",
                |b, d| b.backoff(d, d),
                &[Duration::from_millis(1), ten_minutes],
                &[
                    Duration::ZERO,
                    Duration::from_millis(1) - nanos(1),
                    ten_minutes + nanos(1),
                    Duration::MAX,
                ],
            ),
            (
                "permanent_retry",
                |b, d| b.permanent_retry(d),
                &[secs(1), ten_minutes],
                &[
                    Duration::ZERO,
                    secs(1) - nanos(1),
                    ten_minutes + nanos(1),
                    Duration::MAX,
                ],
            ),
            (
                "assertion_lifetime",
                |b, d| {
                    b.auth_method(AuthMethod::ClientSecretJwt)
                        .assertion_lifetime(d)
                },
                &[secs(1), day],
                &[
                    Duration::ZERO,
                    secs(1) - nanos(1),
                    day + nanos(1),
                    Duration::MAX,
                ],
            ),
            (
                "max_wait",
                |b, d| b.max_wait(d),
                &[Duration::ZERO, Duration::MAX],
                &[],
            ),
        ];
        let builder = || ClientCredentials::builder("https://auth.example/t", "id", "s");
        for (name, set, accepted, refused_values) in cases {
            for &value in accepted {
                assert_eq!(refused(set(builder(), value)), None, "{name}({value:?})");
            }
            for &value in refused_values {
                assert_eq!(
                    refused(set(builder(), value)),
                    Some(name),
                    "{name}({value:?})"
                );
            }
        }
        // The first delay of the backoff is at most its maximum.
        assert_eq!(refused(builder().backoff(secs(2), secs(2))), None);
        assert_eq!(
            refused(builder().backoff(secs(2) + nanos(1), secs(2))),
            Some("backoff")
        );
        // Other limits.
        for (size, ok) in [
            (0, false),
            (1, true),
            (MAX_RESPONSE_SIZE, true),
            (MAX_RESPONSE_SIZE + 1, false),
            (usize::MAX, false),
        ] {
            let refusal = refused(builder().max_response_size(size));
            assert_eq!(refusal, (!ok).then_some("max_response_size"), "{size}");
        }
        for (ratio, ok) in [
            (0.1, true),
            (1.0, true),
            (0.099, false),
            (0.0, false),
            (-1.0, false),
            (1.0 + f64::EPSILON, false),
            (f64::NAN, false),
            (f64::INFINITY, false),
        ] {
            let refusal = refused(builder().refresh_ratio(ratio));
            assert_eq!(refusal, (!ok).then_some("refresh_ratio"), "{ratio}");
        }
        // Any refresh margin: it never exceeds what the ratio leaves.
        assert_eq!(refused(builder().refresh_before(Duration::MAX)), None);
    }

    /// The shared cache's options are checked by `build()` too.
    #[cfg(feature = "redis")]
    #[test]
    fn shared_cache_options_are_checked_at_build() {
        let cache = || crate::RedisCache::new("redis://127.0.0.1:1/").unwrap();
        let builder = || ClientCredentials::builder("https://auth.example/t", "id", "s");
        assert_eq!(refused(builder().shared_cache(cache())), None);
        assert_eq!(
            refused(builder().shared_cache(cache().lease_timeout(Duration::MAX))),
            Some("shared_cache.lease_timeout")
        );
        // By `build_set()` too, although a token set makes its shared sources later, per key.
        let error = builder()
            .shared_cache(cache().poll_interval(Duration::MAX))
            .build_set()
            .unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::InvalidTiming {
                    name: "shared_cache.poll_interval",
                    ..
                }
            ),
            "{error}"
        );
    }

    /// A source's shared-cache name must not be empty, and its key is no client-credentials
    /// configuration's.
    #[cfg(feature = "redis")]
    #[test]
    fn source_shared_cache_names_are_checked_and_apart() {
        let cache = || crate::RedisCache::new("redis://127.0.0.1:1/").unwrap();
        let source = || {
            ClientCredentials::from_source(crate::source_fn(|| async {
                Ok(crate::IssuedToken::bearer("t", Duration::from_secs(1)))
            }))
        };
        assert!(source().shared_cache(cache(), "orders").build().is_ok());
        assert!(matches!(
            source().shared_cache(cache(), "").build(),
            Err(ConfigError::InvalidParameter { name, .. }) if name == "shared_cache.name"
        ));
        let by_endpoint = ClientCredentials::builder("http://token-source.invalid/", "x", "s")
            .allow_insecure_http(true)
            .shared_cache_key_material()
            .unwrap();
        let material = |name: &str, audience: Option<&str>| {
            let params = Parameters {
                audience: audience.map(str::to_owned),
                ..Parameters::default()
            };
            crate::shared_cache::KeyMaterial::token_source(name, &params).digest()
        };
        assert_ne!(by_endpoint.digest(), material("x", None));
        assert_ne!(material("a", None), material("b", None));
        // A token set's keys: apart from each other and from the source of one token.
        assert_ne!(material("a", Some("orders")), material("a", None));
        assert_ne!(
            material("a", Some("orders")),
            material("a", Some("billing"))
        );

        // A token set of custom sources takes a cache, and checks its name.
        let per_key = || {
            ClientCredentials::from_source_per_key(|_: &crate::TokenKey| {
                crate::source_fn(|| async {
                    Ok(crate::IssuedToken::bearer("t", Duration::from_secs(1)))
                })
            })
        };
        assert!(per_key().shared_cache(cache(), "apis").build_set().is_ok());
        assert!(matches!(
            per_key().shared_cache(cache(), "").build_set(),
            Err(ConfigError::InvalidParameter { name, .. }) if name == "shared_cache.name"
        ));
    }

    /// Tokens bound to a certificate are shared only by replicas presenting the same one.
    #[cfg(feature = "redis")]
    #[test]
    fn the_client_certificate_is_part_of_the_shared_cache_key() {
        let (chain, key) = client_identity();
        let (other_chain, other_key) = client_identity();
        let digest = |identity: Option<(&str, &str)>| {
            let builder = ClientCredentials::builder("https://auth.example/t", "id", "s");
            let builder = match identity {
                Some((chain, key)) => builder.client_certificate(chain, key),
                None => builder,
            };
            builder.shared_cache_key_material().unwrap().digest()
        };
        let with = digest(Some((&chain, &key)));
        assert_eq!(with, digest(Some((&chain, &key))));
        assert_ne!(with, digest(Some((&other_chain, &other_key))));
        assert_ne!(with, digest(None));
    }

    /// An assertion from outside goes only as `private_key_jwt` in a form body.
    #[test]
    fn external_assertions_are_checked_at_build() {
        let builder = || {
            ClientCredentials::builder_with_assertion(
                "https://auth.example/t",
                "id",
                ClientAssertion::from_fn(|| async { Ok("s3cr3t.jwt.value".to_owned()) }),
            )
        };
        assert!(builder().build().is_ok());
        assert!(
            builder()
                .auth_method(AuthMethod::PrivateKeyJwt)
                .build()
                .is_ok()
        );
        for (builder, option) in [
            (
                builder().auth_method(AuthMethod::ClientSecretBasic),
                "auth_method",
            ),
            (
                builder().request_format(RequestFormat::Json),
                "request_format",
            ),
        ] {
            match builder.build() {
                Err(ConfigError::InvalidParameter { name, .. }) => assert_eq!(name, option),
                other => panic!("{option}: {other:?}"),
            }
        }
        assert!(!format!("{:?}", builder()).contains("s3cr3t"));
    }

    /// A self-signed certificate and its key made now, in PEM.
    fn client_identity() -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["client.example".into()]).unwrap();
        (cert.pem(), signing_key.serialize_pem())
    }

    /// The name of the option `result` refuses, with its reason.
    fn refusal<T>(result: Result<T, ConfigError>) -> Option<(String, String)> {
        match result {
            Ok(_) => None,
            Err(ConfigError::InvalidParameter { name, reason }) => Some((name, reason)),
            Err(other) => panic!("not a parameter error: {other}"),
        }
    }

    fn any_client(builder: ClientCredentialsBuilder) -> ClientCredentialsBuilder {
        builder.http_client(tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
        }))
    }

    /// Mutual TLS: the certificate is needed on the built-in transport and refused with a
    /// client of one's own (which would not present it); the token endpoint must be `https`;
    /// only the mutual-TLS methods go with `builder_with_tls_auth`.
    #[test]
    fn mutual_tls_options_are_checked_at_build() {
        let (chain, key) = client_identity();
        let tls = |url: &str| ClientCredentials::builder_with_tls_auth(url, "id");
        let https = "https://mtls.auth.example/t";

        assert!(tls(https).client_certificate(&chain, &key).build().is_ok());
        assert!(
            tls(https)
                .auth_method(AuthMethod::SelfSignedTlsClientAuth)
                .client_certificate(&chain, &key)
                .build()
                .is_ok()
        );
        // The user's client presents the certificate.
        assert!(any_client(tls(https)).build().is_ok());
        for (builder, option) in [
            (tls(https), "client_certificate"),
            (
                tls(https).auth_method(AuthMethod::SelfSignedTlsClientAuth),
                "client_certificate",
            ),
            (
                any_client(tls(https).client_certificate(&chain, &key)),
                "client_certificate",
            ),
            (
                any_client(tls(https).add_root_certificates(&chain)),
                "root_certificates",
            ),
            (
                tls("http://127.0.0.1:8080/t").client_certificate(&chain, &key),
                "client_certificate",
            ),
            (
                tls(https)
                    .client_certificate(&chain, &key)
                    .auth_method(AuthMethod::ClientSecretBasic),
                "auth_method",
            ),
            (
                ClientCredentials::builder(https, "id", "secret")
                    .auth_method(AuthMethod::TlsClientAuth)
                    .client_certificate(&chain, &key),
                "auth_method",
            ),
        ] {
            let debug = format!("{builder:?}");
            match refusal(builder.build()) {
                Some((name, _)) => assert_eq!(name, option, "{debug}"),
                None => panic!("{debug} built"),
            }
        }
        // A certificate also goes with other methods (the server may bind the tokens to it),
        // and extra roots are accepted.
        assert!(
            ClientCredentials::builder(https, "id", "secret")
                .client_certificate(&chain, &key)
                .add_root_certificates(&chain)
                .build()
                .is_ok()
        );
    }

    /// Bad PEM, a key of another certificate, a key that is not a key: refused by name, and
    /// neither the error nor the builder's `Debug` shows the key.
    #[test]
    fn bad_client_certificates_are_refused_without_showing_the_key() {
        let (chain, key) = client_identity();
        let (_, other_key) = client_identity();
        let secret_body = "c2VjcmV0LWtleS1ieXRlcw";
        let not_a_key =
            format!("-----BEGIN PRIVATE KEY-----\n{secret_body}==\n-----END PRIVATE KEY-----\n");
        let broken =
            format!("-----BEGIN PRIVATE KEY-----\n{secret_body}!!\n-----END PRIVATE KEY-----\n");
        let builder = |chain: &str, key: &str| {
            ClientCredentials::builder_with_tls_auth("https://mtls.auth.example/t", "id")
                .client_certificate(chain, key)
        };
        let key_body = key.lines().nth(1).unwrap().to_owned();
        assert!(!format!("{:?}", builder(&chain, &key)).contains(&key_body));
        for (chain, key) in [
            ("", key.as_str()),
            ("not PEM at all", key.as_str()),
            (chain.as_str(), ""),
            (chain.as_str(), chain.as_str()),
            (chain.as_str(), other_key.as_str()),
            (chain.as_str(), not_a_key.as_str()),
            (chain.as_str(), broken.as_str()),
        ] {
            let Some((name, reason)) = refusal(builder(chain, key).build()) else {
                panic!("built with {chain:?}");
            };
            assert_eq!(name, "client_certificate");
            for secret in [secret_body, &key_body] {
                assert!(!reason.contains(secret), "{reason}");
            }
        }
        let Some((name, _)) = refusal(
            ClientCredentials::builder("https://auth.example/t", "id", "s")
                .add_root_certificates("not PEM")
                .build(),
        ) else {
            panic!("built");
        };
        assert_eq!(name, "root_certificates");
    }

    #[test]
    fn debug_redacts_the_secret() {
        let builder = ClientCredentials::builder("https://auth.example/t", "id", "hunter2-secret");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }
}
