//! [`Origin`]: a scheme, host and port, the unit in which the middleware decides where the token
//! may go and which DPoP nonce goes with a request. Shared by the tower layer, the token set and
//! the reqwest middleware.

use std::{fmt, str::FromStr};

use http::{Uri, uri::Scheme};

use crate::error::ConfigError;

/// A scheme, host and port that [`BearerAuthLayer::allow_origins`] lets the token go to.
///
/// Parsed from a URL such as `https://api.example.com` or `http://127.0.0.1:8080`; a path is
/// ignored, a missing port is the scheme's default. Hosts compare case-insensitively.
///
/// [`BearerAuthLayer::allow_origins`]: crate::BearerAuthLayer::allow_origins
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    host: Box<str>,
    port: u16,
}

impl Origin {
    /// The origin of an absolute URI; `None` for a relative one (`/path`) or a scheme other
    /// than `http` and `https`.
    pub fn from_uri(uri: &Uri) -> Option<Self> {
        let https = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            Some(scheme) if *scheme == Scheme::HTTP => false,
            _ => return None,
        };
        let host = uri.host()?;
        Some(Self {
            https,
            host: host.to_ascii_lowercase().into_boxed_str(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// `scheme://host[:port]`, the port left out when it is the scheme's default.
    pub(crate) fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => format!("{scheme}://{}", self.host),
            (_, port) => format!("{scheme}://{}:{port}", self.host),
        }
    }

    /// Whether `uri` points at this origin. No allocation.
    pub(crate) fn matches(&self, uri: &Uri) -> bool {
        let https = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            Some(scheme) if *scheme == Scheme::HTTP => false,
            _ => return false,
        };
        https == self.https
            && uri.port_u16().unwrap_or(if https { 443 } else { 80 }) == self.port
            && uri
                .host()
                .is_some_and(|host| host.eq_ignore_ascii_case(&self.host))
    }
}

impl FromStr for Origin {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| ConfigError::InvalidParameter {
            name: "origin".to_owned(),
            reason: format!("`{s}`: {reason}"),
        };
        let uri: Uri = s.parse().map_err(|_| invalid("not a URL"))?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid("an origin has no user information"));
        }
        Self::from_uri(&uri).ok_or_else(|| invalid("expected http(s)://host[:port]"))
    }
}

impl TryFrom<&str> for Origin {
    type Error = ConfigError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let origin: Origin = "https://API.example.com".parse().unwrap();
        assert_eq!(origin.to_string(), "https://api.example.com:443");
        for uri in [
            "https://api.example.com/orders?x=1",
            "https://api.EXAMPLE.com:443/",
        ] {
            assert!(origin.matches(&uri.parse().unwrap()), "{uri}");
        }
        for uri in [
            "http://api.example.com/",
            "https://api.example.com:8443/",
            "https://api.example.com.evil.test/",
            "https://evil.test/?https://api.example.com",
            "/relative",
        ] {
            assert!(!origin.matches(&uri.parse().unwrap()), "{uri}");
        }
        let local: Origin = "http://127.0.0.1:8080".parse().unwrap();
        assert!(local.matches(&"http://127.0.0.1:8080/x".parse().unwrap()));
        assert!(!local.matches(&"http://127.0.0.1:8081/x".parse().unwrap()));
        let v6: Origin = "http://[::1]:9000".parse().unwrap();
        assert!(v6.matches(&"http://[::1]:9000/".parse().unwrap()));
    }

    #[test]
    fn rejects_what_is_not_an_origin() {
        for s in [
            "",
            "api.example.com",
            "ftp://x.test",
            "https://u:p@x.test",
            "/path",
        ] {
            assert!(s.parse::<Origin>().is_err(), "{s}");
        }
    }
}
