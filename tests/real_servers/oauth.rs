//! What the real-server suites check of the crate's answer to a refused token request.

use tower_client_credentials::{ClientCredentialsBuilder, TokenError};

/// The start error, which must be an OAuth error response with `status` and `code`, permanent,
/// and named in the error's text.
pub(crate) async fn start_error(
    builder: ClientCredentialsBuilder,
    status: u16,
    code: &str,
) -> TokenError {
    let error = builder
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect_err("the authorization server refuses this token request");
    match &error {
        TokenError::OAuth {
            status: got,
            error: got_code,
            ..
        } => assert_eq!((got.as_u16(), got_code.as_str()), (status, code), "{error}"),
        other => panic!("expected an OAuth `{code}` error, got {other:?}"),
    }
    assert_eq!(error.oauth_error(), Some(code));
    assert!(!error.is_transient(), "`{code}` is permanent");
    assert!(error.to_string().contains(code), "{error}");
    error
}
