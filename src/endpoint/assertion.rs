//! Signed client assertions (RFC 7523 §2.2, OpenID Connect Core §9): the JWT that
//! `private_key_jwt` and `client_secret_jwt` send in place of a shared secret.
//!
//! A [`ClientKey`] is checked when it is created (parsed, matched to its algorithm and signed
//! with once), so a bad key is a configuration error, never a failure at the first token
//! request. Every token request gets a freshly signed assertion with its own `jti`.
//!
//! Key material is held by `jsonwebtoken`'s `EncodingKey`, which wipes its bytes when dropped
//! (it is `ZeroizeOnDrop`), and the intermediate buffers this module builds from a JWK are
//! wiped too. Parsing a PEM goes through `jsonwebtoken`'s decoder, whose temporary copies are
//! not wiped: load keys once, at startup.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use secrecy::zeroize::{Zeroize, Zeroizing};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The default lifetime of an assertion (its `exp` minus its `iat`).
pub(crate) const DEFAULT_ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// The accepted lifetimes of an assertion. A day is generous: servers commonly refuse
/// assertions valid for more than a few minutes.
pub(crate) const ASSERTION_LIFETIMES: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 60 * 60);

/// The algorithm a [`ClientKey`] signs client assertions with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl SigningAlgorithm {
    /// The algorithm's JWS name (`RS256`, `ES256`, `EdDSA`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            // RFC 9864's fully specified name for the same signature.
            "EdDSA" | "Ed25519" => Self::EdDSA,
            _ => return None,
        })
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512
        )
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A private key for `private_key_jwt` client authentication.
///
/// Create it with [`from_pem`](Self::from_pem) or [`from_jwk`](Self::from_jwk) and pass it to
/// [`ClientCredentials::builder_with_key`](crate::ClientCredentials::builder_with_key) or
/// [`ClientCredentials::from_issuer_with_key`](crate::ClientCredentials::from_issuer_with_key).
/// Both constructors check the key by signing with it once: a key that does not parse, does
/// not match its algorithm or cannot sign is refused here.
///
/// `Debug` shows the algorithm and key id, never the key. Cloning copies the key; every copy
/// wipes its bytes when dropped.
///
/// ```
/// use tower_client_credentials::{ClientKey, SigningAlgorithm};
///
/// # fn main() -> Result<(), tower_client_credentials::ConfigError> {
/// # let pem = tower_client_credentials_testkit::keys::TestKey::p256().private_pem();
/// // let pem = std::fs::read_to_string("client.key.pem")?;
/// let key = ClientKey::from_pem(SigningAlgorithm::ES256, pem)?.with_key_id("my-key-1");
/// assert_eq!(key.algorithm(), SigningAlgorithm::ES256);
/// assert!(!format!("{key:?}").contains("PRIVATE"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientKey {
    algorithm: SigningAlgorithm,
    key: EncodingKey,
    key_id: Option<String>,
    x5t: Option<String>,
    x5t_s256: Option<String>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ClientKey {
    /// A key from its PEM text, to sign with `algorithm`.
    ///
    /// Accepted: PKCS#8 (`BEGIN PRIVATE KEY`) for every algorithm, and PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) for RSA. The key must fit the algorithm: RSA for `RS*` and
    /// `PS*`, P-256 for `ES256`, P-384 for `ES384`, Ed25519 for `EdDSA`. Encrypted keys are not
    /// supported. The assertion header carries no `kid` unless
    /// [`with_key_id`](Self::with_key_id) sets one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClientKey`] when the PEM cannot be used. The
    /// error never contains key material.
    pub fn from_pem(
        algorithm: SigningAlgorithm,
        pem: impl AsRef<[u8]>,
    ) -> Result<Self, ConfigError> {
        let pem = pem.as_ref();
        let parsed = if algorithm.is_rsa() {
            EncodingKey::from_rsa_pem(pem)
        } else if algorithm == SigningAlgorithm::EdDSA {
            EncodingKey::from_ed_pem(pem)
        } else {
            EncodingKey::from_ec_pem(pem)
        };
        let key = parsed.map_err(|error| {
            let hint = if contains(pem, b"ENCRYPTED PRIVATE KEY") {
                "; encrypted keys are not supported, decrypt it first \
                 (`openssl pkcs8 -topk8 -nocrypt`)"
            } else if contains(pem, b"BEGIN EC PRIVATE KEY") {
                "; SEC1 `EC PRIVATE KEY` files are not supported, convert it to PKCS#8 \
                 (`openssl pkcs8 -topk8 -nocrypt`)"
            } else if contains(pem, b"PUBLIC KEY") || contains(pem, b"CERTIFICATE") {
                "; this is a public key or certificate, the private key is needed"
            } else {
                ""
            };
            invalid_key(format!(
                "not {} private key in PEM ({}){hint}",
                key_kind(algorithm),
                describe(&error)
            ))
        })?;
        Self::checked(algorithm, key)
    }

    /// A key from a private JWK (RFC 7517), as a JSON object.
    ///
    /// The algorithm is the JWK's `alg` when it has one, otherwise it follows from the key:
    /// `RS256` for RSA, `ES256` for P-256, `ES384` for P-384, `EdDSA` for Ed25519. The JWK's
    /// `kid`, if any, goes into the header of every assertion. RSA keys need all their private
    /// members (`d`, `p`, `q`, `dp`, `dq`, `qi`). When the JWK also carries the public members
    /// (`x`/`y`, `n`/`e`), they must belong to the private key. A JWK whose `use` is not `sig`
    /// or whose `key_ops` lacks `sign` is refused.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClientKey`] when the JWK cannot be used. The
    /// error never contains key material.
    pub fn from_jwk(jwk: &str) -> Result<Self, ConfigError> {
        let fields: JwkFields = serde_json::from_str(jwk).map_err(|error| {
            // serde_json's message quotes no input, only positions and field names.
            invalid_key(format!("not a JWK JSON object: {error}"))
        })?;
        if fields.keys.is_some() {
            return Err(invalid_key(
                "this is a JWK Set (`keys`); pass the one private JWK to sign with".into(),
            ));
        }
        if let Some(usage) = fields.usage.as_deref().filter(|u| *u != "sig") {
            return Err(invalid_key(format!(
                "the JWK's `use` is `{}`, not `sig`",
                excerpt(usage)
            )));
        }
        if let Some(ops) = &fields.key_ops
            && !ops.iter().any(|op| op == "sign")
        {
            return Err(invalid_key(
                "the JWK's `key_ops` does not include `sign`".into(),
            ));
        }
        let algorithm = fields.algorithm()?;
        let key = fields.encoding_key(algorithm)?;
        fields.check_public_members(&key, algorithm)?;
        let mut key = Self::checked(algorithm, key)?;
        key.key_id = fields.kid.clone();
        Ok(key)
    }

    /// Sets the `kid` header of the assertions, which tells the server which of the client's
    /// registered keys to verify with. Default: the JWK's `kid`, or none for a PEM key.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Sets the `x5t` header: the base64url SHA-1 thumbprint of the certificate of this key
    /// (Microsoft Entra ID identifies certificate credentials by it). Default: none.
    pub fn with_x5t(mut self, thumbprint: impl Into<String>) -> Self {
        self.x5t = Some(thumbprint.into());
        self
    }

    /// Sets the `x5t#S256` header: the base64url SHA-256 thumbprint of the certificate of this
    /// key. Default: none.
    pub fn with_x5t_s256(mut self, thumbprint: impl Into<String>) -> Self {
        self.x5t_s256 = Some(thumbprint.into());
        self
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The `kid` put in the assertion header, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Signs a throwaway JWT, so that a key the signer cannot use fails now.
    fn checked(algorithm: SigningAlgorithm, key: EncodingKey) -> Result<Self, ConfigError> {
        jsonwebtoken::encode(&Header::new(algorithm.jwt()), &Empty {}, &key).map_err(|error| {
            invalid_key(format!(
                "cannot sign {algorithm} with this key ({}); {} key is needed",
                describe(&error),
                key_kind(algorithm)
            ))
        })?;
        Ok(Self {
            algorithm,
            key,
            key_id: None,
            x5t: None,
            x5t_s256: None,
        })
    }

    fn header(&self) -> Header {
        let mut header = Header::new(self.algorithm.jwt());
        header.kid.clone_from(&self.key_id);
        header.x5t.clone_from(&self.x5t);
        header.x5t_s256.clone_from(&self.x5t_s256);
        header
    }
}

#[derive(Serialize)]
struct Empty {}

/// Who a client assertion is addressed to: its `aud` claim.
///
/// Default: [`AssertionAudience::TokenEndpoint`], which RFC 7523 §3 and OpenID Connect Core §9
/// name and every server accepts. Some servers want their issuer identifier instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AssertionAudience {
    /// The token endpoint URL, exactly as configured or discovered.
    #[default]
    TokenEndpoint,
    /// The issuer identifier. Known only when the configuration comes from
    /// [`ClientCredentials::from_issuer`](crate::ClientCredentials::from_issuer) and
    /// [`discover`](crate::ClientCredentialsBuilder::discover); otherwise
    /// [`build`](crate::ClientCredentialsBuilder::build) refuses it.
    Issuer,
    /// Any other value.
    Custom(String),
}

/// What signs assertions: the client's private key, or its secret (`client_secret_jwt`, HS256).
pub(crate) enum AssertionKey {
    Private(ClientKey),
    Secret(EncodingKey),
}

/// Signs a fresh client assertion for each token request. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AssertionSigner {
    inner: Arc<SignerInner>,
}

struct SignerInner {
    header: Header,
    key: EncodingKey,
    client_id: String,
    audience: String,
    lifetime: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

impl AssertionSigner {
    /// A signer for `client_id`'s assertions to `audience`, valid for `lifetime` (rounded up to
    /// whole seconds). Checks the key by signing once.
    pub(crate) fn new(
        client_id: &str,
        key: AssertionKey,
        audience: String,
        lifetime: Duration,
    ) -> Result<Self, ConfigError> {
        let (header, key) = match key {
            AssertionKey::Private(key) => (key.header(), key.key),
            AssertionKey::Secret(key) => (Header::new(Algorithm::HS256), key),
        };
        // Saturating: the range is checked by the caller, but no lifetime may wrap `exp`
        // around to `iat`.
        let lifetime = lifetime
            .as_secs()
            .saturating_add(u64::from(lifetime.subsec_nanos() > 0));
        let signer = Self {
            inner: Arc::new(SignerInner {
                header,
                key,
                client_id: client_id.to_owned(),
                audience,
                lifetime,
            }),
        };
        signer
            .sign_at(SystemTime::now())
            .map_err(|error| invalid_key(format!("cannot sign an assertion: {error}")))?;
        Ok(signer)
    }

    /// A new assertion, issued now.
    pub(crate) fn sign(&self) -> Result<String, SigningFailed> {
        self.sign_at(SystemTime::now())
    }

    fn sign_at(&self, now: SystemTime) -> Result<String, SigningFailed> {
        let inner = &*self.inner;
        let iat = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let claims = Claims {
            iss: &inner.client_id,
            sub: &inner.client_id,
            aud: &inner.audience,
            jti: new_jti(),
            iat,
            exp: iat.saturating_add(inner.lifetime),
        };
        jsonwebtoken::encode(&inner.header, &claims, &inner.key)
            .map_err(|error| SigningFailed(describe(&error)))
    }
}

/// 16 random bytes, base64url: 128 bits, so two assertions never share one.
fn new_jti() -> String {
    let mut bytes = [0_u8; 16];
    fastrand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An assertion could not be signed. Not expected once the key has been checked.
#[derive(Debug)]
pub(crate) struct SigningFailed(pub(crate) String);

impl fmt::Display for SigningFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot sign the client assertion: {}", self.0)
    }
}

impl std::error::Error for SigningFailed {}

fn invalid_key(reason: String) -> ConfigError {
    ConfigError::InvalidClientKey { reason }
}

/// "a P-256 EC", "an RSA", … (followed by "key").
fn key_kind(algorithm: SigningAlgorithm) -> &'static str {
    match algorithm {
        SigningAlgorithm::ES256 => "a P-256 EC",
        SigningAlgorithm::ES384 => "a P-384 EC",
        SigningAlgorithm::EdDSA => "an Ed25519",
        _ => "an RSA",
    }
}

/// `jsonwebtoken`'s error kind, which never carries key bytes.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidKeyFormat => "invalid key format".into(),
        ErrorKind::InvalidEcdsaKey => "invalid ECDSA key".into(),
        ErrorKind::InvalidEddsaKey => "invalid EdDSA key".into(),
        ErrorKind::InvalidRsaKey(reason) => format!("invalid RSA key: {}", excerpt(reason)),
        ErrorKind::InvalidAlgorithm => "the key does not fit the algorithm".into(),
        ErrorKind::InvalidAlgorithmName => "unknown algorithm".into(),
        _ => "the key was refused by the signer".into(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A short, printable piece of a value from the JWK's public members.
fn excerpt(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// The members of a JWK this module reads. The private ones are wiped on drop.
#[derive(Deserialize)]
struct JwkFields {
    kty: Option<String>,
    crv: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    key_ops: Option<Vec<String>>,
    keys: Option<serde::de::IgnoredAny>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    p: Option<String>,
    q: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
}

impl Drop for JwkFields {
    fn drop(&mut self) {
        for private in [
            &mut self.d,
            &mut self.p,
            &mut self.q,
            &mut self.dp,
            &mut self.dq,
            &mut self.qi,
        ] {
            private.zeroize();
        }
    }
}

impl JwkFields {
    fn algorithm(&self) -> Result<SigningAlgorithm, ConfigError> {
        let kty = self.kty.as_deref().unwrap_or_default();
        let crv = self.crv.as_deref().unwrap_or_default();
        let implied = match (kty, crv) {
            ("RSA", _) => SigningAlgorithm::RS256,
            ("EC", "P-256") => SigningAlgorithm::ES256,
            ("EC", "P-384") => SigningAlgorithm::ES384,
            ("OKP", "Ed25519") => SigningAlgorithm::EdDSA,
            ("oct", _) => {
                return Err(invalid_key(
                    "a symmetric (`oct`) JWK; `client_secret_jwt` signs with the client secret: \
                     use `ClientCredentials::builder` with `AuthMethod::ClientSecretJwt`"
                        .into(),
                ));
            }
            ("", _) => return Err(invalid_key("the JWK has no `kty`".into())),
            ("EC" | "OKP", _) => {
                return Err(invalid_key(format!(
                    "unsupported curve `{}`; supported: P-256, P-384, Ed25519",
                    excerpt(crv)
                )));
            }
            (other, _) => {
                return Err(invalid_key(format!(
                    "unsupported key type `{}`",
                    excerpt(other)
                )));
            }
        };
        let Some(alg) = self.alg.as_deref() else {
            return Ok(implied);
        };
        let named = SigningAlgorithm::from_name(alg).ok_or_else(|| {
            invalid_key(format!(
                "unsupported `alg` `{}`; supported: RS256, RS384, RS512, PS256, PS384, PS512, \
                 ES256, ES384, EdDSA",
                excerpt(alg)
            ))
        })?;
        let fits = if implied.is_rsa() {
            named.is_rsa()
        } else {
            named == implied
        };
        if !fits {
            return Err(invalid_key(format!(
                "the JWK's `alg` is {named} but the key is {} key",
                key_kind(implied)
            )));
        }
        Ok(named)
    }

    fn encoding_key(&self, algorithm: SigningAlgorithm) -> Result<EncodingKey, ConfigError> {
        let d = decode_member("d", self.d.as_deref())?;
        let der = match algorithm {
            SigningAlgorithm::ES256 => ec_pkcs8(&P256, &d, 32)?,
            SigningAlgorithm::ES384 => ec_pkcs8(&P384, &d, 48)?,
            SigningAlgorithm::EdDSA => ed25519_pkcs8(&d)?,
            _ => {
                let mut members = Vec::with_capacity(8);
                for (name, value) in [
                    ("n", &self.n),
                    ("e", &self.e),
                    ("d", &self.d),
                    ("p", &self.p),
                    ("q", &self.q),
                    ("dp", &self.dp),
                    ("dq", &self.dq),
                    ("qi", &self.qi),
                ] {
                    members.push(decode_member(name, value.as_deref())?);
                }
                rsa_pkcs1(&members)
            }
        };
        Ok(match algorithm {
            SigningAlgorithm::ES256 | SigningAlgorithm::ES384 => EncodingKey::from_ec_der(&der),
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_der(&der),
            _ => EncodingKey::from_rsa_der(&der),
        })
    }

    /// The public members, when present, must be those of the private key.
    fn check_public_members(
        &self,
        key: &EncodingKey,
        algorithm: SigningAlgorithm,
    ) -> Result<(), ConfigError> {
        use jsonwebtoken::jwk::AlgorithmParameters;
        let derived = Jwk::from_encoding_key(key, algorithm.jwt()).map_err(|error| {
            invalid_key(format!(
                "the private members do not form {} key ({})",
                key_kind(algorithm),
                describe(&error)
            ))
        })?;
        let pairs: Vec<(&str, &Option<String>, String)> = match derived.algorithm {
            AlgorithmParameters::EllipticCurve(ec) => {
                vec![("x", &self.x, ec.x), ("y", &self.y, ec.y)]
            }
            AlgorithmParameters::OctetKeyPair(okp) => vec![("x", &self.x, okp.x)],
            // `n` and `e` went into the key itself.
            _ => Vec::new(),
        };
        for (name, given, derived) in pairs {
            if let Some(given) = given
                && decode_public(given) != decode_public(&derived)
            {
                return Err(invalid_key(format!(
                    "the JWK's `{name}` does not belong to its private key `d`"
                )));
            }
        }
        Ok(())
    }
}

fn decode_member(name: &str, value: Option<&str>) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let value = value
        .ok_or_else(|| invalid_key(format!("the JWK has no `{name}`; a private key is needed")))?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map(Zeroizing::new)
        .map_err(|_| invalid_key(format!("the JWK's `{name}` is not base64url")))
}

fn decode_public(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok()
}

// DER, just enough for PKCS#8 EC and Ed25519 keys and PKCS#1 RSA keys.

/// `id-ecPublicKey` (1.2.840.10045.2.1), then the curve's OID.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (1.2.840.10045.3.1.7).
const P256: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1 (1.3.132.0.34).
const P384: [u8; 5] = [0x2b, 0x81, 0x04, 0x00, 0x22];
/// id-Ed25519 (1.3.101.112).
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

fn tlv(tag: u8, content: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(content.len() + 4));
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn sequence(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    tlv(0x30, &Zeroizing::new(parts.concat()))
}

/// A non-negative DER INTEGER from big-endian bytes.
fn unsigned(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let start = bytes.iter().take_while(|b| **b == 0).count();
    let trimmed = &bytes[start.min(bytes.len().saturating_sub(1))..];
    let mut content = Zeroizing::new(Vec::with_capacity(trimmed.len() + 1));
    if trimmed.is_empty() || trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

fn ec_pkcs8(curve: &[u8], d: &[u8], size: usize) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    if d.len() != size {
        return Err(invalid_key(format!(
            "the JWK's `d` is {} bytes, expected {size}",
            d.len()
        )));
    }
    // RFC 5915 ECPrivateKey (the public key is optional), inside RFC 5208 PKCS#8.
    let ec_private_key = sequence(&[&unsigned(&[1]), &tlv(0x04, d)]);
    let algorithm = sequence(&[&tlv(0x06, EC_PUBLIC_KEY), &tlv(0x06, curve)]);
    Ok(sequence(&[
        &unsigned(&[0]),
        &algorithm,
        &tlv(0x04, &ec_private_key),
    ]))
}

fn ed25519_pkcs8(d: &[u8]) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    if d.len() != 32 {
        return Err(invalid_key(format!(
            "the JWK's `d` is {} bytes, expected 32",
            d.len()
        )));
    }
    // RFC 8410: the private key is an OCTET STRING inside the PKCS#8 OCTET STRING.
    let algorithm = sequence(&[&tlv(0x06, ED25519)]);
    Ok(sequence(&[
        &unsigned(&[0]),
        &algorithm,
        &tlv(0x04, &tlv(0x04, d)),
    ]))
}

/// RFC 8017 RSAPrivateKey: version 0, then n, e, d, p, q, dp, dq, qi.
fn rsa_pkcs1(members: &[Zeroizing<Vec<u8>>]) -> Zeroizing<Vec<u8>> {
    let mut parts = vec![unsigned(&[0])];
    parts.extend(members.iter().map(|member| unsigned(member)));
    let parts: Vec<&[u8]> = parts.iter().map(|part| part.as_slice()).collect();
    sequence(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    use tower_client_credentials_testkit::keys::TestKey;

    #[test]
    fn der_integers_and_lengths() {
        assert_eq!(*unsigned(&[0]), [0x02, 0x01, 0x00]);
        assert_eq!(*unsigned(&[0, 0, 0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(*unsigned(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(*unsigned(&[]), [0x02, 0x01, 0x00]);
        let long = tlv(0x04, &[0xaa; 300]);
        assert_eq!(long[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    /// The PKCS#8 document built from a JWK's `d` is the one aws-lc-rs wrote for the same key,
    /// minus the optional public key.
    #[test]
    fn jwk_and_pem_give_the_same_signatures_checked_by_the_public_key() {
        let from_jwk = ClientKey::from_jwk(&TestKey::p256().private_jwk().to_string()).unwrap();
        let from_pem =
            ClientKey::from_pem(SigningAlgorithm::ES256, TestKey::p256().private_pem()).unwrap();
        assert_eq!(from_jwk.key_id(), Some("tcc-test-p256"));
        assert_eq!(from_pem.key_id(), None);
        let decoding =
            jsonwebtoken::DecodingKey::from_ec_pem(TestKey::p256().public_pem().as_bytes())
                .unwrap();
        for key in [from_jwk, from_pem] {
            let signer = AssertionSigner::new(
                "id",
                AssertionKey::Private(key),
                "aud".into(),
                Duration::from_millis(1500),
            )
            .unwrap();
            let jwt = signer.sign().unwrap();
            let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
            validation.set_audience(&["aud"]);
            let claims: serde_json::Value = jsonwebtoken::decode(&jwt, &decoding, &validation)
                .unwrap()
                .claims;
            // 1.5 s rounds up to 2.
            assert_eq!(
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                2
            );
        }
    }

    /// The builder refuses such lifetimes; the signer still never lets `exp` wrap around.
    #[test]
    fn the_longest_lifetime_saturates_exp() {
        let signer = AssertionSigner::new(
            "id",
            AssertionKey::Secret(EncodingKey::from_secret(b"secret")),
            "aud".into(),
            Duration::MAX,
        )
        .unwrap();
        let jwt = signer.sign().unwrap();
        let claims = jwt.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["exp"].as_u64(), Some(u64::MAX));
        assert!(claims["iat"].as_u64().unwrap() < u64::MAX);
    }

    #[test]
    fn a_mismatched_public_member_is_refused() {
        let mut jwk: serde_json::Value = TestKey::p256().private_jwk();
        let x = jwk["x"].as_str().unwrap().to_owned();
        let y = jwk["y"].as_str().unwrap().to_owned();
        jwk["x"] = y.into();
        jwk["y"] = x.into();
        let error = ClientKey::from_jwk(&jwk.to_string()).unwrap_err();
        assert!(error.to_string().contains("`x` does not belong"), "{error}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = ClientKey::from_jwk(&TestKey::p256().private_jwk().to_string()).unwrap();
        let d: serde_json::Value = TestKey::p256().private_jwk();
        let d = d["d"].as_str().unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(d), "{debug}");
        assert_eq!(
            debug,
            r#"ClientKey { algorithm: ES256, key_id: Some("tcc-test-p256"), key: "[redacted]" }"#
        );
    }
}
