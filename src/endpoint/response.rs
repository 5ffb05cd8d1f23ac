//! Reading the token endpoint's answer: RFC 6749 §5.1 success, §5.2 error, and everything real
//! servers and proxies send instead.
//!
//! The parser never panics and never echoes a token: what it reports about a body is an
//! outline of its JSON keys and types, or a short excerpt with token-like runs redacted.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::{error::TokenError, source::TokenResponse, token::MAX_LIFETIME};

/// Parses a complete token endpoint response.
pub(crate) fn parse(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, TokenError> {
    if status.is_redirection() {
        return Err(TokenError::Redirect {
            status,
            location: headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(origin_of),
        });
    }

    let json = serde_json::from_slice::<Value>(body);
    if !status.is_success() {
        let retry_after = retry_after(headers, SystemTime::now());
        if let Ok(Value::Object(object)) = &json
            && let Some(error) = oauth_error(status, object, retry_after)
        {
            return Err(error);
        }
        return Err(TokenError::Http {
            status,
            content_type: content_type(headers),
            excerpt: outline(body),
            retry_after,
        });
    }

    let invalid = |reason: String| invalid_response(status, headers, body, reason);
    let mut object = match json {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            return Err(invalid(format!(
                "expected a JSON object, found {}",
                json_type(&other)
            )));
        }
        Err(_) if body.is_empty() => return Err(invalid("the body is empty".into())),
        Err(_) if body.starts_with(&[0x1f, 0x8b]) => {
            return Err(invalid(
                "the body is gzip-compressed but carries no matching Content-Encoding".into(),
            ));
        }
        Err(error) => return Err(invalid(format!("the body is not valid JSON ({error})"))),
    };

    // Some servers answer 200 with an error object.
    if let Some(error) = oauth_error(status, &object, None) {
        return Err(error);
    }

    let access_token = match object.get("access_token") {
        Some(Value::String(token)) if token.is_empty() => {
            return Err(invalid("`access_token` is empty".into()));
        }
        Some(Value::String(token)) => token,
        Some(Value::Null) => return Err(invalid("`access_token` is null".into())),
        Some(other) => {
            return Err(invalid(format!(
                "`access_token` is {}, expected a string",
                json_type(other)
            )));
        }
        None => return Err(invalid("`access_token` is missing".into())),
    };
    if let Some(position) = access_token.bytes().position(|b| !b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "`access_token` contains a character not allowed in an HTTP header value \
             (byte {position})"
        )));
    }

    let token_type = match object.get("token_type") {
        // RFC 6749 requires it; servers that omit it issue bearer tokens.
        None | Some(Value::Null) => None,
        Some(Value::String(kind))
            if kind.eq_ignore_ascii_case("bearer") || kind.eq_ignore_ascii_case("dpop") =>
        {
            Some(kind.clone())
        }
        Some(Value::String(kind)) => {
            return Err(TokenError::UnsupportedTokenType {
                token_type: excerpt_text(kind, 40),
            });
        }
        Some(other) => {
            return Err(invalid(format!(
                "`token_type` is {}, expected a string",
                json_type(other)
            )));
        }
    };

    let expires_in = match object.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(seconds(n.as_f64()).map_err(invalid)?),
        Some(Value::String(s)) => {
            let n = s.trim().parse::<f64>().map_err(|_| {
                invalid(format!(
                    "`expires_in` is the string {:?}, which is not a number",
                    excerpt_text(s, 24)
                ))
            })?;
            Some(seconds(Some(n)).map_err(invalid)?)
        }
        Some(other) => {
            return Err(invalid(format!(
                "`expires_in` is {}, expected a number",
                json_type(other)
            )));
        }
    };

    let scope = match object.get("scope") {
        Some(Value::String(scope)) => Some(scope.clone()),
        _ => None,
    };

    // Moved out of the parsed document, not copied, and zeroed when dropped.
    let access_token = match object.remove("access_token") {
        Some(Value::String(token)) => Zeroizing::new(token),
        _ => return Err(invalid("`access_token` is missing".into())),
    };
    Ok(TokenResponse {
        access_token,
        expires_in,
        scope,
        token_type,
    })
}

/// A `TokenError::InvalidResponse` that outlines the body.
pub(crate) fn invalid_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    reason: String,
) -> TokenError {
    TokenError::InvalidResponse {
        status,
        content_type: content_type(headers),
        reason,
        excerpt: outline(body),
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| excerpt_text(&String::from_utf8_lossy(v.as_bytes()), 80))
}

fn seconds(n: Option<f64>) -> Result<Duration, String> {
    match n {
        Some(n) if n.is_nan() => Err("`expires_in` is not a number".into()),
        Some(n) if n < 0.0 => Err(format!("`expires_in` is negative ({n})")),
        Some(0.0) => Err("`expires_in` is 0: the token would be expired on arrival".into()),
        Some(n) => Ok(Duration::try_from_secs_f64(n).map_or(MAX_LIFETIME, |d| d.min(MAX_LIFETIME))),
        None => Err("`expires_in` is not a number".into()),
    }
}

fn oauth_error(
    status: StatusCode,
    object: &Map<String, Value>,
    retry_after: Option<Duration>,
) -> Option<TokenError> {
    let Value::String(error) = object.get("error")? else {
        return None;
    };
    let text = |key: &str| match object.get(key) {
        Some(Value::String(s)) => Some(excerpt_text(s, 200)),
        _ => None,
    };
    Some(TokenError::OAuth {
        status,
        error: excerpt_text(error, 60),
        description: text("error_description"),
        uri: text("error_uri"),
        retry_after,
    })
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `scheme://host[:port]` of an absolute URL, without path or query (which may carry secrets).
fn origin_of(location: &str) -> Option<String> {
    let uri: http::Uri = location.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    // Drop any userinfo.
    let host_port = authority.as_str().rsplit('@').next()?;
    Some(format!("{scheme}://{host_port}"))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keys whose values are safe and useful to show.
const SHOWN_KEYS: &[&str] = &[
    "token_type",
    "expires_in",
    "error",
    "error_description",
    "scope",
];

/// A description of a body safe to put in an error: for JSON, its keys and value types (and
/// the values of a few harmless keys); otherwise a short excerpt with token-like runs redacted.
pub(crate) fn outline(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => {
            let fields: Vec<String> = object
                .iter()
                .take(12)
                .map(|(key, value)| {
                    let key = excerpt_text(key, 40);
                    match value {
                        Value::String(s) if SHOWN_KEYS.contains(&key.as_str()) => {
                            format!("{key:?}: {:?}", excerpt_text(s, 60))
                        }
                        Value::Number(n) if SHOWN_KEYS.contains(&key.as_str()) => {
                            format!("{key:?}: {n}")
                        }
                        other => format!("{key:?}: <{}>", json_type(other)),
                    }
                })
                .collect();
            let more = if object.len() > 12 { ", …" } else { "" };
            format!("{{{}{more}}}", fields.join(", "))
        }
        Ok(other) => format!("<JSON {}>", json_type(&other)),
        Err(_) => {
            let printable = body
                .iter()
                .take(512)
                .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
                .count();
            if printable * 10 < body.len().min(512) * 9 {
                format!("<{} bytes of binary data>", body.len())
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
                excerpt_text(&text, 160)
            }
        }
    }
}

/// Keys whose values are credentials, in whatever syntax a body carries them
/// (`"access_token": "…"`, `access_token=…`).
const SECRET_KEYS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "client_assertion",
    "assertion",
    "password",
];

/// Replaces the value after each secret key with `[redacted]`, whatever its length.
fn redact_secret_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some((position, key)) = SECRET_KEYS
        .iter()
        .filter_map(|key| lower[search..].find(key).map(|at| (search + at, *key)))
        .min_by_key(|(at, _)| *at)
    {
        let after_key = position + key.len();
        // The separator: a closing quote, spaces, `:` or `=`, an opening quote.
        let separator = text[after_key..]
            .find(|c: char| !matches!(c, '"' | '\'' | ' ' | ':' | '='))
            .unwrap_or(text.len() - after_key);
        let value_start = after_key + separator;
        let value_len = text[value_start..]
            .find(|c: char| matches!(c, '"' | '\'' | '&' | ',' | '}' | ';') || c.is_whitespace())
            .unwrap_or(text.len() - value_start);
        search = value_start + value_len;
        if value_len == 0 || !text[after_key..value_start].contains([':', '=']) {
            // Not a key-value pair, just the word.
            search = search.max(after_key);
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str("[redacted]");
        copied = search;
    }
    out.push_str(&text[copied..]);
    out
}

/// Collapses whitespace, drops control characters, redacts credential values and runs of 24
/// or more token-like characters, and cuts the text to `max` characters.
fn excerpt_text(text: &str, max: usize) -> String {
    let text = &redact_secret_values(text);
    let mut collapsed = String::with_capacity(text.len().min(max * 2));
    let mut last_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !last_space {
                collapsed.push(' ');
            }
            last_space = true;
        } else if !c.is_control() {
            collapsed.push(c);
            last_space = false;
        }
    }
    let mut redacted = String::with_capacity(collapsed.len());
    let mut run = String::new();
    let token_like = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= 24 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in collapsed.trim().chars() {
        if token_like(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut redacted);
            redacted.push(c);
        }
    }
    flush(&mut run, &mut redacted);
    if redacted.chars().count() > max {
        let cut: String = redacted.chars().take(max).collect();
        format!("{cut}…")
    } else {
        redacted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ok(body: &str) -> Result<TokenResponse, TokenError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parse(StatusCode::OK, &headers, body.as_bytes())
    }

    fn reason(result: Result<TokenResponse, TokenError>) -> String {
        match result {
            Err(TokenError::InvalidResponse { reason, .. }) => reason,
            other => panic!("expected InvalidResponse, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_response() {
        let token =
            ok(r#"{"token_type":"Bearer","expires_in":86400,"access_token":"eyJ.a.b"}"#).unwrap();
        assert_eq!(token.access_token.as_str(), "eyJ.a.b");
        assert_eq!(token.expires_in, Some(Duration::from_secs(86400)));
        assert_eq!(token.scope, None);
    }

    #[test]
    fn lenient_where_real_servers_differ() {
        let token =
            ok(r#"{"token_type":"bearer","expires_in":"3599","access_token":"t","scope":"a b"}"#)
                .unwrap();
        assert_eq!(token.expires_in, Some(Duration::from_secs(3599)));
        assert_eq!(token.scope.as_deref(), Some("a b"));
        assert_eq!(ok(r#"{"access_token":"t"}"#).unwrap().expires_in, None);
        assert_eq!(
            ok(r#"{"access_token":"t","expires_in":1.5}"#)
                .unwrap()
                .expires_in,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            ok(r#"{"access_token":"t","expires_in":1e300}"#)
                .unwrap()
                .expires_in,
            Some(MAX_LIFETIME)
        );
        assert_eq!(
            ok(r#"{"access_token":"t","expires_in":184467440737095516150}"#)
                .unwrap()
                .expires_in,
            Some(MAX_LIFETIME)
        );
    }

    #[test]
    fn names_what_is_malformed() {
        assert_eq!(reason(ok("")), "the body is empty");
        assert!(reason(ok(r#"{"access_token":"#)).starts_with("the body is not valid JSON"));
        assert_eq!(reason(ok("[1]")), "expected a JSON object, found an array");
        assert_eq!(reason(ok("{}")), "`access_token` is missing");
        assert_eq!(
            reason(ok(r#"{"access_token":""}"#)),
            "`access_token` is empty"
        );
        assert_eq!(
            reason(ok(r#"{"access_token":null}"#)),
            "`access_token` is null"
        );
        assert_eq!(
            reason(ok(r#"{"access_token":42}"#)),
            "`access_token` is a number, expected a string"
        );
        assert!(reason(ok(r#"{"access_token":"a\nb"}"#)).contains("not allowed in an HTTP header"));
        assert!(reason(ok(r#"{"access_token":"a b"}"#)).contains("(byte 1)"));
        assert!(reason(ok(r#"{"access_token":"t","expires_in":-5}"#)).contains("negative"));
        assert!(reason(ok(r#"{"access_token":"t","expires_in":0}"#)).contains("is 0"));
        assert!(reason(ok(r#"{"access_token":"t","expires_in":"soon"}"#)).contains("not a number"));
        assert!(reason(ok(r#"{"access_token":"t","expires_in":true}"#)).contains("a boolean"));
        assert!(reason(ok(r#"{"access_token":"t","token_type":7}"#)).contains("token_type"));
        let gzip = parse(StatusCode::OK, &HeaderMap::new(), &[0x1f, 0x8b, 8, 0, 0, 0]);
        assert!(reason(gzip).contains("gzip"));
    }

    #[test]
    fn rejects_other_token_types() {
        for kind in ["mac", "N_A", "pop"] {
            let body = format!(r#"{{"access_token":"t","token_type":"{kind}"}}"#);
            assert!(
                matches!(ok(&body), Err(TokenError::UnsupportedTokenType { token_type }) if token_type == kind)
            );
        }
    }

    #[test]
    fn oauth_errors_are_typed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        let body =
            br#"{"error":"invalid_client","error_description":"Client authentication failed"}"#;
        let error = parse(StatusCode::UNAUTHORIZED, &headers, body).unwrap_err();
        assert_eq!(error.oauth_error(), Some("invalid_client"));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
        assert!(!error.is_transient());
        // Also with a 200.
        let error = ok(r#"{"error":"invalid_scope"}"#).unwrap_err();
        assert_eq!(error.oauth_error(), Some("invalid_scope"));
    }

    #[test]
    fn non_json_errors_say_what_arrived() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let body = b"<html><body>\n  502 Bad Gateway\n</body></html>";
        let error = parse(StatusCode::BAD_GATEWAY, &headers, body).unwrap_err();
        assert!(error.is_transient());
        assert_eq!(
            error.to_string(),
            "token endpoint returned HTTP 502 Bad Gateway with content type `text/html`, body: \
             <html><body> 502 Bad Gateway </body></html>"
        );
        // An HTML page with a 200 is a malformed response.
        let error = parse(StatusCode::OK, &headers, b"<html>login</html>").unwrap_err();
        assert!(error.to_string().contains("not valid JSON"), "{error}");
        assert!(error.to_string().contains("text/html"), "{error}");
    }

    #[test]
    fn redirects_name_only_the_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("https://user:pw@login.example:8443/token?secret=x"),
        );
        let error = parse(StatusCode::FOUND, &headers, b"").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("https://login.example:8443"), "{text}");
        assert!(!text.contains("secret") && !text.contains("pw"), "{text}");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn outlines_never_show_tokens() {
        let body =
            br#"{"access_token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln","token_type":"mac"}"#;
        let outline = outline(body);
        assert!(!outline.contains("eyJ"), "{outline}");
        assert!(outline.contains("\"token_type\": \"mac\""), "{outline}");
        // Short tokens are redacted by key, in JSON-like and form-like text.
        let text = outline_of_text(r#"{"access_token":"short-123","token_type":"Bearer""#);
        assert!(!text.contains("short-123"), "{text}");
        assert!(text.contains("Bearer"), "{text}");
        let text = outline_of_text("access_token=tiny&client_secret=pw&scope=a");
        assert_eq!(
            text,
            "access_token=[redacted]&client_secret=[redacted]&scope=a"
        );
        let text = outline_of_text("no access_token here");
        assert_eq!(text, "no access_token here");
        let text =
            outline_of_text("error: token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln rejected");
        assert_eq!(text, "error: token [redacted] rejected");
        assert_eq!(
            super::outline(&[0u8, 1, 2, 3, 200, 201]),
            "<6 bytes of binary data>"
        );
    }

    fn outline_of_text(text: &str) -> String {
        super::outline(text.as_bytes())
    }
}
