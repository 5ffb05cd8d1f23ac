//! Helpers shared by the unit tests of the mock servers.

use crate::keys::TestKey;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tower_service::Service;

use super::{
    BoxBody, BoxError, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer, TOKEN_PATH,
};

pub(crate) fn basic(id: &str, secret: &str) -> String {
    let encode = |value: &str| utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
    let credentials = format!("{}:{}", encode(id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("form")
}

pub(crate) fn token_request(
    content_type: &str,
    authorization: Option<String>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(format!("http://auth.test{TOKEN_PATH}"))
        .header(header::CONTENT_TYPE, content_type);
    if let Some(authorization) = authorization {
        builder = builder.header(header::AUTHORIZATION, authorization);
    }
    builder.body(Full::new(body.into())).expect("request")
}

pub(crate) fn form_basic(pairs: &[(&str, &str)]) -> Request<Full<Bytes>> {
    token_request(
        "application/x-www-form-urlencoded",
        Some(basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
        form(pairs),
    )
}

pub(crate) fn form_post(pairs: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut all = vec![
        ("client_id", DEFAULT_CLIENT_ID),
        ("client_secret", DEFAULT_CLIENT_SECRET),
    ];
    all.extend_from_slice(pairs);
    token_request("application/x-www-form-urlencoded", None, form(&all))
}

pub(crate) const GRANT: (&str, &str) = ("grant_type", "client_credentials");

pub(crate) async fn send<S>(service: &mut S, request: Request<Full<Bytes>>) -> Response<BoxBody>
where
    S: Service<Request<Full<Bytes>>, Response = Response<BoxBody>, Error = BoxError>,
{
    service.call(request).await.expect("in-memory call")
}

pub(crate) async fn read(response: Response<BoxBody>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

pub(crate) async fn json(response: Response<BoxBody>) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, bytes) = read(response).await;
    let value = serde_json::from_slice(&bytes).expect("JSON body");
    (status, headers, value)
}

pub(crate) async fn fetch_token(server: &MockAuthServer) -> String {
    let (status, _, body) = json(send(&mut server.service(), form_basic(&[GRANT])).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().expect("token").to_owned()
}

pub(crate) fn api_request(token: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
    let mut builder =
        Request::post("http://api.test/v1/echo").header(header::CONTENT_TYPE, "text/plain");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request")
}

pub(crate) fn assert_oauth_error(
    status: StatusCode,
    body: &Value,
    expected: StatusCode,
    error: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

/// A key that signs DPoP proofs in the unit tests, with its public JWK.
pub(crate) struct ProofKey {
    pub(crate) alg: &'static str,
    algorithm: jsonwebtoken::Algorithm,
    encoding: jsonwebtoken::EncodingKey,
    pub(crate) jwk: Value,
}

impl ProofKey {
    fn new(
        alg: &'static str,
        algorithm: jsonwebtoken::Algorithm,
        encoding: jsonwebtoken::EncodingKey,
    ) -> Self {
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, algorithm).expect("jwk");
        Self {
            alg,
            algorithm,
            encoding,
            jwk: serde_json::to_value(jwk).expect("jwk json"),
        }
    }

    /// A P-256 key made for this test process (the same one at every call).
    pub(crate) fn es256() -> Self {
        Self::from_ec(TestKey::p256().pkcs8_der())
    }

    fn from_ec(pkcs8: &[u8]) -> Self {
        let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8);
        Self::new("ES256", jsonwebtoken::Algorithm::ES256, key)
    }

    /// An Ed25519 key made for this test process (the same one at every call).
    pub(crate) fn ed25519() -> Self {
        let key = jsonwebtoken::EncodingKey::from_ed_der(TestKey::ed25519().pkcs8_der());
        Self::new("EdDSA", jsonwebtoken::Algorithm::EdDSA, key)
    }

    /// A 2048-bit RSA key made for this test process (the same one at every call).
    pub(crate) fn rs256() -> Self {
        let pkcs1 = TestKey::rsa2048().rsa_pkcs1_der();
        let key = jsonwebtoken::EncodingKey::from_rsa_der(&pkcs1);
        Self::new("RS256", jsonwebtoken::Algorithm::RS256, key)
    }

    /// Another key of the same type: a new P-256 or Ed25519 key, or (RSA) this key's JWK with
    /// another modulus.
    pub(crate) fn other(&self) -> Self {
        match self.algorithm {
            jsonwebtoken::Algorithm::ES256 => Self::from_ec(TestKey::new_p256().pkcs8_der()),
            jsonwebtoken::Algorithm::EdDSA => {
                // PKCS#8 of an Ed25519 seed: a fixed 16-byte prefix, then the 32-byte seed.
                let mut der = vec![
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04,
                    0x22, 0x04, 0x20,
                ];
                der.extend(std::iter::repeat_with(|| fastrand::u8(..)).take(32));
                let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
                Self::new("EdDSA", jsonwebtoken::Algorithm::EdDSA, key)
            }
            _ => {
                let mut other = Self::rs256();
                let n = other.jwk["n"].as_str().expect("n").to_owned();
                let flipped = if n.starts_with('u') { "v" } else { "u" };
                other.jwk["n"] = Value::String(format!("{flipped}{}", &n[1..]));
                other
            }
        }
    }

    /// This key's JWK with private members added (`d`, and for RSA `p`, `q`, `dp`, `dq`,
    /// `qi`), as a private JWK file would have them: what a proof header must never carry.
    pub(crate) fn private_jwk(&self) -> Value {
        let mut jwk = self.jwk.clone();
        let members: &[&str] = if self.alg == "RS256" {
            &["d", "p", "q", "dp", "dq", "qi"]
        } else {
            &["d"]
        };
        for member in members {
            jwk[*member] = Value::String("AQAB".to_owned());
        }
        jwk
    }

    /// `{"typ": "dpop+jwt", "alg": …, "jwk": …}`.
    pub(crate) fn header(&self) -> Value {
        serde_json::json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk})
    }

    /// The RFC 7638 thumbprint of the public key.
    pub(crate) fn thumbprint(&self) -> String {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwk.clone()).expect("jwk");
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .expect("thumbprint")
    }

    /// A valid proof for `method` and `url` now, with a random `jti`, `ath` for
    /// `access_token` and `nonce`, when given.
    pub(crate) fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let mut claims = serde_json::json!({
            "jti": format!("{:016x}", fastrand::u64(..)),
            "htm": method,
            "htu": url,
            "iat": iat,
        });
        if let Some(token) = access_token {
            claims["ath"] = Value::String(super::dpop::access_token_hash(token));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = Value::String(nonce.to_owned());
        }
        sign_proof(self, &self.header(), &claims)
    }
}

/// Signs `header` and `claims` with `key`, whatever they say.
pub(crate) fn sign_proof(key: &ProofKey, header: &Value, claims: &Value) -> String {
    let b64 =
        |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.algorithm).expect("sign");
    format!("{message}.{signature}")
}
