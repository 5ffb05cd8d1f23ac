//! Throwaway key pairs made when a test asks for them, in the formats client-assertion and DPoP
//! keys come in: PKCS#8 and SEC1 PEM, SubjectPublicKeyInfo PEM, and private JWKs.
//!
//! No key is committed to the repository: each test process makes its own, once per kind
//! ([`TestKey::p256`] returns the same key at every call in a process, [`TestKey::new_p256`] a
//! new one). They protect nothing; they exist so that a test can sign with a key and check the
//! signature with the matching public key, or feed a parser every format a user might have.
//!
//! ```
//! use tower_client_credentials_testkit::keys::TestKey;
//!
//! let key = TestKey::p256();
//! assert!(key.private_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
//! assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
//! assert_eq!(key.private_jwk()["crv"], "P-256");
//! ```

use std::sync::OnceLock;

use aws_lc_rs::{
    encoding::{
        AsBigEndian, AsDer, Curve25519SeedBin, EcPrivateKeyBin, EcPrivateKeyRfc5915Der, Pkcs8V1Der,
        PublicKeyX509Der,
    },
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _,
    },
};
use base64::Engine as _;
use serde_json::{Value, json};

/// One key pair in every format a test needs. See the [module documentation](self).
#[derive(Clone)]
pub struct TestKey {
    name: &'static str,
    pkcs8: Vec<u8>,
    sec1: Option<Vec<u8>>,
    spki: Vec<u8>,
    jwk: Value,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Test keys protect nothing, but the habit is the crate's: no key material in Debug.
        f.debug_struct("TestKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// The process's P-256 (ES256) key.
    pub fn p256() -> &'static Self {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(Self::new_p256)
    }

    /// The process's P-384 (ES384) key.
    pub fn p384() -> &'static Self {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| ec("p384", "P-384", "ES384", &ECDSA_P384_SHA384_FIXED_SIGNING))
    }

    /// The process's Ed25519 (EdDSA) key.
    pub fn ed25519() -> &'static Self {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(Self::new_ed25519)
    }

    /// The process's 2048-bit RSA (RS256) key.
    pub fn rsa2048() -> &'static Self {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(rsa2048)
    }

    /// A new P-256 key, another at every call.
    pub fn new_p256() -> Self {
        ec("p256", "P-256", "ES256", &ECDSA_P256_SHA256_FIXED_SIGNING)
    }

    /// A new Ed25519 key, another at every call.
    pub fn new_ed25519() -> Self {
        let key = Ed25519KeyPair::generate().expect("an Ed25519 key");
        let pkcs8 = key.to_pkcs8v1().expect("PKCS#8").as_ref().to_vec();
        let seed = key.seed().expect("the seed");
        let seed: Curve25519SeedBin<'_> = seed.as_be_bytes().expect("the seed's bytes");
        let spki: PublicKeyX509Der<'_> = key.public_key().as_der().expect("SPKI");
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(key.public_key().as_ref()),
            "d": b64(seed.as_ref()),
        });
        Self::new("ed25519", "EdDSA", pkcs8, None, spki.as_ref().to_vec(), jwk)
    }

    fn new(
        name: &'static str,
        alg: &str,
        pkcs8: Vec<u8>,
        sec1: Option<Vec<u8>>,
        spki: Vec<u8>,
        mut jwk: Value,
    ) -> Self {
        jwk["kid"] = Value::String(format!("tcc-test-{name}"));
        jwk["alg"] = Value::String(alg.to_owned());
        jwk["use"] = Value::String("sig".to_owned());
        Self {
            name,
            pkcs8,
            sec1,
            spki,
            jwk,
        }
    }

    /// The private key as PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// An RSA key's PKCS#1 `RSAPrivateKey` DER, what `jsonwebtoken`'s RSA DER keys take.
    ///
    /// Meaningful for [`rsa2048`](Self::rsa2048) only.
    pub fn rsa_pkcs1_der(&self) -> Vec<u8> {
        pkcs1_of(&self.pkcs8).to_vec()
    }

    /// The private key as PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub fn private_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The private key as SEC1 PEM (`BEGIN EC PRIVATE KEY`), for elliptic-curve keys.
    ///
    /// # Panics
    ///
    /// For an Ed25519 or RSA key, which have no SEC1 form.
    pub fn sec1_pem(&self) -> String {
        let der = self.sec1.as_ref().expect("SEC1 is a format of EC keys");
        pem("EC PRIVATE KEY", der)
    }

    /// The public key as SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub fn public_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki)
    }

    /// The private key as a JWK (RFC 7517) with `kid` (`tcc-test-p256`, `-p384`, `-ed25519` or `-rsa`), `alg` and `use`.
    pub fn private_jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The public members of [`private_jwk`](Self::private_jwk) only.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.jwk.clone();
        if let Some(members) = jwk.as_object_mut() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                members.remove(private);
            }
        }
        jwk
    }
}

fn ec(
    name: &'static str,
    crv: &str,
    alg: &str,
    algorithm: &'static EcdsaSigningAlgorithm,
) -> TestKey {
    let key = EcdsaKeyPair::generate(algorithm).expect("an EC key");
    let pkcs8 = key.to_pkcs8v1().expect("PKCS#8").as_ref().to_vec();
    let private = key.private_key();
    let d: EcPrivateKeyBin<'_> = private.as_be_bytes().expect("the private scalar");
    let sec1: EcPrivateKeyRfc5915Der<'_> = private.as_der().expect("SEC1");
    let spki: PublicKeyX509Der<'_> = key.public_key().as_der().expect("SPKI");
    // The uncompressed point: 0x04, then x and y of equal length.
    let point = key.public_key().as_ref();
    let (x, y) = point[1..].split_at((point.len() - 1) / 2);
    let jwk = json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y), "d": b64(d.as_ref())});
    TestKey::new(
        name,
        alg,
        pkcs8,
        Some(sec1.as_ref().to_vec()),
        spki.as_ref().to_vec(),
        jwk,
    )
}

fn rsa2048() -> TestKey {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("an RSA key");
    let pkcs8: Pkcs8V1Der<'_> = key.as_der().expect("PKCS#8");
    let spki: PublicKeyX509Der<'_> = key.public_key().as_der().expect("SPKI");
    // PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2): version, then n, e, d, p, q, dp, dq, qi, the
    // JWK's members in that order.
    let pkcs1 = pkcs1_of(pkcs8.as_ref());
    let mut fields = der::sequence(pkcs1);
    let mut jwk = json!({"kty": "RSA"});
    let (_version, rest) = der::element(fields);
    fields = rest;
    for member in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        let (integer, rest) = der::element(fields);
        fields = rest;
        // DER integers are signed: a leading zero byte keeps a high bit from reading negative.
        let unsigned = integer.strip_prefix(&[0]).unwrap_or(integer);
        jwk[member] = Value::String(b64(unsigned));
    }
    TestKey::new(
        "rsa",
        "RS256",
        pkcs8.as_ref().to_vec(),
        None,
        spki.as_ref().to_vec(),
        jwk,
    )
}

/// The PKCS#1 key inside a PKCS#8 `PrivateKeyInfo`:
/// `SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING { RSAPrivateKey } }`.
fn pkcs1_of(pkcs8: &[u8]) -> &[u8] {
    let info = der::sequence(pkcs8);
    let (_version, rest) = der::element(info);
    let (_algorithm, rest) = der::element(rest);
    der::element(rest).0
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// PEM (RFC 7468): the label, then base64 in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Just enough DER to walk the keys aws-lc-rs itself wrote.
mod der {
    /// The content of the element at the start of `input`, and what follows it.
    pub(super) fn element(input: &[u8]) -> (&[u8], &[u8]) {
        let first = input[1];
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            let len = input[2..2 + n]
                .iter()
                .fold(0_usize, |len, byte| (len << 8) | usize::from(*byte));
            (len, 2 + n)
        };
        (&input[header..header + len], &input[header + len..])
    }

    /// The content of the SEQUENCE (or OCTET STRING) at the start of `input`.
    pub(super) fn sequence(input: &[u8]) -> &[u8] {
        element(input).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each format holds the same key: a signature made with the PKCS#8 key checks out with
    /// the SPKI public key, and the JWK's public members are the SPKI's.
    #[test]
    fn every_format_holds_the_same_key() {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, decode, encode};

        let cases: [(&TestKey, Algorithm); 4] = [
            (TestKey::p256(), Algorithm::ES256),
            (TestKey::p384(), Algorithm::ES384),
            (TestKey::ed25519(), Algorithm::EdDSA),
            (TestKey::rsa2048(), Algorithm::RS256),
        ];
        for (key, algorithm) in cases {
            let pem = key.private_pem();
            let encoding = match algorithm {
                Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
                Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
                _ => EncodingKey::from_ec_pem(pem.as_bytes()),
            }
            .expect("the PEM key loads");
            let claims = json!({"sub": "x", "exp": 4_000_000_000_u64});
            let token =
                encode(&jsonwebtoken::Header::new(algorithm), &claims, &encoding).expect("signed");

            let public = key.public_pem();
            let by_pem = match algorithm {
                Algorithm::EdDSA => DecodingKey::from_ed_pem(public.as_bytes()),
                Algorithm::RS256 => DecodingKey::from_rsa_pem(public.as_bytes()),
                _ => DecodingKey::from_ec_pem(public.as_bytes()),
            }
            .expect("the public PEM loads");
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(key.public_jwk()).expect("a JWK");
            let by_jwk = DecodingKey::from_jwk(&jwk).expect("the JWK loads");
            let validation = Validation::new(algorithm);
            decode::<Value>(&token, &by_pem, &validation).expect("checked with the SPKI");
            decode::<Value>(&token, &by_jwk, &validation).expect("checked with the JWK");
        }
    }

    #[test]
    fn the_process_keys_are_stable_and_new_keys_differ() {
        assert_eq!(TestKey::p256().private_pem(), TestKey::p256().private_pem());
        assert_ne!(
            TestKey::new_p256().private_pem(),
            TestKey::new_p256().private_pem()
        );
        assert!(
            TestKey::p256()
                .sec1_pem()
                .starts_with("-----BEGIN EC PRIVATE KEY-----\n")
        );
        let rsa = TestKey::rsa2048().private_jwk();
        for member in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                rsa[member].as_str().is_some_and(|v| !v.is_empty()),
                "{member}"
            );
        }
        assert_eq!(rsa["e"], "AQAB");
        assert!(!format!("{:?}", TestKey::p256()).contains(&TestKey::p256().private_pem()[30..60]));
    }
}
