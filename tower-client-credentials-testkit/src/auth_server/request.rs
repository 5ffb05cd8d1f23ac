//! A token request, read as far as it goes: body parameters (form or JSON) and Basic
//! credentials.

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, header};

use super::*;

/// A token request, parsed as far as it goes.
pub(super) struct Parsed {
    pub(super) content_type: Option<String>,
    /// The body parameters in order, or why they could not be read.
    pub(super) params: Result<Vec<(String, String)>, &'static str>,
    /// `Authorization: Basic` credentials, or why they could not be decoded.
    pub(super) basic: Option<Result<(String, String), &'static str>>,
}

impl Parsed {
    pub(super) fn new(request: &Request<Bytes>) -> Self {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        let params = match content_type.as_deref() {
            Some("application/x-www-form-urlencoded") => {
                serde_urlencoded::from_bytes(request.body()).map_err(|_| "malformed form body")
            }
            Some("application/json") => json_params(request.body()),
            _ => Err("the body must be application/x-www-form-urlencoded or application/json"),
        };
        let basic = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| basic_credentials(value.as_bytes()));
        Self {
            content_type,
            params,
            basic,
        }
    }

    pub(super) fn param(&self, name: &str) -> Option<&str> {
        let params = self.params.as_ref().ok()?;
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn auth_method(&self) -> ClientAuthMethod {
        match (self.basic.is_some(), self.param("client_secret").is_some()) {
            (true, true) => ClientAuthMethod::Multiple,
            (true, false) => ClientAuthMethod::ClientSecretBasic,
            (false, true) => ClientAuthMethod::ClientSecretPost,
            (false, false) => ClientAuthMethod::None,
        }
    }
}

/// Reads a JSON object's members as parameters: strings as they are, numbers and booleans as
/// their JSON text, `null` as absent.
pub(super) fn json_params(body: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| "the body is not a JSON object")?;
    let mut params = Vec::with_capacity(object.len());
    for (name, value) in object {
        let value = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(value) => value,
            serde_json::Value::Bool(value) => value.to_string(),
            serde_json::Value::Number(value) => value.to_string(),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err("JSON parameters must be strings");
            }
        };
        params.push((name, value));
    }
    Ok(params)
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))` ([RFC 6749 §2.3.1]). Returns
/// `None` when the header is not Basic.
///
/// [RFC 6749 §2.3.1]: https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1
pub(super) fn basic_credentials(value: &[u8]) -> Option<Result<(String, String), &'static str>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decode = || {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "malformed Basic credentials")?;
        let decoded = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or("malformed Basic credentials")?;
        Ok((form_decode(id)?, form_decode(secret)?))
    };
    Some(decode())
}

/// Percent-decodes `value`, reading `+` as a space (`application/x-www-form-urlencoded`).
pub(super) fn form_decode(value: &str) -> Result<String, &'static str> {
    let value = value.replace('+', " ");
    percent_encoding::percent_decode_str(&value)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "malformed Basic credentials")
}
