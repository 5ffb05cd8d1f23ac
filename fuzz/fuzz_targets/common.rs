//! What both targets share: answer one token request with a given fault, through the crate's
//! public path, and check what came of it.

use std::{future::IntoFuture, sync::OnceLock, time::Duration};

use tokio::runtime::Runtime;
use tower_client_credentials::{ClientCredentials, ExpirySource, TokenUnavailable};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockAuthServer,
};

const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One runtime for the whole run, on the paused clock: backoffs and timeouts cost nothing.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}

/// Answers the first token request with `fault` and checks the outcome: a token that is a
/// non-empty, header-safe string with a lifetime of at most a year, or a typed error whose
/// message is not empty and shows no secret. Panics (a finding) otherwise, and when the
/// refresher panicked.
pub fn fetch_once(fault: Fault, expiry: ExpirySource) {
    runtime().block_on(async {
        let auth = MockAuthServer::new();
        auth.fail_next(1, fault);
        let (handle, refresher) = ClientCredentials::builder(
            "http://127.0.0.1/oauth/token",
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
        )
        .http_client(auth.service())
        .expiry_source(expiry)
        .timeout(Duration::from_secs(1))
        .build()
        .expect("a valid configuration")
        .into_parts();
        let refresher = tokio::spawn(refresher.into_future());
        let result = handle.token().await;
        drop(handle);
        if let Err(panic) = refresher.await {
            std::panic::resume_unwind(panic.into_panic());
        }
        match result {
            Ok(token) => {
                let value = token.access_token();
                assert!(!value.is_empty());
                assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{value:?}");
                assert!(!token.lifetime().is_zero() && token.lifetime() <= MAX_LIFETIME);
                assert!(!format!("{token:?}").contains(value));
            }
            Err(TokenUnavailable::FetchFailed(error)) => {
                let text = format!("{error} {error:?}");
                assert!(!error.to_string().is_empty());
                assert!(!text.contains(DEFAULT_CLIENT_SECRET), "{text}");
            }
            Err(other) => panic!("not a token request failure: {other:?}"),
        }
    });
}
