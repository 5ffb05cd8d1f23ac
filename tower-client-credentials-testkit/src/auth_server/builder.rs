//! The builder of a [`MockAuthServer`].

use std::{
    collections::HashMap,
    fmt, io,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use crate::{
    dpop::{self},
    registry::TokenRegistry,
};

use super::*;

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
    pub(super) default_client: bool,
    pub(super) clients: Vec<(String, ClientEntry)>,
    pub(super) lifetime: Duration,
    pub(super) expires_in: ExpiresIn,
    pub(super) token_type: String,
    pub(super) signing_key: Option<Vec<u8>>,
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) default_scope: Option<String>,
    pub(super) dpop: DpopConfig,
}

/// The DPoP settings of a [`MockAuthServer`].
#[derive(Debug, Clone)]
pub(super) struct DpopConfig {
    pub(super) enabled: bool,
    pub(super) required: bool,
    pub(super) nonce: bool,
    pub(super) bound_as_bearer: bool,
    pub(super) iat_window: Duration,
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
