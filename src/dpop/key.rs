use std::{fmt, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::signature::{SignatureEncoding, Signer};
use p256::pkcs8::DecodePrivateKey;
use rand_core::OsRng;
use rsa::{pkcs1::DecodeRsaPrivateKey, traits::PublicKeyParts};
use sha2::{Digest, Sha256};

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
/// thumbprint, never the private key. The key is held by the RustCrypto crates (`p256`,
/// `ed25519-dalek`, `rsa`), which wipe it when the last clone is dropped; ES256 proofs are
/// signed by `ring`, which keeps its own copy and does not promise to wipe it.
///
/// ```
/// use tower_client_credentials::{DpopAlgorithm, DpopKey};
///
/// // A new key for this process (ES256 unless you ask for another algorithm)...
/// let key = DpopKey::generate(DpopAlgorithm::ES256)?;
/// assert_eq!(key.thumbprint().len(), 43);
///
/// // ...or one you keep, so tokens stay bound to it across restarts.
/// let pem = std::fs::read("tests/keys/ed25519.private.pem")?;
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
    Es256 {
        /// Signs (ring's P-256 is several times faster than p256's).
        signer: ring::signature::EcdsaKeyPair,
        rng: ring::rand::SystemRandom,
        /// Kept for the JWK; the private half is zeroed when dropped.
        key: p256::ecdsa::SigningKey,
    },
    EdDsa(ed25519_dalek::SigningKey),
    Rs256(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

impl DpopKey {
    /// Generates a new key pair from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClientKey`] when the random source or the RSA key generation
    /// fails.
    pub fn generate(algorithm: DpopAlgorithm) -> Result<Self, ConfigError> {
        let signer = match algorithm {
            DpopAlgorithm::ES256 => SigningKey::es256(p256::ecdsa::SigningKey::random(&mut OsRng))?,
            DpopAlgorithm::EdDSA => {
                let mut seed = zeroize::Zeroizing::new([0_u8; 32]);
                rand_core::RngCore::try_fill_bytes(&mut OsRng, &mut *seed)
                    .map_err(|error| invalid(format!("no random source: {error}")))?;
                SigningKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            DpopAlgorithm::RS256 => {
                let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048)
                    .map_err(|error| invalid(format!("RSA key generation failed: {error}")))?;
                SigningKey::Rs256(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
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
        let text = std::str::from_utf8(pem).map_err(|_| invalid("the PEM is not UTF-8"))?;
        let wrong = |what: &str| invalid(format!("not a {algorithm} private key in {what} PEM"));
        let signer = match algorithm {
            DpopAlgorithm::ES256 => {
                let key = if text.contains("BEGIN EC PRIVATE KEY") {
                    use p256::elliptic_curve::SecretKey;
                    SecretKey::<p256::NistP256>::from_sec1_pem(text)
                        .map(Into::into)
                        .map_err(|_| wrong("SEC 1"))?
                } else {
                    p256::ecdsa::SigningKey::from_pkcs8_pem(text).map_err(|_| wrong("PKCS#8"))?
                };
                SigningKey::es256(key)?
            }
            DpopAlgorithm::EdDSA => SigningKey::EdDsa(
                ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|_| wrong("PKCS#8"))?,
            ),
            DpopAlgorithm::RS256 => {
                let key = if text.contains("BEGIN RSA PRIVATE KEY") {
                    rsa::RsaPrivateKey::from_pkcs1_pem(text).map_err(|_| wrong("PKCS#1"))?
                } else {
                    rsa::RsaPrivateKey::from_pkcs8_pem(text).map_err(|_| wrong("PKCS#8"))?
                };
                if key.size() < 256 {
                    return Err(invalid(format!(
                        "the RSA key has {} bits; DPoP needs at least 2048",
                        key.size() * 8
                    )));
                }
                SigningKey::Rs256(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
        };
        Self::from_signer(signer)
    }

    fn from_signer(signer: SigningKey) -> Result<Self, ConfigError> {
        let jwk = signer.public_jwk();
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()));
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
        key.sign(b"check");
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
        match &self.inner.signer {
            SigningKey::Es256 { signer, rng, key } => match signer.sign(rng, message) {
                Ok(signature) => signature.as_ref().to_vec(),
                // ring fails only when the system's random source does; p256 needs none.
                Err(_) => {
                    let signature: p256::ecdsa::Signature = key.sign(message);
                    signature.to_vec()
                }
            },
            SigningKey::EdDsa(key) => key.sign(message).to_vec(),
            SigningKey::Rs256(key) => key.sign(message).to_vec(),
        }
    }
}

impl SigningKey {
    fn es256(key: p256::ecdsa::SigningKey) -> Result<Self, ConfigError> {
        let rng = ring::rand::SystemRandom::new();
        let private = zeroize::Zeroizing::new(key.to_bytes());
        let public = key.verifying_key().to_encoded_point(false);
        let signer = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &private,
            public.as_bytes(),
            &rng,
        )
        .map_err(|error| invalid(format!("P-256 key rejected: {error}")))?;
        Ok(Self::Es256 { signer, rng, key })
    }

    fn algorithm(&self) -> DpopAlgorithm {
        match self {
            Self::Es256 { .. } => DpopAlgorithm::ES256,
            Self::EdDsa(_) => DpopAlgorithm::EdDSA,
            Self::Rs256(_) => DpopAlgorithm::RS256,
        }
    }

    /// The public JWK with exactly the required members in lexicographic order, which is also
    /// the input of its RFC 7638 thumbprint. Every value is base64url or a fixed name, so no
    /// escaping is needed.
    fn public_jwk(&self) -> String {
        match self {
            Self::Es256 { key, .. } => {
                let point = key.verifying_key().to_encoded_point(false);
                let (x, y) = (point.x(), point.y());
                format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(x.map(|x| &x[..]).unwrap_or_default()),
                    URL_SAFE_NO_PAD.encode(y.map(|y| &y[..]).unwrap_or_default()),
                )
            }
            Self::EdDsa(key) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
            ),
            Self::Rs256(key) => {
                let private: &rsa::RsaPrivateKey = (**key).as_ref();
                let public = private.to_public_key();
                format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
                    URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
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

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidClientKey {
        reason: format!("DPoP key: {}", reason.into()),
    }
}
