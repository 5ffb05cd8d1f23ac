//! The token response parser: any status, content type and body from the token endpoint.
#![no_main]

mod common;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tower_client_credentials::ExpirySource;
use tower_client_credentials_testkit::Fault;

const STATUSES: [u16; 8] = [200, 200, 200, 201, 400, 401, 429, 503];
const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/json; charset=utf-8",
    "text/html",
    "application/x-www-form-urlencoded",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks a status and a content type (or none); the rest is the body.
    let (selector, body) = match data.split_first() {
        Some((selector, body)) => (*selector, body),
        None => (0, data),
    };
    let status = StatusCode::from_u16(STATUSES[usize::from(selector & 7)]).unwrap();
    let mut headers = HeaderMap::new();
    if let Some(content_type) = CONTENT_TYPES.get(usize::from(selector >> 3 & 7)) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if selector & 0x80 != 0 {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
    }
    common::fetch_once(
        Fault::response(status, headers, body.to_vec()),
        ExpirySource::default(),
    );
});
