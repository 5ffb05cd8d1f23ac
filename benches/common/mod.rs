//! What the benchmarks share: the request every row sends, the inner service, the naive
//! `RwLock<String>` baseline, polling a ready future without a runtime, and the arithmetic and
//! printing of ratios.
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    fmt,
    future::{Future, Ready, ready},
    pin::{Pin, pin},
    sync::{Arc, RwLock},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Method, Request, Response, Uri,
    header::{ACCEPT, AUTHORIZATION, USER_AGENT},
};
use http_body_util::Full;
use std::hint::black_box;
use tower::{Service, service_fn};

/// The request every row sends: same method, URI and headers; only the body varies (row 5).
#[derive(Clone)]
pub struct Template {
    uri: String,
    body: Bytes,
}

impl Template {
    /// A `POST` with an empty body.
    pub fn new() -> Self {
        Self::to("http://127.0.0.1:8080/api/orders?limit=10")
    }

    /// The same request with a body of `len` bytes, allocated once and shared by every request.
    pub fn with_body(len: usize) -> Self {
        Self {
            body: Bytes::from(vec![b'x'; len]),
            ..Self::new()
        }
    }

    /// The same request to `uri`.
    pub fn to(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            body: Bytes::new(),
        }
    }

    /// A fresh request, as a client builds one: the URI parsed from a string of its own (so
    /// requests share no reference counts), three headers whose names and values are static.
    /// The `Authorization` header added by the middleware is the fourth, which fits the header
    /// map's first allocation.
    pub fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::try_from(self.uri.clone()).expect("valid URI");
        let headers = request.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("bench/1.0"));
        headers.insert(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("3f1c9a52"),
        );
        request
    }

    /// `n` fresh requests.
    pub fn requests(&self, n: usize) -> Vec<Request<Full<Bytes>>> {
        (0..n).map(|_| self.request()).collect()
    }
}

/// The response of the inner service.
pub type Resp = Response<Full<Bytes>>;

/// The inner service of every row: looks at the request (so that nothing is optimized away)
/// and returns a ready, empty `200 OK`.
pub fn inner() -> impl Service<
    Request<Full<Bytes>>,
    Response = Resp,
    Error = Infallible,
    Future = Ready<Result<Resp, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(|request: Request<Full<Bytes>>| {
        black_box(&request);
        ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))))
    })
}

/// Drives `service` to readiness and calls it, polling the response future once with a no-op
/// waker. Panics if either is not ready at once: every service here answers synchronously.
#[inline(always)]
pub fn call_now<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(error)) => panic!("service failed: {error:?}"),
        Poll::Pending => panic!("service not ready"),
    }
    let future = pin!(service.call(request));
    match future.poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(error)) => panic!("request failed: {error:?}"),
        Poll::Pending => panic!("response not ready"),
    }
}

/// Sends every request in `requests` through `service` and returns the time it took.
pub fn timed_batch<S>(service: &mut S, requests: &mut Vec<Request<Full<Bytes>>>) -> Duration
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: fmt::Debug,
{
    let start = std::time::Instant::now();
    for request in requests.drain(..) {
        black_box(call_now(service, request));
    }
    start.elapsed()
}

/// What users write by hand: the token in an `Arc<RwLock<String>>`, read and formatted into a
/// new header value on every request.
#[derive(Clone)]
pub struct NaiveBearer<S> {
    inner: S,
    token: Arc<RwLock<String>>,
}

impl<S> NaiveBearer<S> {
    pub fn new(inner: S, token: Arc<RwLock<String>>) -> Self {
        Self { inner, token }
    }
}

impl<S, B> Service<Request<B>> for NaiveBearer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let header = {
            let token = self.token.read().unwrap_or_else(|p| p.into_inner());
            format!("Bearer {token}")
        };
        let mut value = HeaderValue::try_from(header).expect("valid token");
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
        self.inner.call(request)
    }
}

/// The same, written as async code usually is: the token in a `tokio::sync::RwLock`, read with
/// `.await` inside a boxed future.
#[derive(Clone)]
pub struct NaiveAsyncBearer<S> {
    inner: S,
    token: Arc<tokio::sync::RwLock<String>>,
}

impl<S> NaiveAsyncBearer<S> {
    pub fn new(inner: S, token: Arc<tokio::sync::RwLock<String>>) -> Self {
        Self { inner, token }
    }
}

impl<S, B> Service<Request<B>> for NaiveAsyncBearer<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was driven to readiness makes the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = Arc::clone(&self.token);
        Box::pin(async move {
            let header = format!("Bearer {}", *token.read().await);
            let mut value = HeaderValue::try_from(header).expect("valid token");
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
            inner.call(request).await
        })
    }
}

/// Whether the binary runs as a benchmark (`cargo bench`) rather than as a smoke test
/// (`cargo test --benches`, `cargo bench -- --test`) or a listing.
pub fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench")
        && !has("--test")
        && !has("--list")
        && !args.iter().any(|a| a.starts_with("--profile-time"))
}

/// `nproc` and the CPU model, for the report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {model}")
}

/// CPU time used by this process so far, all threads (user + system, from `/proc/self/stat`,
/// in clock ticks of 10 ms). Unlike wall time, it does not grow when other processes take the
/// cores away, so CPU time per request compares two cases fairly on a busy machine.
pub fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may contain spaces) start with the state, field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i - 3].parse::<u64>().expect("clock ticks");
    // utime and stime are fields 14 and 15; USER_HZ is 100 on Linux.
    Duration::from_millis((ticks(14) + ticks(15)) * 10)
}

/// The median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "no values");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A sample's median and its interquartile range.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        let median = median(&mut sorted);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            median,
            q1: at(0.25),
            q3: at(0.75),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} [{:.3}–{:.3}]", self.median, self.q1, self.q3)
    }
}

/// Element-wise `a[i] / b[i]`: ratios of measurements taken in the same round.
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a / b).collect()
}

/// How a target fared: `met` or `MISSED`.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
