use std::fmt;

use crate::endpoint::Parameters;

/// What makes one token of a [`TokenSet`](super::TokenSet) differ from another: the scopes,
/// the `audience` and the `resource`s (RFC 8707) of its token request.
///
/// A field left unset takes the value set on the
/// [`ClientCredentialsBuilder`](crate::ClientCredentialsBuilder) the set was built from. The
/// order of scopes and of resources does not matter: keys that list the same ones are equal
/// and share one token.
///
/// Besides naming a token in [`TokenSetBuilder::route`](super::TokenSetBuilder::route), a key
/// can be put in a request's extensions to choose the token for that request (see the
/// [module documentation](super) for the order in which routes are tried):
///
/// ```
/// use tower_client_credentials::TokenKey;
///
/// let key = TokenKey::new().audience("https://billing.example.com").scopes(["invoices:read"]);
/// let mut request = http::Request::get("https://billing.example.com/invoices").body(())?;
/// request.extensions_mut().insert(key);
/// # Ok::<_, http::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TokenKey {
    scopes: Vec<String>,
    audience: Option<String>,
    resources: Vec<String>,
}

impl TokenKey {
    /// A key with every field unset: the builder's own parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The scopes to ask for. Default: the builder's scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self.scopes.sort_unstable();
        self.scopes.dedup();
        self
    }

    /// The `audience` parameter. Default: the builder's audience.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Adds a `resource` parameter (RFC 8707). May be called more than once. Default: the
    /// builder's resources.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self.resources.sort_unstable();
        self.resources.dedup();
        self
    }

    /// The scopes of this key (sorted); empty when the builder's apply.
    pub fn scope_list(&self) -> &[String] {
        &self.scopes
    }

    /// The audience of this key, if it sets one.
    pub fn audience_value(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// The resources of this key (sorted); empty when the builder's apply.
    pub fn resource_list(&self) -> &[String] {
        &self.resources
    }

    /// The token-request parameters of this key, over `defaults`.
    pub(crate) fn parameters(&self, defaults: &Parameters) -> Parameters {
        let mut params = defaults.clone();
        if !self.scopes.is_empty() {
            params.scopes.clone_from(&self.scopes);
        }
        if let Some(audience) = &self.audience {
            params.audience = Some(audience.clone());
        }
        if !self.resources.is_empty() {
            params.resources.clone_from(&self.resources);
        }
        params
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TokenKey");
        if !self.scopes.is_empty() {
            debug.field("scopes", &self.scopes);
        }
        if let Some(audience) = &self.audience {
            debug.field("audience", audience);
        }
        if !self.resources.is_empty() {
            debug.field("resources", &self.resources);
        }
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_and_unset_fields_take_the_defaults() {
        let a = TokenKey::new()
            .scopes(["b", "a", "a"])
            .resource("r2")
            .resource("r1");
        let b = TokenKey::new()
            .scopes(["a", "b"])
            .resource("r1")
            .resource("r2");
        assert_eq!(a, b);
        assert_ne!(a, TokenKey::new().scopes(["a"]));

        let defaults = Parameters {
            scopes: vec!["default".into()],
            audience: Some("default-aud".into()),
            resources: vec![],
            extra: vec![("x".into(), "y".into())],
        };
        let params = TokenKey::new().audience("api").parameters(&defaults);
        assert_eq!(params.scopes, ["default"]);
        assert_eq!(params.audience.as_deref(), Some("api"));
        assert_eq!(params.extra.len(), 1);
        let params = a.parameters(&defaults);
        assert_eq!(params.scopes, ["a", "b"]);
        assert_eq!(params.resources, ["r1", "r2"]);
        assert_eq!(params.audience.as_deref(), Some("default-aud"));
    }
}
