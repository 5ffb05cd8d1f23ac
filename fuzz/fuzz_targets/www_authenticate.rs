//! The `WWW-Authenticate` parser: any bytes as one or several header lines (split at `\n`),
//! and any text as one field value. Checks that the output is bounded and well formed, that
//! written back it parses to the same challenges, and that the layer's and DPoP's readings of
//! the `error` agree with it. `-timeout=1` turns a loop into a finding.
#![no_main]

use http::{HeaderMap, HeaderValue, header::WWW_AUTHENTICATE};
use libfuzzer_sys::fuzz_target;
use tower_client_credentials::fuzzing::{
    Challenge, MAX_CHALLENGES, MAX_PARAMS, challenge_error, dpop_challenge, www_authenticate,
    www_authenticate_value,
};

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_tchar)
}

fn is_token68(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Well formed and no bigger than the input they came from.
fn check(challenges: &[Challenge], input_len: usize) {
    assert!(challenges.len() <= MAX_CHALLENGES);
    let mut size = 0;
    for (scheme, token68, params) in challenges {
        assert!(is_token(scheme), "{scheme:?}");
        assert!(params.len() <= MAX_PARAMS);
        if let Some(token68) = token68 {
            assert!(is_token68(token68), "{token68:?}");
            assert!(params.is_empty());
            size += token68.len();
        }
        for (name, value) in params {
            assert!(is_token(name), "{name:?}");
            size += name.len() + value.len();
        }
        size += scheme.len();
    }
    assert!(size <= input_len, "{size} bytes out of {input_len}");
}

/// The challenges as a field value, every parameter value quoted.
fn write(challenges: &[Challenge]) -> String {
    let mut out = Vec::new();
    for (scheme, token68, params) in challenges {
        let mut text = scheme.clone();
        if let Some(token68) = token68 {
            text = format!("{text} {token68}");
        }
        let params: Vec<String> = params
            .iter()
            .map(|(name, value)| {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{name}=\"{escaped}\"")
            })
            .collect();
        if !params.is_empty() {
            text = format!("{text} {}", params.join(", "));
        }
        out.push(text);
    }
    out.join(", ")
}

fn error_of<'a>(challenge: &'a Challenge) -> Option<&'a str> {
    challenge
        .2
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("error"))
        .map(|(_, value)| value.as_str())
}

fuzz_target!(|data: &[u8]| {
    // Any text, control characters included.
    if let Ok(text) = std::str::from_utf8(data) {
        let challenges = www_authenticate_value(text);
        check(&challenges, text.len());
        let written = write(&challenges);
        assert_eq!(www_authenticate_value(&written), challenges, "{written:?}");
    }

    // Header lines, as a server can send them.
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(WWW_AUTHENTICATE, value);
        }
    }
    let challenges = www_authenticate(&headers);
    check(&challenges, data.len());

    // The layer logs a short ASCII `error` of a challenge, a `Bearer` one first.
    if let Some(error) = challenge_error(&headers) {
        assert!(!error.is_empty() && error.len() <= 64);
        assert!(error.bytes().all(|b| b.is_ascii_graphic()));
        assert!(challenges.iter().any(|c| error_of(c) == Some(&error)));
    }
    // DPoP reads the `error` of the first `DPoP` challenge that has one.
    let dpop_error = challenges
        .iter()
        .filter(|c| c.0.eq_ignore_ascii_case("dpop"))
        .find_map(error_of);
    let expected = dpop_error.map(|error| match error {
        "use_dpop_nonce" => "use_dpop_nonce",
        "invalid_dpop_proof" => "invalid_dpop_proof",
        _ => "other",
    });
    assert_eq!(dpop_challenge(&headers), expected);
});
