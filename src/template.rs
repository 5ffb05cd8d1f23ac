//! What the tokens of a [`TokenSet`](crate::TokenSet) share: a checked client-credentials
//! configuration without its token-request parameters, from which each key's token endpoint
//! client (and shared-cache source) is made. Built by
//! [`ClientCredentialsBuilder::build_set`](crate::ClientCredentialsBuilder::build_set), used by
//! the token set; its own module so that neither of those two imports the other.

use std::{sync::Arc, time::Duration};

use http::Uri;

use crate::{
    dpop::Prover,
    endpoint::{
        AssertionOptions, AuthMethod, Credential, HttpClient, Parameters, PreparedRequest,
        RequestFormat, TokenEndpoint,
    },
    error::ConfigError,
    refresh::RefreshPolicy,
    source::Fetcher,
    token::ExpirySource,
};
/// A checked configuration without its token-request parameters: what the tokens of a
/// [`TokenSet`](crate::TokenSet) share. [`endpoint`](Self::endpoint) makes the token endpoint
/// client for one parameter set.
pub(crate) struct EndpointTemplate {
    pub(crate) uri: Uri,
    pub(crate) client_id: String,
    pub(crate) credential: Credential,
    pub(crate) auth: AuthMethod,
    pub(crate) format: RequestFormat,
    pub(crate) assertion: AssertionOptions,
    /// The builder's parameters: the defaults of every key.
    pub(crate) params: Parameters,
    pub(crate) expiry: ExpirySource,
    pub(crate) default_lifetime: Duration,
    pub(crate) client: HttpClient,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) policy: RefreshPolicy,
    pub(crate) max_wait: Duration,
    /// Whether the set's `start` leaves the routed keys' first fetches to their first requests.
    pub(crate) lazy: bool,
    pub(crate) dpop: Option<(Arc<Prover>, Arc<str>)>,
    /// The SHA-256 thumbprint of the client certificate the built-in transport presents
    /// (base64url), if it has one: the server may bind the tokens to it.
    #[cfg(feature = "redis")]
    pub(crate) certificate_thumbprint: Option<String>,
    #[cfg(feature = "redis")]
    pub(crate) shared_cache: Option<crate::shared_cache::AnyCache>,
}

impl EndpointTemplate {
    /// What tells the tokens for `params` apart from others in a shared cache.
    #[cfg(feature = "redis")]
    pub(crate) fn key_material(&self, params: &Parameters) -> crate::shared_cache::KeyMaterial {
        let material =
            crate::shared_cache::KeyMaterial::new(&self.uri, &self.client_id, self.auth, params);
        // DPoP-bound tokens are only of use to replicas holding the same key, and tokens
        // bound to a certificate (RFC 8705 §3) to those presenting the same certificate.
        let material = match &self.dpop {
            Some((prover, _)) => material.bind("dpop_jkt", prover.key().thumbprint()),
            None => material,
        };
        match &self.certificate_thumbprint {
            Some(thumbprint) => material.bind("x5t#S256", thumbprint.as_str()),
            None => material,
        }
    }

    /// The shared cache for the tokens of `params`, if one is configured.
    #[cfg(feature = "redis")]
    pub(crate) fn shared_source(
        &self,
        params: &Parameters,
    ) -> Result<Option<crate::shared_cache::SharedSource>, ConfigError> {
        self.shared_cache
            .as_ref()
            .map(|cache| {
                crate::shared_cache::SharedSource::new(
                    cache,
                    &self.key_material(params),
                    self.policy.latest_margin_fn(),
                    self.dpop.is_some(),
                )
            })
            .transpose()
    }

    /// The prover of the DPoP proofs of API requests, with DPoP.
    pub(crate) fn prover(&self) -> Option<Arc<Prover>> {
        self.dpop.as_ref().map(|(prover, _)| Arc::clone(prover))
    }

    /// `endpoint` with this template's request timeout.
    pub(crate) fn fetcher(&self, endpoint: TokenEndpoint) -> Fetcher {
        Fetcher::new(Arc::new(endpoint), self.timeout)
    }

    /// The token endpoint client for `params`, sharing this template's HTTP client.
    pub(crate) fn endpoint(&self, params: &Parameters) -> Result<TokenEndpoint, ConfigError> {
        let request = PreparedRequest::new(
            self.uri.clone(),
            &self.client_id,
            &self.credential,
            self.auth,
            self.format,
            params,
            &self.assertion,
        )?;
        Ok(self.endpoint_with(request))
    }

    pub(crate) fn endpoint_with(&self, request: PreparedRequest) -> TokenEndpoint {
        TokenEndpoint {
            request,
            expiry: self.expiry,
            default_lifetime: self.default_lifetime,
            client: self.client.clone(),
            max_body: self.max_body,
            dpop: self.dpop.clone(),
        }
    }
}
