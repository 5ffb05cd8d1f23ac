//! What every fault row needs: an inner service that records what reached it, the checks that
//! no secret leaks into an error, and the bounds of the refresher's retry schedule.

use std::{
    convert::Infallible,
    error::Error as StdError,
    future::{Ready, ready},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header::AUTHORIZATION};
use http_body_util::Full;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tower::ServiceExt;
use tower_client_credentials::{BearerAuth, BoxError, TokenError};
use tower_client_credentials_testkit::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use tracing::{Subscriber, span, subscriber::DefaultGuard};
use tracing_subscriber::{
    Layer, filter::filter_fn, layer::Context as LayerContext, layer::SubscriberExt,
};

pub(crate) const SECOND: Duration = Duration::from_secs(1);

/// The refresher's defaults, as documented on the builder: transient failures back off from
/// 500 ms doubling to 30 s with "equal jitter" (half to all of the delay), permanent ones wait
/// 48 to 60 s, `Retry-After` is a floor, and no delay exceeds 10 minutes.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(500);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub(crate) const PERMANENT_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// An inner service that answers `200 OK` to everything and remembers the `Authorization`
/// header of each request that reached it.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    seen: Arc<Mutex<Vec<Option<HeaderValue>>>>,
}

impl Recorder {
    /// How many requests reached the service.
    pub(crate) fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many requests reached the service without a bearer token.
    pub(crate) fn without_token(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|header| {
                !header
                    .as_ref()
                    .is_some_and(|h| h.as_bytes().starts_with(b"Bearer ") && h.len() > 7)
            })
            .count()
    }

    /// The `Authorization` header of the last request.
    pub(crate) fn last(&self) -> Option<HeaderValue> {
        self.seen.lock().unwrap().last().cloned().flatten()
    }
}

impl tower::Service<Request<Full<Bytes>>> for Recorder {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        self.seen
            .lock()
            .unwrap()
            .push(request.headers().get(AUTHORIZATION).cloned());
        ready(Ok(Response::new(Full::new(Bytes::new()))))
    }
}

/// Counts the token requests the refreshers on this thread start: the `token_fetch` spans, one
/// per token request (README, "Observability"). Installed as this thread's default subscriber,
/// so it sees the refreshers of a current-thread runtime (`#[tokio::test]`), whatever
/// transport they use and whether or not anything listens at the other end.
pub(crate) struct FetchCounter {
    fetches: Arc<AtomicU64>,
    _default: DefaultGuard,
}

impl FetchCounter {
    pub(crate) fn install() -> Self {
        let fetches = Arc::new(AtomicU64::new(0));
        let counting = CountFetchSpans(Arc::clone(&fetches)).with_filter(filter_fn(|meta| {
            meta.target().starts_with("tower_client_credentials")
        }));
        let _default =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(counting));
        Self { fetches, _default }
    }

    /// The token requests started so far.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

struct CountFetchSpans(Arc<AtomicU64>);

impl<S: Subscriber> Layer<S> for CountFetchSpans {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: LayerContext<'_, S>) {
        if attrs.metadata().name() == "token_fetch" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A request to the protected API.
pub(crate) fn api_request() -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1/api/orders")
        .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
        .expect("valid request")
}

/// Sends one request through the layer around a [`Recorder`].
pub(crate) async fn call(
    service: &BearerAuth<Recorder>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    Ok(service.clone().oneshot(api_request()).await?)
}

/// The `Display` and `Debug` text of an error and of every error in its `source()` chain.
pub(crate) fn chain_text(error: &(dyn StdError + 'static)) -> String {
    let mut text = format!("{error} | {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    text
}

/// Only the `Display` texts of an error's chain, joined the way an error reporter prints them.
pub(crate) fn display_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The client secret in every form it travels in: as is, form-encoded, and inside the Basic
/// credentials.
fn secret_forms() -> Vec<String> {
    let encoded = utf8_percent_encode(DEFAULT_CLIENT_SECRET, NON_ALPHANUMERIC).to_string();
    let form = serde_urlencoded::to_string([("s", DEFAULT_CLIENT_SECRET)]).unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{encoded}",
        utf8_percent_encode(DEFAULT_CLIENT_ID, NON_ALPHANUMERIC)
    ));
    vec![
        DEFAULT_CLIENT_SECRET.to_owned(),
        encoded,
        form.trim_start_matches("s=").to_owned(),
        basic,
    ]
}

/// Asserts that `text` (some error or status output) shows neither the client secret nor any
/// of `tokens`.
pub(crate) fn assert_no_secret(row: &str, text: &str, tokens: &[String]) {
    for secret in secret_forms() {
        assert!(
            !text.contains(&secret),
            "[{row}] the client secret ({secret:?}) leaks into: {text}"
        );
    }
    for token in tokens.iter().filter(|t| t.len() >= 8) {
        assert!(
            !text.contains(token.as_str()),
            "[{row}] a token leaks into: {text}"
        );
    }
}

/// Asserts that the error, its chain, and `TokenError`'s own formatting show no secret.
pub(crate) fn assert_error_has_no_secret(row: &str, error: &TokenError, tokens: &[String]) {
    assert_no_secret(row, &chain_text(error), tokens);
}

/// A refresher's retry schedule: transient failures back off from `base` doubling to `max`
/// with "equal jitter" (half to all of the delay), permanent ones wait 80 to 100 % of
/// `permanent`, `Retry-After` is a floor, and no delay exceeds 10 minutes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) permanent: Duration,
}

impl Schedule {
    /// The builder's defaults.
    pub(crate) const DEFAULT: Self = Self {
        base: BACKOFF_BASE,
        max: BACKOFF_MAX,
        permanent: PERMANENT_RETRY,
    };

    /// The range of the delay before the attempt that follows `failures` consecutive failures.
    fn delay_range(
        &self,
        failures: u32,
        transient: bool,
        retry_after: Option<(Duration, Duration)>,
    ) -> (Duration, Duration) {
        let (low, high) = if transient {
            let full = self
                .base
                .saturating_mul(1 << failures.saturating_sub(1).min(20))
                .min(self.max);
            (full / 2, full)
        } else {
            (self.permanent.mul_f64(0.8), self.permanent)
        };
        let (floor_low, floor_high) = retry_after.unwrap_or_default();
        (
            low.max(floor_low).min(MAX_RETRY_DELAY),
            high.max(floor_high).min(MAX_RETRY_DELAY),
        )
    }

    /// The longest the refresher can wait between two failed attempts.
    pub(crate) fn longest_delay(
        &self,
        transient: bool,
        retry_after: Option<(Duration, Duration)>,
    ) -> Duration {
        self.delay_range(40, transient, retry_after).1
    }

    /// How many token requests the schedule allows within `window` when every attempt fails,
    /// counting from the first attempt at 0. The fewest: each attempt takes `attempt_time` and
    /// waits the longest delay; the most: attempts take no time and wait the shortest delay.
    pub(crate) fn attempts_allowed(
        &self,
        window: Duration,
        transient: bool,
        retry_after: Option<(Duration, Duration)>,
        attempt_time: Duration,
    ) -> (u64, u64) {
        let count = |slowest: bool| {
            let (mut at, mut attempts, mut failures) = (Duration::ZERO, 0_u64, 0_u32);
            // The fewest are counted with a millisecond of slack at the end of the window.
            let end = if slowest {
                window.saturating_sub(Duration::from_millis(1))
            } else {
                window
            };
            while at <= end {
                attempts += 1;
                failures += 1;
                let (low, high) = self.delay_range(failures, transient, retry_after);
                at += if slowest { attempt_time + high } else { low };
            }
            attempts
        };
        (count(true), count(false))
    }
}

/// How many token requests a healthy refresher makes within `window` for tokens of
/// `lifetime`, counting the first one at 0: one per refresh interval, which is the lifetime
/// less a margin of `min(60 s, 20 %)` stretched by up to 10 % of jitter.
pub(crate) fn refreshes_allowed(window: Duration, lifetime: Duration) -> (u64, u64) {
    let margin = Duration::from_secs(60).min(lifetime.mul_f64(0.2));
    let longest = lifetime - margin;
    let shortest = lifetime - margin.mul_f64(1.1);
    let count = |interval: Duration| (window.as_secs_f64() / interval.as_secs_f64()) as u64 + 1;
    (count(longest).saturating_sub(1).max(1), count(shortest))
}
