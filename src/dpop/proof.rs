use std::{
    fmt::{self, Write as _},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::Serialize;

use super::{DpopError, DpopKey};
use crate::{origin::Origin, www_authenticate};

/// The `DPoP` request header (RFC 9449 §4.1).
pub(crate) const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The `DPoP-Nonce` response header (RFC 9449 §8).
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// The longest nonce kept from a server; a longer one is ignored (and logged).
pub(crate) const MAX_NONCE_LEN: usize = 1024;
/// The most resource-server origins whose nonces are remembered; past it the oldest is
/// forgotten (the next request to it then learns its nonce again).
const MAX_NONCE_ORIGINS: usize = 64;

/// Makes DPoP proofs with one key and remembers the servers' nonces: the authorization
/// server's, and each resource server's by origin. One per [`TokenHandle`](crate::TokenHandle)
/// (shared by the keys of a [`TokenSet`](crate::TokenSet)).
pub(crate) struct Prover {
    key: DpopKey,
    /// Random per prover; with the counter, makes every `jti` unique without a random draw per
    /// proof.
    jti_prefix: [u8; 12],
    jti_counter: AtomicU64,
    server_nonce: Mutex<Option<Arc<str>>>,
    api_nonces: RwLock<Vec<(Origin, Arc<str>)>>,
    /// Whether `api_nonces` is non-empty, so requests to servers without nonces skip its lock.
    any_api_nonce: AtomicBool,
}

/// The claims of a proof (RFC 9449 §4.2), in the order they are written.
#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl Prover {
    pub(crate) fn new(key: DpopKey) -> Self {
        let mut jti_prefix = [0_u8; 12];
        // `jti` only has to be unique; should the system's random source fail, a non-secret
        // random prefix still is.
        if aws_lc_rs::rand::fill(&mut jti_prefix).is_err() {
            fastrand::fill(&mut jti_prefix);
        }
        Self {
            key,
            jti_prefix,
            jti_counter: AtomicU64::new(0),
            server_nonce: Mutex::new(None),
            api_nonces: RwLock::new(Vec::new()),
            any_api_nonce: AtomicBool::new(false),
        }
    }

    pub(crate) fn key(&self) -> &DpopKey {
        &self.key
    }

    /// A proof for a token request to `htu` (already normalised), with the authorization
    /// server's latest nonce.
    pub(crate) fn token_request_proof(&self, htu: &str) -> HeaderValue {
        let nonce = lock(&self.server_nonce).clone();
        self.proof("POST", htu, None, nonce.as_deref())
    }

    /// A proof for a request to a resource server: `htu` from `uri` (or, for a relative URI,
    /// from `base`), `ath` of the token, and the origin's latest nonce.
    pub(crate) fn api_proof(
        &self,
        method: &Method,
        uri: &Uri,
        base: Option<&Origin>,
        ath: &str,
    ) -> Result<HeaderValue, DpopError> {
        let htu = htu(uri, base)?;
        let nonce = self.api_nonce(uri, base);
        Ok(self.proof(method.as_str(), &htu, Some(ath), nonce.as_deref()))
    }

    fn proof(&self, htm: &str, htu: &str, ath: Option<&str>, nonce: Option<&str>) -> HeaderValue {
        sign(&self.key, &self.next_jti(), htm, htu, ath, nonce)
    }

    fn next_jti(&self) -> String {
        let count = self.jti_counter.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0_u8; 20];
        raw[..12].copy_from_slice(&self.jti_prefix);
        raw[12..].copy_from_slice(&count.to_be_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Keeps the authorization server's nonce from a token response's `DPoP-Nonce` header.
    /// Returns whether the response carried one.
    pub(crate) fn learn_server_nonce(&self, headers: &HeaderMap) -> bool {
        let Some(nonce) = nonce_of(headers) else {
            return false;
        };
        let mut current = lock(&self.server_nonce);
        if current.as_deref() != Some(&*nonce) {
            tracing::debug!("authorization server sent a new DPoP nonce");
            *current = Some(nonce);
        }
        true
    }

    /// Keeps a resource server's nonce from a response to a request to `uri`. Returns whether
    /// the nonce changed.
    pub(crate) fn learn_api_nonce(
        &self,
        uri: &Uri,
        base: Option<&Origin>,
        headers: &HeaderMap,
    ) -> bool {
        let Some(nonce) = nonce_of(headers) else {
            return false;
        };
        let Some(origin) = Origin::from_uri(uri).or_else(|| base.cloned()) else {
            return false;
        };
        let mut nonces = self
            .api_nonces
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = nonces.iter_mut().find(|(o, _)| *o == origin) {
            if slot.1 == nonce {
                return false;
            }
            slot.1 = nonce;
        } else {
            if nonces.len() == MAX_NONCE_ORIGINS {
                nonces.remove(0);
            }
            nonces.push((origin, nonce));
            self.any_api_nonce.store(true, Ordering::Release);
        }
        tracing::debug!("resource server sent a new DPoP nonce");
        true
    }

    fn api_nonce(&self, uri: &Uri, base: Option<&Origin>) -> Option<Arc<str>> {
        if !self.any_api_nonce.load(Ordering::Acquire) {
            return None;
        }
        let nonces = self
            .api_nonces
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        nonces
            .iter()
            .find(|(origin, _)| match (uri.host(), base) {
                (Some(_), _) => origin.matches(uri),
                (None, Some(base)) => origin == base,
                (None, None) => false,
            })
            .map(|(_, nonce)| Arc::clone(nonce))
    }
}

/// Signs a proof (RFC 9449 §4.2) with `key`.
fn sign(
    key: &DpopKey,
    jti: &str,
    htm: &str,
    htu: &str,
    ath: Option<&str>,
    nonce: Option<&str>,
) -> HeaderValue {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let claims = Claims {
        jti,
        htm,
        htu,
        iat,
        ath,
        nonce,
    };
    // Serialising borrowed strings and a number into a `Vec` cannot fail.
    let claims = serde_json::to_vec(&claims).unwrap_or_default();
    let header = key.encoded_header();
    let mut jwt = String::with_capacity(header.len() + claims.len() * 4 / 3 + 140);
    jwt.push_str(header);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
    let signature = key.sign(jwt.as_bytes());
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
    // Base64url and dots only: always a valid header value.
    let mut value = HeaderValue::from_maybe_shared(Bytes::from(jwt))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

impl DpopKey {
    /// A DPoP proof (RFC 9449 §4) for a request with `method` to `uri`, for clients that send
    /// requests neither through [`BearerAuthLayer`](crate::BearerAuthLayer) nor through the
    /// reqwest middleware: put it in the request's `DPoP` header, next to
    /// `Authorization: DPoP <access token>`.
    ///
    /// - `access_token`: the token the request carries (for its `ath` claim); `None` for a
    ///   token request.
    /// - `nonce`: the latest `DPoP-Nonce` the server sent, if any. A server that answers
    ///   401 with `WWW-Authenticate: DPoP error="use_dpop_nonce"` wants the request again
    ///   with a proof that carries the nonce from that response.
    ///
    /// Each proof has a fresh random `jti`, the current time as `iat`, and as `htu` the URI
    /// without query and fragment. The value is marked sensitive.
    ///
    /// ```
    /// use tower_client_credentials::{DpopAlgorithm, DpopKey};
    ///
    /// let key = DpopKey::generate(DpopAlgorithm::ES256)?;
    /// let uri = "https://api.example.com/orders?page=2".parse()?;
    /// let proof = key.proof(&http::Method::GET, &uri, Some("the-access-token"), None)?;
    /// assert_eq!(proof.to_str()?.split('.').count(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`DpopError::RelativeUri`] when `uri` has no scheme and host.
    pub fn proof(
        &self,
        method: &Method,
        uri: &Uri,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<HeaderValue, DpopError> {
        let htu = htu(uri, None)?;
        let mut raw = [0_u8; 16];
        if aws_lc_rs::rand::fill(&mut raw).is_err() {
            fastrand::fill(&mut raw);
        }
        let jti = URL_SAFE_NO_PAD.encode(raw);
        let ath = access_token.map(ath);
        Ok(sign(
            self,
            &jti,
            method.as_str(),
            &htu,
            ath.as_deref(),
            nonce,
        ))
    }
}

impl fmt::Debug for Prover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prover")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `base64url(SHA-256(access_token))`, the `ath` claim (RFC 9449 §4.2).
pub(crate) fn ath(access_token: &str) -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(hash)
}

/// The `DPoP-Nonce` header, when it holds a usable nonce (`1*NQCHAR`, RFC 9449 §8.1).
pub(crate) fn nonce_of(headers: &HeaderMap) -> Option<Arc<str>> {
    let value = headers.get(DPOP_NONCE)?.as_bytes();
    let usable = !value.is_empty()
        && value.len() <= MAX_NONCE_LEN
        && value
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if !usable {
        tracing::warn!(
            length = value.len(),
            "ignoring a DPoP-Nonce header that is not a valid nonce"
        );
        return None;
    }
    // NQCHAR is ASCII.
    std::str::from_utf8(value).ok().map(Arc::from)
}

/// The `htu` of a request (RFC 9449 §4.2): its URI without query and fragment, with the
/// scheme and host in lower case and the scheme's default port left out (RFC 3986 §6.2.3).
/// A relative URI (a tonic channel's) takes scheme, host and port from `base`.
pub(crate) fn htu(uri: &Uri, base: Option<&Origin>) -> Result<String, DpopError> {
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    let Some(host) = uri.host() else {
        let base = base.ok_or(DpopError::RelativeUri)?;
        return Ok(format!("{}{path}", base.base_url()));
    };
    let scheme = uri.scheme_str().ok_or(DpopError::RelativeUri)?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let mut htu = String::with_capacity(scheme.len() + host.len() + path.len() + 10);
    htu.push_str(scheme);
    htu.push_str("://");
    htu.push_str(host);
    htu.make_ascii_lowercase();
    match uri.port_u16() {
        Some(port) if Some(port) != default_port => {
            // Writing to a `String` cannot fail.
            let _ = write!(htu, ":{port}");
        }
        _ => {}
    }
    htu.push_str(path);
    Ok(htu)
}

/// What a `WWW-Authenticate: DPoP error="…"` challenge asks of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `use_dpop_nonce`: send the proof again with the nonce in `DPoP-Nonce`.
    UseNonce,
    /// `invalid_dpop_proof`: the proof was refused; a new one may pass.
    InvalidProof,
    /// Any other error (`invalid_token`, …): the token itself was refused.
    Other,
}

/// The error of the first `DPoP` challenge with one among the response's `WWW-Authenticate`
/// headers.
pub(crate) fn challenge(headers: &HeaderMap) -> Option<Challenge> {
    let error = www_authenticate::error_of(headers, "DPoP")?;
    Some(match &*error {
        "use_dpop_nonce" => Challenge::UseNonce,
        "invalid_dpop_proof" => Challenge::InvalidProof,
        _ => Challenge::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn htu_drops_query_fragment_default_port_and_case() {
        let cases = [
            (
                "https://API.Example.com:443/v1/Orders?x=1#f",
                "https://api.example.com/v1/Orders",
            ),
            ("HTTP://127.0.0.1:8080/a/b?q", "http://127.0.0.1:8080/a/b"),
            ("http://127.0.0.1:80", "http://127.0.0.1/"),
            ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ];
        for (uri, expected) in cases {
            assert_eq!(htu(&uri.parse().unwrap(), None).unwrap(), expected, "{uri}");
        }
    }

    #[test]
    fn relative_uris_need_a_base() {
        let uri: Uri = "/pkg.Service/Method".parse().unwrap();
        assert!(matches!(htu(&uri, None), Err(DpopError::RelativeUri)));
        let base: Origin = "https://grpc.example.com".parse().unwrap();
        assert_eq!(
            htu(&uri, Some(&base)).unwrap(),
            "https://grpc.example.com/pkg.Service/Method"
        );
        let base: Origin = "http://127.0.0.1:50051".parse().unwrap();
        assert_eq!(
            htu(&uri, Some(&base)).unwrap(),
            "http://127.0.0.1:50051/pkg.Service/Method"
        );
    }

    #[test]
    fn ath_is_the_base64url_sha256_of_the_token() {
        // RFC 9449 §7.1's example token and its `ath`.
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn finds_the_dpop_challenge_among_others() {
        let cases = [
            (
                r#"DPoP error="use_dpop_nonce", error_description="x""#,
                Some(Challenge::UseNonce),
            ),
            (
                r#"Bearer realm="api", error="invalid_token", DPoP algs="ES256 EdDSA", error="invalid_dpop_proof""#,
                Some(Challenge::InvalidProof),
            ),
            (r#"dpop error=invalid_token"#, Some(Challenge::Other)),
            (r#"Bearer error="use_dpop_nonce""#, None),
            (r#"DPoP algs="ES256""#, None),
            ("", None),
            // These looped forever in a hand-written parser.
            ("=", None),
            (r#"Bearer realm="x", =b"#, None),
            (
                r#"Bearer realm="x", =b, DPoP error="use_dpop_nonce""#,
                Some(Challenge::UseNonce),
            ),
        ];
        for (value, expected) in cases {
            let map = headers(&[("www-authenticate", value)]);
            assert_eq!(challenge(&map), expected, "{value}");
        }
        // Several header lines.
        let map = headers(&[
            ("www-authenticate", r#"Bearer realm="api""#),
            ("www-authenticate", r#"DPoP error="use_dpop_nonce""#),
        ]);
        assert_eq!(challenge(&map), Some(Challenge::UseNonce));
    }

    #[test]
    fn nonces_are_kept_per_origin_and_checked() {
        let prover = Prover::new(DpopKey::generate(super::super::DpopAlgorithm::EdDSA).unwrap());
        let a: Uri = "https://a.example/x".parse().unwrap();
        let b: Uri = "https://b.example/y".parse().unwrap();
        assert!(prover.api_nonce(&a, None).is_none());
        assert!(prover.learn_api_nonce(&a, None, &headers(&[("dpop-nonce", "n-a1")])));
        assert!(!prover.learn_api_nonce(&a, None, &headers(&[("dpop-nonce", "n-a1")])));
        assert!(prover.learn_api_nonce(&b, None, &headers(&[("dpop-nonce", "n-b1")])));
        assert!(prover.learn_api_nonce(&a, None, &headers(&[("dpop-nonce", "n-a2")])));
        assert_eq!(prover.api_nonce(&a, None).as_deref(), Some("n-a2"));
        assert_eq!(prover.api_nonce(&b, None).as_deref(), Some("n-b1"));
        // Not a nonce (a quote and a backslash are outside NQCHAR): ignored.
        assert!(!prover.learn_api_nonce(&a, None, &headers(&[("dpop-nonce", "bad\"nonce")])));
        assert_eq!(prover.api_nonce(&a, None).as_deref(), Some("n-a2"));
        // The authorization server's nonce is separate.
        assert!(prover.learn_server_nonce(&headers(&[("dpop-nonce", "n-as")])));
        assert!(!prover.learn_server_nonce(&headers(&[])));
        assert_eq!(prover.api_nonce(&a, None).as_deref(), Some("n-a2"));
        assert_eq!(lock(&prover.server_nonce).as_deref(), Some("n-as"));
    }

    #[test]
    fn jtis_are_unique() {
        let prover = Prover::new(DpopKey::generate(super::super::DpopAlgorithm::EdDSA).unwrap());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(prover.next_jti()));
        }
        let other = Prover::new(DpopKey::generate(super::super::DpopAlgorithm::EdDSA).unwrap());
        assert!(!seen.contains(&other.next_jti()));
    }
}
