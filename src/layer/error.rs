//! The error of [`BearerAuth`](super::BearerAuth) and
//! [`TokenSetAuth`](crate::TokenSetAuth): the inner service's error, kept typed, or one of the
//! errors the middleware adds to the request path.

use std::{error::Error as StdError, fmt};

use crate::{
    dpop::DpopError,
    error::{BoxError, ConfigError, TokenUnavailable},
};

/// The error of [`BearerAuth`](super::BearerAuth) and [`TokenSetAuth`](crate::TokenSetAuth)
/// (re-exported as [`BearerAuthError`](crate::BearerAuthError)): the inner service's error `E`,
/// untouched, or an error of the middleware's own. A request that fails with one of the
/// middleware's errors was not sent.
///
/// ```no_run
/// # async fn f(
/// #     mut api: impl tower::Service<
/// #         http::Request<String>,
/// #         Response = http::Response<String>,
/// #         Error = tower_client_credentials::BearerAuthError<std::io::Error>,
/// #     >,
/// # ) {
/// use tower::ServiceExt;
/// use tower_client_credentials::BearerAuthError;
///
/// match api.oneshot(http::Request::new(String::new())).await {
///     Ok(response) => println!("{}", response.status()),
///     // The inner client's own error type, as it returned it.
///     Err(BearerAuthError::Inner(error)) => println!("transport: {}", error.kind()),
///     Err(BearerAuthError::TokenUnavailable(error)) if error.is_transient() => {}
///     Err(other) => println!("not sent: {other}"),
/// }
/// # }
/// ```
///
/// # Boxing
///
/// Stacks that box errors (`Buffer`, `Timeout`, `BoxService` with `map_err(Into::into)`, `?`
/// into `Box<dyn Error + Send + Sync>`) get the error inside, not this wrapper: the
/// `From<Error<E>>` conversion into [`BoxError`] unwraps it, so a boxed error downcasts to the inner service's error type,
/// [`TokenUnavailable`], [`DpopError`] or [`ConfigError`] directly.
///
/// This type does not implement [`std::error::Error`] itself: if it did, it could not also
/// convert into a [`BoxError`] when `E` is one (the standard library's blanket `From` would
/// conflict, and `Box<dyn Error>` is not an `Error`), and an inner `Buffer` or test server
/// returns exactly that. Convert it with `BoxError::from` (or `?`) where a `std` error is
/// needed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The inner service failed; this is its error, unchanged.
    Inner(E),
    /// No token could be had for the request: it was not sent.
    TokenUnavailable(TokenUnavailable),
    /// The request's DPoP proof could not be made: it was not sent.
    Dpop(DpopError),
    /// A [`TokenSet`](crate::TokenSet) could not create the token key the request maps to: it
    /// was not sent.
    TokenKey(ConfigError),
}

impl<E> Error<E> {
    /// The inner service's error, if that is what this is.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(error) => Some(error),
            _ => None,
        }
    }

    /// The inner service's error, or `self` back when the middleware failed the request.
    pub fn into_inner(self) -> Result<E, Self> {
        match self {
            Self::Inner(error) => Ok(error),
            other => Err(other),
        }
    }

    /// Whether the middleware failed the request (it was not sent), rather than the inner
    /// service.
    pub fn is_middleware(&self) -> bool {
        !matches!(self, Self::Inner(_))
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Transparent: the inner error reads as it did without the middleware.
            Self::Inner(error) => error.fmt(f),
            Self::TokenUnavailable(error) => error.fmt(f),
            Self::Dpop(error) => error.fmt(f),
            Self::TokenKey(error) => write!(f, "no token key for the request: {error}"),
        }
    }
}

impl<E> From<TokenUnavailable> for Error<E> {
    fn from(error: TokenUnavailable) -> Self {
        Self::TokenUnavailable(error)
    }
}

impl<E> From<DpopError> for Error<E> {
    fn from(error: DpopError) -> Self {
        Self::Dpop(error)
    }
}

/// Unwraps the error: the inner service's error boxed as it is, or the middleware's error
/// ([`TokenUnavailable`], [`DpopError`], [`ConfigError`]), each downcastable.
impl<E: Into<BoxError>> From<Error<E>> for BoxError {
    fn from(error: Error<E>) -> Self {
        match error {
            Error::Inner(error) => error.into(),
            Error::TokenUnavailable(error) => Box::new(error),
            Error::Dpop(error) => Box::new(error),
            Error::TokenKey(error) => Box::new(error),
        }
    }
}

/// As the conversion into [`BoxError`], for `?` in functions that return `Box<dyn Error>`.
impl<E: Into<BoxError>> From<Error<E>> for Box<dyn StdError> {
    fn from(error: Error<E>) -> Self {
        BoxError::from(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxing_unwraps_to_the_concrete_error() {
        let inner: Error<std::io::Error> = Error::Inner(std::io::Error::other("refused"));
        assert_eq!(inner.to_string(), "refused");
        let boxed = BoxError::from(inner);
        assert_eq!(
            boxed.downcast_ref::<std::io::Error>().unwrap().to_string(),
            "refused"
        );

        let ours: Error<BoxError> = Error::TokenUnavailable(TokenUnavailable::Shutdown);
        assert!(ours.is_middleware());
        let boxed = BoxError::from(ours);
        assert!(matches!(
            boxed.downcast_ref::<TokenUnavailable>(),
            Some(TokenUnavailable::Shutdown)
        ));

        let dpop: Box<dyn StdError> = Error::<BoxError>::Dpop(DpopError::RelativeUri).into();
        assert_eq!(
            dpop.downcast_ref::<DpopError>(),
            Some(&DpopError::RelativeUri)
        );
    }

    #[test]
    fn into_inner_gives_the_middleware_error_back() {
        let error: Error<std::io::Error> = TokenUnavailable::Shutdown.into();
        assert!(error.inner().is_none());
        assert!(matches!(
            error.into_inner(),
            Err(Error::TokenUnavailable(TokenUnavailable::Shutdown))
        ));
        let error: Error<u8> = Error::Inner(7);
        assert_eq!(error.inner(), Some(&7));
        assert_eq!(error.into_inner().ok(), Some(7));
    }
}
