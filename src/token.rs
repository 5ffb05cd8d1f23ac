//! The token model: an access token, the `Authorization` header built from it once, when it
//! expires, and how its lifetime is worked out.
//!
//! A [`Token`] is immutable. The refresher publishes a new `Arc<Token>` for every token it
//! obtains; the layer clones the token's prebuilt [`HeaderValue`] into each request, which is a
//! reference-count increment, not a copy.
//!
//! Lifetime rules ([`ExpirySource`]): `expires_in` from the token response is the primary
//! source, because it is relative and so immune to the client's clock. A token response without
//! `expires_in` whose access token is a JWT is read with `jsonwebtoken` (claims only, no
//! signature check: the client holds no key) and its lifetime is `exp - iat` when `iat` is
//! present (also immune to clock skew) and `exp - now` otherwise. With neither, the configured
//! default lifetime applies.

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;
use tokio::time::Instant;

/// The `Authorization` scheme of bearer tokens (RFC 6750).
pub(crate) const BEARER: &str = "Bearer";
/// The `Authorization` scheme of DPoP-bound tokens (RFC 9449 §7.1).
pub(crate) const DPOP: &str = "DPoP";

/// The longest lifetime a token is taken to have, whatever the server says. An `expires_in` of
/// `1e30` is treated as this.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// An access token held by a [`TokenHandle`](crate::TokenHandle).
///
/// Its `Debug` output never shows the token itself.
pub struct Token {
    header: HeaderValue,
    prefix_len: usize,
    pub(crate) generation: u64,
    pub(crate) expires_at: Instant,
    /// When the refresher withdraws the token: a little before `expires_at`, so that timer
    /// granularity and scheduling delays never let an expired token out.
    pub(crate) usable_until: Instant,
    pub(crate) expires_wall: SystemTime,
    pub(crate) lifetime: Duration,
    scope: Option<String>,
    /// For a DPoP-bound token, its `ath` (base64url SHA-256 of the token), which every proof
    /// sent with it carries.
    pub(crate) ath: Option<Box<str>>,
    /// Set by the refresher's timer when `usable_until` passes (see `refresher::arm`).
    expired: AtomicBool,
}

impl Token {
    /// Builds a token whose `Authorization` value is `"{scheme} {access_token}"`, marked
    /// sensitive; `scheme` is `Bearer` or, for a DPoP-bound token, `DPoP`. Its lifetime counts
    /// from `requested_at`, the moment the token request was sent: the server's clock started
    /// no earlier than that.
    pub(crate) fn new(
        scheme: &'static str,
        access_token: &str,
        generation: u64,
        lifetime: Duration,
        scope: Option<String>,
        requested_at: Instant,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let header = sensitive_header(scheme, access_token)?;
        let lifetime = lifetime.min(MAX_LIFETIME);
        let expires_at = requested_at + lifetime;
        let in_flight = Instant::now().saturating_duration_since(requested_at);
        Ok(Self {
            header,
            prefix_len: scheme.len() + 1,
            generation,
            expires_at,
            usable_until: expires_at - expiry_margin(lifetime),
            expires_wall: SystemTime::now() + lifetime.saturating_sub(in_flight),
            lifetime,
            scope,
            ath: (scheme == DPOP).then(|| crate::dpop::ath(access_token).into_boxed_str()),
            expired: AtomicBool::new(false),
        })
    }

    /// `Bearer`, or `DPoP` for a token bound to the client's
    /// [DPoP key](crate::ClientCredentialsBuilder::dpop).
    pub fn token_type(&self) -> &'static str {
        if self.ath.is_some() { DPOP } else { BEARER }
    }

    /// The `Authorization` header value, such as `Bearer eyJ...`, marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// The access token itself. Handle with care: it is a credential.
    pub fn access_token(&self) -> &str {
        // The header was built from a `&str`, so it is valid UTF-8 past the scheme.
        std::str::from_utf8(&self.header.as_bytes()[self.prefix_len..]).unwrap_or_default()
    }

    /// When the token expires, on tokio's clock.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// The lifetime the token was issued with.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The scope the server granted, when it said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// A number that grows with every token the handle obtains.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the token may still be sent at `now` (the safety margin before expiry included).
    pub(crate) fn is_usable_at(&self, now: Instant) -> bool {
        now < self.usable_until && !self.is_marked_expired()
    }

    /// Whether the timer armed when the token was published has marked it expired: the
    /// request path's check, one relaxed load.
    #[inline]
    pub(crate) fn is_marked_expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_expired(&self) {
        self.expired.store(true, Ordering::Relaxed);
    }

    /// When to withdraw the token, corrected for time the monotonic clock did not see (a
    /// suspended machine): earlier than `usable_until` when the wall clock says the token
    /// expires sooner than the monotonic clock does, by more than `tolerance`.
    pub(crate) fn withdraw_at(&self, now: Instant, tolerance: Duration) -> Instant {
        let mono_left = self.expires_at.saturating_duration_since(now);
        let wall_left = self
            .expires_wall
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if wall_left + tolerance < mono_left {
            (now + wall_left)
                .checked_sub(expiry_margin(self.lifetime))
                .unwrap_or(now)
                .min(self.usable_until)
        } else {
            self.usable_until
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[redacted]")
            .field("generation", &self.generation)
            .field("lifetime", &self.lifetime)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("token_type", &self.token_type())
            .finish()
    }
}

/// `"{scheme} {credential}"` as a header value whose bytes are zeroed when the last clone of
/// it is dropped: the request path shares them (no copy), and they do not linger in freed
/// memory afterwards.
pub(crate) fn sensitive_header(
    scheme: &str,
    credential: &str,
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut value = Vec::with_capacity(scheme.len() + 1 + credential.len());
    value.extend_from_slice(scheme.as_bytes());
    value.push(b' ');
    value.extend_from_slice(credential.as_bytes());
    let bytes = bytes::Bytes::from_owner(zeroize::Zeroizing::new(value));
    let mut header = HeaderValue::from_maybe_shared(bytes)?;
    header.set_sensitive(true);
    Ok(header)
}

/// How long before its expiry a token stops being sent: a tenth of its lifetime, at most one
/// second. Far longer than timer granularity and scheduling delays, far shorter than the
/// refresh margin, so it only matters when refreshing keeps failing.
pub(crate) fn expiry_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(1))
}

/// Where a token's lifetime comes from.
///
/// Default: [`ExpirySource::ExpiresIn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpirySource {
    /// `expires_in` from the token response, cut short by the JWT's `exp` read with the local
    /// clock when the token is a JWT and the two agree (within 5 s of clock skew plus a second
    /// of rounding, and `exp` not already past); the JWT's `exp` alone
    /// only when `expires_in` is absent. When they disagree, `expires_in` holds and a warning
    /// is logged once.
    #[default]
    ExpiresIn,
    /// The JWT's `exp` claim (`exp - iat`); `expires_in` only when the token is not a JWT
    /// with `exp`.
    JwtExp,
    /// The earlier of the two, when both are present.
    Earliest,
}

/// How far the local clock may be off the authorization server's before a JWT's `exp`, read
/// with the local clock, is no longer believed over `expires_in`.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Whole-second rounding: servers write `iat` and `exp` in whole seconds (flooring the time of
/// issue), and `expires_in` as a whole number, so the two may differ by up to a second.
const ROUNDING: f64 = 1.0;

/// Differences between `exp` and `expires_in` smaller than this are measurement noise (the
/// time between the server's clock read and ours), not worth a shorter lifetime: the expiry
/// margin before a token's end covers them.
const NOISE: f64 = 0.05;

/// The lifetime worked out for a token, counted from when its request was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Lifetime {
    pub(crate) duration: Duration,
    /// The JWT's `exp` disagreed with `expires_in` by more than the skew bound (and was not
    /// believed): `exp - (now + expires_in)` at receipt, in seconds.
    pub(crate) skew: Option<f64>,
}

/// Works out a token's lifetime from what the server said.
///
/// `now` is the wall clock when the response arrived and `in_flight` how long after the
/// request was sent that was: an `exp` read with the local clock counts from the send, like
/// `expires_in`. `Err` carries a description of why the token cannot be used (it is already
/// expired).
pub(crate) fn lifetime(
    source: ExpirySource,
    expires_in: Option<Duration>,
    access_token: &str,
    default: Duration,
    now: SystemTime,
    in_flight: Duration,
) -> Result<Lifetime, String> {
    let claims = JwtTimes::read(access_token, now);
    let jwt = || claims.map(|claims| claims.lifetime());
    let mut skew = None;
    let chosen = match (source, expires_in) {
        (ExpirySource::ExpiresIn, Some(expires_in)) => match claims.and_then(|c| c.exp_left) {
            Some(exp_left) => {
                let (duration, disagreement) = checked_against_exp(expires_in, exp_left, in_flight);
                skew = disagreement;
                Some(duration)
            }
            None => Some(expires_in),
        },
        (ExpirySource::ExpiresIn, None) => jwt(),
        (ExpirySource::JwtExp, expires_in) => jwt().or(expires_in),
        (ExpirySource::Earliest, Some(expires_in)) => {
            Some(jwt().map_or(expires_in, |jwt| jwt.min(expires_in)))
        }
        (ExpirySource::Earliest, None) => jwt(),
    };
    match chosen {
        Some(Duration::ZERO) => Err("the token is already expired".into()),
        Some(lifetime) => Ok(Lifetime {
            duration: lifetime.min(MAX_LIFETIME),
            skew,
        }),
        None => Ok(Lifetime {
            duration: default,
            skew,
        }),
    }
}

/// `expires_in` cut short by `exp` (`exp_left` seconds after receipt, `in_flight` after the
/// send), when the two agree: within whole-second rounding and [`CLOCK_SKEW`] of each other,
/// and `exp` not yet past on the local clock (a token the server just issued is alive: an
/// `exp` in the past means the clocks disagree). Otherwise `expires_in`, and the disagreement
/// in seconds. A token that `exp` leaves with very little life is refreshed soon, which the
/// refresher's least interval between fetches keeps from becoming a loop.
fn checked_against_exp(
    expires_in: Duration,
    exp_left: f64,
    in_flight: Duration,
) -> (Duration, Option<f64>) {
    let relative = expires_in.as_secs_f64();
    let absolute = exp_left + in_flight.as_secs_f64();
    let bound = ROUNDING + CLOCK_SKEW.as_secs_f64();
    let agree = (absolute - relative).abs() <= bound && absolute > 0.0;
    if !agree {
        return (expires_in, Some(absolute - relative));
    }
    if absolute >= relative - NOISE {
        return (expires_in, None);
    }
    // `absolute` is positive here.
    let by_exp = Duration::try_from_secs_f64(absolute).unwrap_or(expires_in);
    (by_exp.min(expires_in), None)
}

/// The times of a JWT access token: its `exp` and `iat`, as seconds since the epoch, and how
/// long after `now` it expires (negative when it already has).
#[derive(Debug, Clone, Copy)]
struct JwtTimes {
    exp: f64,
    iat: Option<f64>,
    exp_left: Option<f64>,
}

impl JwtTimes {
    /// `None` when the token is not a JWT or has no usable `exp`.
    fn read(token: &str, now: SystemTime) -> Option<Self> {
        // A JWS compact serialization has exactly three segments; anything else is opaque to
        // us.
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return None;
        }
        // A map, not a struct: serde would also accept a JSON array as a struct.
        let claims: serde_json::Map<String, serde_json::Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
        // NumericDate values may be fractional (RFC 7519 §2).
        let date = |name: &str| claims.get(name)?.as_f64().filter(|n| n.is_finite());
        let exp = date("exp")?;
        let exp_left = now
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|now| exp - now.as_secs_f64())
            .filter(|left| left.is_finite());
        Some(Self {
            exp,
            iat: date("iat"),
            exp_left,
        })
    }

    /// `exp - iat` when both are present (immune to clock skew), `exp - now` when only `exp`
    /// is; zero when it is already expired.
    fn lifetime(&self) -> Duration {
        let seconds = match (self.iat, self.exp_left) {
            (Some(iat), _) => self.exp - iat,
            (None, Some(left)) => left,
            (None, None) => 0.0,
        };
        if seconds <= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(seconds).unwrap_or(MAX_LIFETIME)
        }
    }
}

/// The lifetime of a JWT access token: `exp - iat` when both are present, `exp - now` when only
/// `exp` is. `None` when the token is not a JWT or has no usable `exp`; `Some(ZERO)` when it
/// is already expired.
#[cfg(test)]
pub(crate) fn jwt_lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    JwtTimes::read(token, now).map(|times| times.lifetime())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn jwt_lifetime_prefers_exp_minus_iat() {
        // iat far in the past relative to our clock: a skewed server. exp - iat still holds.
        let token = jwt(r#"{"iat":1000,"exp":4600}"#);
        assert_eq!(jwt_lifetime(&token, now()), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn jwt_lifetime_without_iat_uses_the_clock() {
        let token = jwt(r#"{"exp":1700000300}"#);
        assert_eq!(jwt_lifetime(&token, now()), Some(Duration::from_secs(300)));
        let past = jwt(r#"{"exp":1699999000}"#);
        assert_eq!(jwt_lifetime(&past, now()), Some(Duration::ZERO));
    }

    #[test]
    fn jwt_lifetime_accepts_fractional_dates() {
        let token = jwt(r#"{"iat":10.5,"exp":70.0}"#);
        assert_eq!(
            jwt_lifetime(&token, now()),
            Some(Duration::from_millis(59_500))
        );
    }

    #[test]
    fn not_a_jwt_has_no_lifetime() {
        assert_eq!(jwt_lifetime("opaque-token", now()), None);
        assert_eq!(jwt_lifetime("a.b", now()), None);
        assert_eq!(jwt_lifetime("%%%.%%%.%%%", now()), None);
        assert_eq!(jwt_lifetime(&jwt(r#"{"iat":5}"#), now()), None);
        assert_eq!(jwt_lifetime(&jwt(r#"{"exp":"soon"}"#), now()), None);
        assert_eq!(jwt_lifetime(&jwt("[1,2]"), now()), None);
    }

    /// `lifetime` at [`now()`], 50 ms after the request was sent, without the skew report.
    fn life(
        source: ExpirySource,
        expires_in: Option<Duration>,
        token: &str,
        default: Duration,
    ) -> Result<Duration, String> {
        lifetime(source, expires_in, token, default, now(), IN_FLIGHT).map(|l| l.duration)
    }

    const IN_FLIGHT: Duration = Duration::from_millis(50);

    /// The default source's full answer (skew report included) for a token response with
    /// `expires_in` and `token`, received at `at`, 50 ms after the request was sent.
    fn expires_in_at(expires_in: Duration, token: &str, at: SystemTime) -> Lifetime {
        lifetime(
            ExpirySource::ExpiresIn,
            Some(expires_in),
            token,
            expires_in,
            at,
            IN_FLIGHT,
        )
        .unwrap()
    }

    #[test]
    fn lifetime_sources() {
        let token = jwt(r#"{"iat":0,"exp":120}"#);
        let default = Duration::from_secs(7);
        let hour = Duration::from_secs(3600);
        let two_min = Duration::from_secs(120);
        use ExpirySource::*;
        // This `exp` is long past on the local clock: not believed over `expires_in`.
        assert_eq!(life(ExpiresIn, Some(hour), &token, default), Ok(hour));
        assert_eq!(life(ExpiresIn, None, &token, default), Ok(two_min));
        assert_eq!(life(JwtExp, Some(hour), &token, default), Ok(two_min));
        assert_eq!(life(JwtExp, Some(hour), "opaque", default), Ok(hour));
        assert_eq!(life(Earliest, Some(hour), &token, default), Ok(two_min));
        assert_eq!(
            life(Earliest, Some(Duration::from_secs(60)), &token, default),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(life(ExpiresIn, None, "opaque", default), Ok(default));
        assert!(life(ExpiresIn, Some(Duration::ZERO), "opaque", default).is_err());
        assert_eq!(
            life(ExpiresIn, Some(Duration::MAX), "opaque", default),
            Ok(MAX_LIFETIME)
        );
    }

    /// A JWT issued `since_issue` seconds before [`now()`] with `iat` floored to the second, as
    /// oidc-provider and Keycloak write it, and `exp = iat + ttl`.
    fn floored(since_issue: f64, ttl: u64) -> String {
        let issued = 1_700_000_000.0 - since_issue;
        let iat = issued.floor() as u64;
        jwt(&format!(r#"{{"iat":{iat},"exp":{}}}"#, iat + ttl))
    }

    #[test]
    fn exp_cuts_expires_in_short_when_iat_was_floored() {
        let two = Duration::from_secs(2);
        // Issued at …99.9 (0.1 s ago): iat …99, exp …01, 1 s from now, 1.05 s from the send.
        let token = floored(0.1, 2);
        let got = expires_in_at(two, &token, now());
        assert_eq!(got.duration, Duration::from_millis(1050));
        assert_eq!(got.skew, None);
        // Issued exactly on a second: `exp` and `expires_in` agree (to the send's 50 ms).
        let token = jwt(r#"{"iat":1700000000,"exp":1700000002}"#);
        let got = expires_in_at(two, &token, now());
        assert_eq!(got.duration, Duration::from_millis(2000));
        // A 1-second token issued at …99.7 (iat …99, exp …00): it dies 0.3 s later, and is
        // used no longer.
        let one = Duration::from_secs(1);
        let token = jwt(r#"{"iat":1699999999,"exp":1700000000}"#);
        let at = UNIX_EPOCH + Duration::from_millis(1_699_999_999_700);
        let got = expires_in_at(one, &token, at);
        let seconds = got.duration.as_secs_f64();
        assert!((seconds - 0.35).abs() < 1e-6, "{seconds}");
        assert_eq!(got.skew, None);
        // A long token loses its rounding too, and nothing more.
        let hour = Duration::from_secs(3600);
        let token = floored(0.4, 3600);
        let got = life(ExpirySource::ExpiresIn, Some(hour), &token, hour).unwrap();
        assert_eq!(got, Duration::from_millis(3_599_050));
    }

    #[test]
    fn exp_from_a_skewed_clock_is_not_believed() {
        let hour = Duration::from_secs(3600);
        // The local clock runs 30 s ahead of the server's: exp looks 30 s early.
        let token = jwt(r#"{"iat":1699999970,"exp":1700003570}"#);
        let got = expires_in_at(hour, &token, now());
        assert_eq!(got.duration, hour);
        let skew = got.skew.expect("reported");
        assert!((skew + 29.95).abs() < 1e-6, "{skew}");
        // 4 s ahead is within the bound: believed.
        let token = jwt(r#"{"iat":1699999996,"exp":1700003596}"#);
        let got = expires_in_at(hour, &token, now());
        assert_eq!(got.duration, Duration::from_millis(3_596_050));
        assert_eq!(got.skew, None);
        // A 2-second token whose exp is already past on our clock: a skewed clock, not a dead
        // token; expires_in holds.
        let two = Duration::from_secs(2);
        let token = jwt(r#"{"iat":1699999997,"exp":1699999999}"#);
        let got = expires_in_at(two, &token, now());
        assert_eq!(got.duration, two);
        assert!(got.skew.is_some());
        // exp later than expires_in says (our clock behind): expires_in holds, silently
        // within the bound.
        let token = jwt(r#"{"iat":1700000000,"exp":1700000004}"#);
        let got = expires_in_at(two, &token, now());
        assert_eq!((got.duration, got.skew), (two, None));
    }

    #[test]
    fn token_debug_is_redacted_and_header_sensitive() {
        let token = Token::new(
            "Bearer",
            "s3cr3t-token",
            1,
            Duration::from_secs(5),
            None,
            Instant::now(),
        )
        .unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(token.header_value().is_sensitive());
        assert_eq!(token.header_value(), "Bearer s3cr3t-token");
        assert_eq!(token.access_token(), "s3cr3t-token");
    }
}
