use std::{fmt, sync::Arc};

use aws_lc_rs::{
    digest::{SHA256, digest},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
        RsaKeyPair,
    },
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::error::ConfigError;

/// The algorithm a [`DpopKey`] signs proofs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopAlgorithm {
    /// ECDSA on P-256 with SHA-256: the default, and what every DPoP server supports.
    ES256,
    /// Ed25519: the fastest to sign.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256, for servers that take nothing else. Generating a key
    /// takes a while (an RSA-2048 key: tenths of a second in release builds, seconds in debug
    /// builds) and every proof costs a 2048-bit private-key operation.
    RS256,
}

impl DpopAlgorithm {
    /// The algorithm's JWS name (`ES256`, `EdDSA`, `RS256`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
        }
    }
}

impl fmt::Display for DpopAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key pair a client proves possession of with DPoP (RFC 9449).
///
/// Its public half goes, as a JWK, in the header of every proof; the authorization server binds
/// the tokens it issues to that key's [thumbprint](Self::thumbprint) (`cnf.jkt`). Cheap to
/// clone (the key is shared, not copied). Its `Debug` output shows the algorithm and the
/// thumbprint, never the private key. The key is held by aws-lc-rs (the crate's one crypto
/// backend), which frees it with AWS-LC's cleansing free when the last clone is dropped.
///
/// ```
/// use tower_client_credentials::{DpopAlgorithm, DpopKey};
///
/// // A new key for this process (ES256 unless you ask for another algorithm)...
/// let key = DpopKey::generate(DpopAlgorithm::ES256)?;
/// assert_eq!(key.thumbprint().len(), 43);
///
/// // ...or one you keep, so tokens stay bound to it across restarts.
/// # let pem = tower_client_credentials_testkit::keys::TestKey::ed25519().private_pem().into_bytes();
/// // let pem = std::fs::read("dpop-key.pem")?;
/// let key = DpopKey::from_pem(DpopAlgorithm::EdDSA, &pem)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    signer: SigningKey,
    /// The public JWK's members in RFC 7638 order, as JSON.
    jwk: String,
    thumbprint: String,
    /// `base64url({"typ":"dpop+jwt","alg":…,"jwk":…})`, the first part of every proof.
    encoded_header: String,
}

enum SigningKey {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

impl DpopKey {
    /// Generates a new key pair from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClientKey`] when the key generation fails.
    pub fn generate(algorithm: DpopAlgorithm) -> Result<Self, ConfigError> {
        let failed = |_| invalid(format!("{algorithm} key generation failed"));
        let signer = match algorithm {
            DpopAlgorithm::ES256 => SigningKey::Es256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?,
            ),
            DpopAlgorithm::EdDSA => SigningKey::EdDsa(Ed25519KeyPair::generate().map_err(failed)?),
            DpopAlgorithm::RS256 => {
                SigningKey::Rs256(RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?)
            }
        };
        Self::from_signer(signer)
    }

    /// Loads a private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`) for every algorithm, SEC 1
    /// (`BEGIN EC PRIVATE KEY`) for ES256, PKCS#1 (`BEGIN RSA PRIVATE KEY`) for RS256.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClientKey`] when the PEM holds no key of that algorithm (an RSA
    /// key shorter than 2048 bits included). The message never contains key material.
    pub fn from_pem(algorithm: DpopAlgorithm, pem: &[u8]) -> Result<Self, ConfigError> {
        let parsed = pem::parse(pem).map_err(|_| invalid("no PEM block found"))?;
        let tag = parsed.tag().to_owned();
        let der = Zeroizing::new(parsed.into_contents());
        let wrong = |what: &str| invalid(format!("not a {algorithm} private key in {what} PEM"));
        let signer = match (algorithm, tag.as_str()) {
            // `from_private_key_der` reads SEC 1 (RFC 5915) and PKCS#8 alike.
            (DpopAlgorithm::ES256, "EC PRIVATE KEY" | "PRIVATE KEY") => SigningKey::Es256(
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|_| {
                        wrong(if tag == "PRIVATE KEY" {
                            "PKCS#8"
                        } else {
                            "SEC 1"
                        })
                    })?,
            ),
            (DpopAlgorithm::EdDSA, "PRIVATE KEY") => SigningKey::EdDsa(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| wrong("PKCS#8"))?,
            ),
            (DpopAlgorithm::RS256, "RSA PRIVATE KEY") => {
                SigningKey::Rs256(RsaKeyPair::from_der(&der).map_err(|_| rsa_refused("PKCS#1"))?)
            }
            (DpopAlgorithm::RS256, "PRIVATE KEY") => {
                SigningKey::Rs256(RsaKeyPair::from_pkcs8(&der).map_err(|_| rsa_refused("PKCS#8"))?)
            }
            _ => return Err(wrong(&format!("a `{}`", printable(&tag)))),
        };
        if let SigningKey::Rs256(key) = &signer
            && key.public_modulus_len() < 256
        {
            return Err(invalid(format!(
                "the RSA key has {} bits; DPoP needs at least 2048",
                key.public_modulus_len() * 8
            )));
        }
        Self::from_signer(signer)
    }

    fn from_signer(signer: SigningKey) -> Result<Self, ConfigError> {
        let jwk = signer.public_jwk();
        let thumbprint = URL_SAFE_NO_PAD.encode(digest(&SHA256, jwk.as_bytes()));
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{jwk}}}"#,
            signer.algorithm().as_str()
        );
        let key = Self {
            inner: Arc::new(KeyInner {
                signer,
                encoded_header: URL_SAFE_NO_PAD.encode(header),
                jwk,
                thumbprint,
            }),
        };
        // Sign once, so that a key that cannot sign is a configuration error.
        key.try_sign(b"check")
            .ok_or_else(|| invalid("the key cannot sign"))?;
        Ok(key)
    }

    /// The algorithm proofs are signed with.
    pub fn algorithm(&self) -> DpopAlgorithm {
        self.inner.signer.algorithm()
    }

    /// The public key as a JWK (JSON), as it appears in each proof's header.
    pub fn public_jwk(&self) -> &str {
        &self.inner.jwk
    }

    /// The key's JWK SHA-256 thumbprint (RFC 7638), base64url: the `jkt` that the server
    /// binds tokens to (`cnf.jkt` in a JWT access token or an introspection response).
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// The base64url-encoded JWS header shared by every proof.
    pub(crate) fn encoded_header(&self) -> &str {
        &self.inner.encoded_header
    }

    /// Signs `message` (`header.claims`), returning the raw JWS signature.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        // A key that signed once at construction signs again: AWS-LC fails only on an
        // allocation failure or a broken random source, and an empty signature is refused by
        // the server rather than panicking here.
        self.try_sign(message).unwrap_or_default()
    }

    fn try_sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        match &self.inner.signer {
            SigningKey::Es256(key) => key
                .sign(&SystemRandom::new(), message)
                .ok()
                .map(|signature| signature.as_ref().to_vec()),
            SigningKey::EdDsa(key) => Some(key.sign(message).as_ref().to_vec()),
            SigningKey::Rs256(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .ok()
                .map(|()| signature)
            }
        }
    }
}

impl SigningKey {
    fn algorithm(&self) -> DpopAlgorithm {
        match self {
            Self::Es256(_) => DpopAlgorithm::ES256,
            Self::EdDsa(_) => DpopAlgorithm::EdDSA,
            Self::Rs256(_) => DpopAlgorithm::RS256,
        }
    }

    /// The public JWK with exactly the required members in lexicographic order, which is also
    /// the input of its RFC 7638 thumbprint. Every value is base64url or a fixed name, so no
    /// escaping is needed.
    fn public_jwk(&self) -> String {
        match self {
            Self::Es256(key) => {
                // The uncompressed point: 0x04 ‖ x ‖ y, 32 bytes each.
                let point = key.public_key().as_ref();
                let (x, y) = point
                    .get(1..)
                    .unwrap_or_default()
                    .split_at(32.min(point.len() / 2));
                format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(x),
                    URL_SAFE_NO_PAD.encode(y),
                )
            }
            Self::EdDsa(key) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(key.public_key().as_ref())
            ),
            Self::Rs256(key) => {
                let public = key.public_key();
                format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                    URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                )
            }
        }
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("algorithm", &self.algorithm())
            .field("thumbprint", &self.thumbprint())
            .field("private_key", &"[redacted]")
            .finish()
    }
}

fn rsa_refused(what: &str) -> ConfigError {
    invalid(format!(
        "not an RS256 private key in {what} PEM, or one shorter than 2048 bits"
    ))
}

/// A PEM label from the user's file, shown in an error only if it is a plain label.
fn printable(label: &str) -> &str {
    if label.len() <= 40
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ')
    {
        label
    } else {
        "PEM"
    }
}

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidClientKey {
        reason: format!("DPoP key: {}", reason.into()),
    }
}
