//! The authorization server metadata parser (RFC 8414): any body, or a JSON object with the
//! right `issuer` and any other members. A document is accepted only with that issuer and a
//! non-empty token endpoint; what it shows of the document is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower_client_credentials::fuzzing::discovery_document;

const ISSUER: &str = "http://127.0.0.1:8080";
const URL: &str = "http://127.0.0.1:8080/.well-known/oauth-authorization-server";

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = match data.split_first() {
        Some((selector, rest)) => (*selector, rest),
        None => (0, data),
    };
    let body = if selector & 1 == 0 {
        rest.to_vec()
    } else {
        let mut body = format!(r#"{{"issuer":"{ISSUER}","#).into_bytes();
        body.extend_from_slice(rest);
        body
    };
    match discovery_document(ISSUER, URL, &body) {
        Ok((token_endpoint, methods)) => {
            let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(&body) else {
                panic!("accepted a body that is not a JSON object");
            };
            assert_eq!(document["issuer"], ISSUER);
            assert!(!token_endpoint.is_empty());
            assert_eq!(document["token_endpoint"], token_endpoint.as_str());
            for method in methods.iter().flatten() {
                assert!(method.chars().count() <= 201, "{method:?}");
                assert!(!method.chars().any(char::is_control), "{method:?}");
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty());
            assert!(message.len() <= 4096, "{} bytes", message.len());
        }
    }
});
