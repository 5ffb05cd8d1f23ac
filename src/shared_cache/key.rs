//! The Redis key of a shared token: a SHA-256 digest of everything that makes one token
//! different from another, and of nothing secret.
//!
//! Two clients get the same key exactly when the authorization server would hand them
//! interchangeable tokens: the same token endpoint, client id and authentication method, and
//! the same scopes, audience, resources and extra parameters. The client secret or key is never
//! part of it (nor of anything stored).
//!
//! Each discriminator is a named field, length-prefixed in the digest so that no two different
//! sets of fields hash the same input. [`KeyMaterial::bind`] adds one more: a token bound to a
//! DPoP key (RFC 9449) must be shared only between replicas holding that key, so the DPoP
//! option binds the key's JWK thumbprint:
//!
//! ```ignore
//! material.bind("dpop_jkt", thumbprint)
//! ```

use http::Uri;

use crate::endpoint::{AuthMethod, Parameters};

/// The domain separator and version of the key derivation. Changing the derivation means a
/// new version, so that old and new replicas never read each other's entries by mistake.
const DERIVATION: &[u8] = b"tower-client-credentials/shared-token/v1";

/// The discriminators of a shared token, from which its Redis key is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyMaterial {
    fields: Vec<(&'static str, String)>,
}

impl KeyMaterial {
    /// The discriminators of a client-credentials token. Scopes, resources and extra
    /// parameters are sorted: their order in the request does not change the token.
    pub(crate) fn new(
        token_endpoint: &Uri,
        client_id: &str,
        auth: AuthMethod,
        params: &Parameters,
    ) -> Self {
        let mut scopes: Vec<&str> = params.scopes.iter().map(String::as_str).collect();
        scopes.sort_unstable();
        scopes.dedup();
        let mut resources: Vec<&str> = params.resources.iter().map(String::as_str).collect();
        resources.sort_unstable();
        resources.dedup();
        let mut extra: Vec<&(String, String)> = params.extra.iter().collect();
        extra.sort();
        let mut material = Self { fields: Vec::new() }
            .bind("token_endpoint", token_endpoint.to_string())
            .bind("client_id", client_id)
            .bind("auth_method", auth.as_str());
        for scope in scopes {
            material = material.bind("scope", scope);
        }
        if let Some(audience) = &params.audience {
            material = material.bind("audience", audience.as_str());
        }
        for resource in resources {
            material = material.bind("resource", resource);
        }
        for (name, value) in extra {
            material = material.bind("param", format!("{name}={value}"));
        }
        material
    }

    /// The discriminators of the tokens of a [`TokenSource`](crate::TokenSource) the user
    /// named `name`, for the request parameters `params` (a token set's key; the defaults for a
    /// source of one token). The `token_source` field sets them apart from every
    /// client-credentials configuration, which never has one.
    pub(crate) fn token_source(name: &str, params: &Parameters) -> Self {
        Self::new(
            &Uri::from_static("http://token-source.invalid/"),
            "",
            AuthMethod::ClientSecretBasic,
            params,
        )
        .bind("token_source", name)
    }

    /// Adds a discriminator: tokens that differ in it get different keys. For a property of
    /// the token that the request parameters do not show, such as the DPoP key it is bound to
    /// (`bind("dpop_jkt", thumbprint)`). Never bind a secret: the digest is not a secret.
    pub(crate) fn bind(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.fields.push((name, value.into()));
        self
    }

    /// SHA-256 over the derivation version and every field, each length-prefixed.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        hash.update(DERIVATION);
        for (name, value) in &self.fields {
            for part in [name.as_bytes(), value.as_bytes()] {
                hash.update(&(part.len() as u64).to_be_bytes());
                hash.update(part);
            }
        }
        let mut out = [0_u8; 32];
        out.copy_from_slice(hash.finish().as_ref());
        out
    }

    /// `prefix` followed by the digest in lowercase hex, in braces: a Redis Cluster hash tag,
    /// so that the key and the names derived from it by a suffix (the lease, the channel)
    /// fall in one slot. (When the prefix holds a `{` of its own, the tag starts there; the
    /// suffixes still share it.)
    pub(crate) fn redis_key(&self, prefix: &str) -> String {
        let mut key = String::with_capacity(prefix.len() + 66);
        key.push_str(prefix);
        key.push('{');
        for byte in self.digest() {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        key.push('}');
        key
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientCredentials;

    fn params(scopes: &[&str]) -> Parameters {
        Parameters {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..Parameters::default()
        }
    }

    fn uri() -> Uri {
        "https://auth.example/oauth/token".parse().unwrap()
    }

    fn key(params: &Parameters) -> String {
        KeyMaterial::new(&uri(), "client", AuthMethod::ClientSecretBasic, params).redis_key("p:")
    }

    #[test]
    fn same_configuration_same_key() {
        let a = key(&params(&["orders:read", "orders:write"]));
        assert_eq!(a, key(&params(&["orders:read", "orders:write"])));
        // Order and repetition of scopes do not change the token.
        assert_eq!(
            a,
            key(&params(&["orders:write", "orders:read", "orders:read"]))
        );
        assert!(a.starts_with("p:{") && a.ends_with('}'));
        assert_eq!(a.len(), 2 + 66);
        assert!(a[3..67].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn every_discriminator_changes_the_key() {
        let base = params(&["orders:read"]);
        let reference = key(&base);
        let mut variants = vec![
            key(&params(&["orders:write"])),
            key(&params(&["orders:read", "orders:write"])),
            key(&params(&[])),
            KeyMaterial::new(&uri(), "other", AuthMethod::ClientSecretBasic, &base).redis_key("p:"),
            KeyMaterial::new(&uri(), "client", AuthMethod::ClientSecretPost, &base).redis_key("p:"),
            KeyMaterial::new(
                &"https://other.example/oauth/token".parse().unwrap(),
                "client",
                AuthMethod::ClientSecretBasic,
                &base,
            )
            .redis_key("p:"),
            key(&Parameters {
                audience: Some("https://api.example".into()),
                ..base.clone()
            }),
            key(&Parameters {
                resources: vec!["https://api.example".into()],
                ..base.clone()
            }),
            key(&Parameters {
                extra: vec![("tenant".into(), "a".into())],
                ..base.clone()
            }),
            KeyMaterial::new(&uri(), "client", AuthMethod::ClientSecretBasic, &base)
                .bind("dpop_jkt", "thumbprint")
                .redis_key("p:"),
            KeyMaterial::new(&uri(), "client", AuthMethod::ClientSecretBasic, &base)
                .redis_key("q:"),
        ];
        variants.push(reference.clone());
        let distinct: std::collections::HashSet<_> = variants.iter().collect();
        assert_eq!(distinct.len(), variants.len(), "{variants:#?}");
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        // "a" + "bc" and "ab" + "c" concatenate alike; the length prefixes keep them apart.
        let one = KeyMaterial { fields: Vec::new() }
            .bind("scope", "a")
            .bind("scope", "bc");
        let two = KeyMaterial { fields: Vec::new() }
            .bind("scope", "ab")
            .bind("scope", "c");
        assert_ne!(one.digest(), two.digest());
    }

    #[test]
    fn the_secret_is_never_part_of_the_key() {
        // Two clients that differ only in their secret share tokens: same key. And the
        // material never holds the secret.
        let material = |secret: &str| {
            let builder =
                ClientCredentials::builder("http://127.0.0.1/oauth/token", "client", secret)
                    .scopes(["orders:read"]);
            builder.shared_cache_key_material().unwrap()
        };
        let a = material("hunter2-secret-one");
        let b = material("another-secret-two");
        assert_eq!(a, b);
        assert_eq!(a.redis_key("p:"), b.redis_key("p:"));
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(a.fields.iter().all(|(_, value)| !value.contains("hunter2")));
    }
}
