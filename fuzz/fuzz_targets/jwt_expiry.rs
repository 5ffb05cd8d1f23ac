//! The JWT expiry reader: an access token made of arbitrary header and claims segments, in a
//! token response with or without `expires_in`, read with each expiry source.
#![no_main]

mod common;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tower_client_credentials::ExpirySource;
use tower_client_credentials_testkit::Fault;

fuzz_target!(|data: &[u8]| {
    // First byte: the expiry source and whether `expires_in` is sent. Then the claims segment
    // (as it is, base64url-encoded), split from an optional header segment at the first 0xff.
    let (selector, rest) = match data.split_first() {
        Some((selector, rest)) => (*selector, rest),
        None => (0, data),
    };
    let expiry = match selector % 3 {
        0 => ExpirySource::ExpiresIn,
        1 => ExpirySource::JwtExp,
        _ => ExpirySource::Earliest,
    };
    let (claims, header) = match rest.iter().position(|&b| b == 0xff) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &br#"{"alg":"HS256","typ":"JWT"}"#[..]),
    };
    let token = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut response = json!({ "access_token": token, "token_type": "Bearer" });
    if selector & 0x10 != 0 {
        response["expires_in"] = json!(u32::from(selector));
    }
    common::fetch_once(Fault::json(StatusCode::OK, response.to_string()), expiry);
});
