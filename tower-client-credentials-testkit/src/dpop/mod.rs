//! The server side of DPoP ([RFC 9449]): the checks a server makes on a `DPoP` proof JWT
//! ([RFC 9449 §4.3]), shared by [`MockAuthServer`](super::MockAuthServer),
//! [`MockApi`](super::MockApi) and the interop resource server.
//!
//! [`verify_proof`] checks one proof against the request it came with and returns the
//! thumbprint of the proof's key ([RFC 7638]), to which a token is bound (`cnf.jkt`). What
//! depends on server state, such as the `jti` replay check ([`JtiCache`]), the comparison of
//! the thumbprint with the token's `jkt`, and which nonce is current, is left to the caller.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::Method;
//! use tower_client_credentials_testkit::dpop::{ProofError, verify_proof};
//!
//! let error = verify_proof(
//!     "not-a-jwt",
//!     &Method::GET,
//!     "http://127.0.0.1:8080/orders",
//!     Some("access-token"),
//!     None,
//!     SystemTime::now(),
//!     Duration::from_secs(60),
//! )
//! .unwrap_err();
//! assert_eq!(error, ProofError::Malformed);
//! assert_eq!(error.error_code(), "invalid_dpop_proof");
//! ```
//!
//! [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
//! [RFC 9449 §4.3]: https://www.rfc-editor.org/rfc/rfc9449#section-4.3
//! [RFC 7638]: https://www.rfc-editor.org/rfc/rfc7638

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, Method};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash},
};
use serde_json::{Map, Value};

/// The `DPoP` request header, which carries the proof ([RFC 9449 §4.1]).
///
/// [RFC 9449 §4.1]: https://www.rfc-editor.org/rfc/rfc9449#section-4.1
pub const DPOP_HEADER: HeaderName = HeaderName::from_static("dpop");

/// The `DPoP-Nonce` response header, which carries a server-provided nonce
/// ([RFC 9449 §8]).
///
/// [RFC 9449 §8]: https://www.rfc-editor.org/rfc/rfc9449#section-8
pub const DPOP_NONCE_HEADER: HeaderName = HeaderName::from_static("dpop-nonce");

/// The default tolerance on a proof's `iat`, either side of the server's clock.
pub const DEFAULT_IAT_WINDOW: Duration = Duration::from_secs(60);

/// The proof algorithms the fixtures accept, as advertised in `DPoP algs="…"` challenges.
pub const SUPPORTED_ALGORITHMS: [&str; 3] = ["ES256", "EdDSA", "RS256"];

/// The JWK members that only a private (or symmetric) key has ([RFC 7518 §6]).
///
/// [RFC 7518 §6]: https://www.rfc-editor.org/rfc/rfc7518#section-6
const PRIVATE_JWK_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

/// Why a DPoP proof was refused. [`Display`](fmt::Display) gives a description fit for
/// `error_description`; [`error_code`](Self::error_code) the OAuth error code.
///
/// No variant holds the proof, the access token or anything derived from them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProofError {
    /// The request had no `DPoP` header.
    Missing,
    /// The request had more than one `DPoP` header.
    Multiple,
    /// Not a compact JWS of three base64url parts whose header and payload are JSON objects.
    Malformed,
    /// The `typ` header is not `dpop+jwt`.
    Type,
    /// The `alg` header is missing, `none`, symmetric or not supported.
    UnsupportedAlgorithm,
    /// The `jwk` header is missing.
    MissingJwk,
    /// The `jwk` header holds private key members (`d`, `p`, `q`, …) or a symmetric key.
    PrivateKey,
    /// The `jwk` header is not a usable public key, or its type does not fit `alg`.
    InvalidJwk,
    /// The signature does not verify with the `jwk` header's key.
    Signature,
    /// A required claim is missing, empty or of the wrong type (`jti`, `htm`, `htu`, `iat`).
    MissingClaim(&'static str),
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URL (query and fragment ignored, after normalisation).
    Url,
    /// `iat` is outside the accepted window around the server's clock.
    IssuedAt,
    /// A nonce is required and the proof has none.
    MissingNonce,
    /// The proof's nonce is not the current one.
    StaleNonce,
    /// An access token came with the request and the proof has no `ath`.
    MissingAth,
    /// `ath` is not the base64url SHA-256 of the access token.
    Ath,
    /// The proof's `jti` was seen before.
    Replay,
    /// The proof's key is not the key the access token is bound to.
    KeyMismatch,
    /// The server was told to refuse this proof.
    Forced,
}

impl ProofError {
    /// The OAuth error code: `use_dpop_nonce` for a missing or stale nonce, else
    /// `invalid_dpop_proof` ([RFC 9449 §§ 5, 7.1, 8]).
    pub fn error_code(&self) -> &'static str {
        if self.is_nonce_error() {
            "use_dpop_nonce"
        } else {
            "invalid_dpop_proof"
        }
    }

    /// Whether the server should answer `use_dpop_nonce` with a fresh `DPoP-Nonce`.
    pub fn is_nonce_error(&self) -> bool {
        matches!(self, Self::MissingNonce | Self::StaleNonce)
    }

    /// A description for `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "a DPoP proof is required",
            Self::Multiple => "more than one DPoP header",
            Self::Malformed => "the DPoP proof is not a well-formed JWT",
            Self::Type => "the DPoP proof typ is not dpop+jwt",
            Self::UnsupportedAlgorithm => "the DPoP proof alg is not a supported asymmetric alg",
            Self::MissingJwk => "the DPoP proof has no jwk header",
            Self::PrivateKey => "the DPoP proof jwk is not a public key",
            Self::InvalidJwk => "the DPoP proof jwk is invalid or does not fit alg",
            Self::Signature => "the DPoP proof signature is invalid",
            Self::MissingClaim("jti") => "the DPoP proof has no jti",
            Self::MissingClaim("htm") => "the DPoP proof has no htm",
            Self::MissingClaim("htu") => "the DPoP proof has no htu",
            Self::MissingClaim("iat") => "the DPoP proof has no iat",
            Self::MissingClaim(_) => "the DPoP proof lacks a required claim",
            Self::Method => "the DPoP proof htm does not match the request method",
            Self::Url => "the DPoP proof htu does not match the request URL",
            Self::IssuedAt => "the DPoP proof iat is outside the accepted window",
            Self::MissingNonce => "a DPoP nonce is required",
            Self::StaleNonce => "the DPoP nonce is not the current one",
            Self::MissingAth => "the DPoP proof has no ath",
            Self::Ath => "the DPoP proof ath does not match the access token",
            Self::Replay => "the DPoP proof jti was used before",
            Self::KeyMismatch => "the DPoP proof key is not the key the access token is bound to",
            Self::Forced => "the DPoP proof was rejected",
        }
    }
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for ProofError {}

/// A proof that passed [`verify_proof`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedProof {
    /// The JWK SHA-256 thumbprint of the proof's key ([RFC 7638]), base64url: the value of
    /// `cnf.jkt` for a token bound to this key.
    ///
    /// [RFC 7638]: https://www.rfc-editor.org/rfc/rfc7638
    pub jkt: String,
    /// The `jti` claim.
    pub jti: String,
    /// The `iat` claim, in whole seconds since the Unix epoch (rounded down).
    pub iat: i64,
    /// The `nonce` claim, if any.
    pub nonce: Option<String>,
    /// The `alg` header.
    pub alg: String,
}

/// A proof's header and claims, decoded but not verified, for tests to look at.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DecodedProof {
    /// The JOSE header.
    pub header: Value,
    /// The claims.
    pub claims: Value,
}

impl DecodedProof {
    /// Decodes the header and claims of `proof` without checking anything else.
    pub fn decode(proof: &str) -> Option<Self> {
        let (header, claims, _) = split(proof).ok()?;
        Some(Self {
            header: Value::Object(header),
            claims: Value::Object(claims),
        })
    }

    /// The claim `name` as a string.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// The one `DPoP` header of a request: [`ProofError::Missing`] without one,
/// [`ProofError::Multiple`] with several ([RFC 9449 §4.3], first two checks).
///
/// [RFC 9449 §4.3]: https://www.rfc-editor.org/rfc/rfc9449#section-4.3
pub fn proof_header(headers: &HeaderMap) -> Result<&str, ProofError> {
    let mut values = headers.get_all(DPOP_HEADER).iter();
    let first = values.next().ok_or(ProofError::Missing)?;
    if values.next().is_some() {
        return Err(ProofError::Multiple);
    }
    first.to_str().map_err(|_| ProofError::Malformed)
}

/// `base64url(SHA-256(access_token))`, the `ath` claim of a proof sent with `access_token`.
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        access_token.as_bytes(),
    ))
}

/// Checks a DPoP proof as [RFC 9449 §4.3] says a server does, for a request with `method` to
/// `url` (the URL as the server sees it; its query and fragment are ignored), at `now` on the
/// server's clock:
///
/// 1. one well-formed compact JWS, header and payload JSON objects;
/// 2. `typ` is `dpop+jwt` (compared as a media type: case-insensitively, `application/`
///    optional, [RFC 7515 §4.1.9]);
/// 3. `alg` is one of [`SUPPORTED_ALGORITHMS`] (never `none` or an HMAC);
/// 4. `jwk` is present, a public key (no private members), and of the type `alg` needs;
/// 5. the signature verifies with that key;
/// 6. `jti` is a non-empty string; `htm` equals `method`; `htu` equals `url` after
///    syntax- and scheme-based normalisation ([RFC 3986 §6.2.2–6.2.3], see
///    [`normalize_htu`]) and without query and fragment; `iat` is a number within `window`
///    of `now`;
/// 7. with `access_token`, `ath` is present and equals [`access_token_hash`];
/// 8. with `expected_nonce`, `nonce` is present ([`ProofError::MissingNonce`]) and equal to
///    it ([`ProofError::StaleNonce`]). The nonce is checked last, so a nonce error means
///    everything else was right.
///
/// `jti` replay ([`JtiCache`]) and the token's key binding are the caller's.
///
/// # Errors
///
/// The first check that failed.
///
/// [RFC 9449 §4.3]: https://www.rfc-editor.org/rfc/rfc9449#section-4.3
/// [RFC 7515 §4.1.9]: https://www.rfc-editor.org/rfc/rfc7515#section-4.1.9
/// [RFC 3986 §6.2.2–6.2.3]: https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2
pub fn verify_proof(
    proof: &str,
    method: &Method,
    url: &str,
    access_token: Option<&str>,
    expected_nonce: Option<&str>,
    now: SystemTime,
    window: Duration,
) -> Result<VerifiedProof, ProofError> {
    let (header, claims, (message, signature)) = split(proof)?;

    let typ = header
        .get("typ")
        .and_then(Value::as_str)
        .ok_or(ProofError::Type)?
        .to_ascii_lowercase();
    if typ.strip_prefix("application/").unwrap_or(&typ) != "dpop+jwt" {
        return Err(ProofError::Type);
    }

    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(ProofError::UnsupportedAlgorithm)?;
    let alg = match alg_name {
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        "RS256" => Algorithm::RS256,
        _ => return Err(ProofError::UnsupportedAlgorithm),
    };

    let jwk_value = header.get("jwk").ok_or(ProofError::MissingJwk)?;
    let jwk_object = jwk_value.as_object().ok_or(ProofError::InvalidJwk)?;
    if PRIVATE_JWK_MEMBERS
        .iter()
        .any(|member| jwk_object.contains_key(*member))
    {
        return Err(ProofError::PrivateKey);
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|_| ProofError::InvalidJwk)?;
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        _ => false,
    };
    if !fits {
        return Err(ProofError::InvalidJwk);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| ProofError::InvalidJwk)?;
    let jkt = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| ProofError::InvalidJwk)?;
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Err(ProofError::Signature),
    }

    let string_claim = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .ok_or(ProofError::MissingClaim(name))
    };
    let jti = string_claim("jti")?;
    let htm = string_claim("htm")?;
    let htu = string_claim("htu")?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .ok_or(ProofError::MissingClaim("iat"))?;

    if htm != method.as_str() {
        return Err(ProofError::Method);
    }
    match (normalize_htu(htu), normalize_htu(url)) {
        (Some(claimed), Some(actual)) if claimed == actual => {}
        _ => return Err(ProofError::Url),
    }
    let now_secs = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    if (iat - now_secs).abs() > window.as_secs_f64() {
        return Err(ProofError::IssuedAt);
    }

    if let Some(access_token) = access_token {
        let ath = claims
            .get("ath")
            .and_then(Value::as_str)
            .ok_or(ProofError::MissingAth)?;
        if ath != access_token_hash(access_token) {
            return Err(ProofError::Ath);
        }
    }

    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(nonce)) => Some(nonce.clone()),
        Some(_) => return Err(ProofError::Malformed),
    };
    if let Some(expected) = expected_nonce {
        match &nonce {
            None => return Err(ProofError::MissingNonce),
            Some(nonce) if nonce != expected => return Err(ProofError::StaleNonce),
            Some(_) => {}
        }
    }

    Ok(VerifiedProof {
        jkt,
        jti: jti.to_owned(),
        // `iat` was compared with the clock above, so it is a sane number.
        #[allow(clippy::cast_possible_truncation)]
        iat: iat.floor() as i64,
        nonce,
        alg: alg_name.to_owned(),
    })
}

type Split<'a> = (Map<String, Value>, Map<String, Value>, (&'a str, &'a str));

/// The header, the claims, and (signing input, signature) of a compact JWS.
fn split(proof: &str) -> Result<Split<'_>, ProofError> {
    let proof = proof.trim_matches(|c| c == ' ' || c == '\t');
    let mut parts = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed);
    };
    let object = |part: &str| -> Result<Map<String, Value>, ProofError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| ProofError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)
    };
    let header_object = object(header)?;
    let claims = object(payload)?;
    if signature.is_empty() || URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err(ProofError::Malformed);
    }
    let message = &proof[..header.len() + 1 + payload.len()];
    Ok((header_object, claims, (message, signature)))
}

/// `url` normalised for the `htu` comparison, without its query and fragment, or `None` when
/// it is not an absolute `scheme://authority/path` URL.
///
/// Syntax-based ([RFC 3986 §6.2.2]): scheme and host lowercased, percent-encodings
/// uppercased, percent-encoded unreserved characters decoded, dot segments removed.
/// Scheme-based ([RFC 3986 §6.2.3]): an empty or default port (80 for `http`, 443 for
/// `https`) removed, an empty path made `/`.
///
/// ```
/// use tower_client_credentials_testkit::dpop::normalize_htu;
///
/// assert_eq!(
///     normalize_htu("HTTP://Example.COM:80/a/./b/../%7euser?q=1#f").as_deref(),
///     Some("http://example.com/a/~user"),
/// );
/// ```
///
/// [RFC 3986 §6.2.2]: https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2
/// [RFC 3986 §6.2.3]: https://www.rfc-editor.org/rfc/rfc3986#section-6.2.3
pub fn normalize_htu(url: &str) -> Option<String> {
    let url = url.split('#').next().unwrap_or_default();
    let url = url.split('?').next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://")?;
    let mut scheme_chars = scheme.chars();
    if !scheme_chars.next()?.is_ascii_alphabetic()
        || !scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = if host_port.starts_with('[') {
        let end = host_port.find(']')?;
        let (host, after) = host_port.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => {
            let port: u16 = port.parse().ok()?;
            let default = match scheme.as_str() {
                "http" => Some(80),
                "https" => Some(443),
                _ => None,
            };
            (Some(port) != default).then_some(port)
        }
        Some(_) => return None,
    };
    let mut normalized = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        normalized.push_str(&normalize_percent(userinfo)?);
        normalized.push('@');
    }
    normalized.push_str(&normalize_percent(host)?.to_ascii_lowercase());
    if let Some(port) = port {
        normalized.push_str(&format!(":{port}"));
    }
    let path = normalize_percent(path)?;
    let path = remove_dot_segments(&path);
    normalized.push_str(if path.is_empty() { "/" } else { &path });
    Some(normalized)
}

/// Uppercases percent-encodings and decodes those of unreserved characters; `None` for a `%`
/// not followed by two hex digits.
fn normalize_percent(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = String::with_capacity(part.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            let c = part[i..].chars().next()?;
            out.push(c);
            i += c.len_utf8();
        }
    }
    Some(out)
}

/// `remove_dot_segments` of [RFC 3986 §5.2.4].
///
/// [RFC 3986 §5.2.4]: https://www.rfc-editor.org/rfc/rfc3986#section-5.2.4
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output: Vec<&str> = Vec::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            output.pop();
        } else if input == "/.." {
            input = "/";
            output.pop();
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..]
                .find('/')
                .map_or(input.len(), |index| index + start);
            output.push(&input[..end]);
            input = &input[end..];
        }
    }
    output.concat()
}

/// The `jti` values of the proofs a server accepted, to refuse a replay ([RFC 9449 §11.1]).
///
/// A `jti` is kept until its proof's `iat` is older than twice the window, after which the
/// `iat` check refuses the proof anyway.
///
/// [RFC 9449 §11.1]: https://www.rfc-editor.org/rfc/rfc9449#section-11.1
#[derive(Debug, Clone, Default)]
pub struct JtiCache {
    seen: HashMap<String, i64>,
}

impl JtiCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `proof`'s `jti`; [`ProofError::Replay`] if it was recorded before.
    ///
    /// # Errors
    ///
    /// [`ProofError::Replay`].
    pub fn insert(&mut self, proof: &VerifiedProof, window: Duration) -> Result<(), ProofError> {
        if self.seen.contains_key(&proof.jti) {
            return Err(ProofError::Replay);
        }
        if self.seen.len() >= 10_000 {
            let horizon = i64::try_from(window.as_secs().saturating_mul(2)).unwrap_or(i64::MAX);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
                });
            self.seen
                .retain(|_, iat| now.saturating_sub(*iat) <= horizon);
        }
        self.seen.insert(proof.jti.clone(), proof.iat);
        Ok(())
    }

    /// How many `jti` values are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no `jti` is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The URL of a request as a mock server sees it, for the `htu` check: the request's URI
/// when it is absolute (in memory, or HTTP/2 over a socket), else `base` (the server's
/// `http://127.0.0.1:PORT`) followed by the path. The query is dropped.
pub(crate) fn request_url(uri: &http::Uri, base: Option<&str>) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", uri.path()),
        _ => format!("{}{}", base.unwrap_or_default(), uri.path()),
    }
}

/// A fresh random server nonce for `DPoP-Nonce`: 16 random bytes, base64url.
pub fn new_nonce() -> String {
    let bytes: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
        .take(16)
        .collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests;
