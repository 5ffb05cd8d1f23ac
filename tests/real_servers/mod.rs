//! What the two real-server suites share: `tests/interop` (oidc-provider) and
//! `tests/keycloak` (Keycloak) each include this folder with
//! `#[path = "../real_servers/mod.rs"] mod real_servers;`. It holds the parts whose logic does
//! not depend on the authorization server: the HTTP helpers ([`http`]), the resource server
//! that checks tokens on its own ([`resource_server`]), the load loop ([`load`]) and the
//! check of a refused token request ([`oauth`]). Starting
//! the servers, and counting what they did (oidc-provider's log lines, Keycloak's login
//! events), stays with each suite.
//!
//! Not a test target of its own: Cargo finds `tests/*.rs` and `tests/*/main.rs` only.

// Each suite uses most of this, not all of it (oidc-provider's tests require DPoP nonces,
// Keycloak's do not).
#![allow(dead_code)]

pub(crate) mod http;
pub(crate) mod load;
pub(crate) mod oauth;
pub(crate) mod resource_server;
