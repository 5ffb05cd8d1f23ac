//! The load loop of the real-server suites: `tasks` tasks send `GET`s through the crate's
//! middleware as fast as they can until a deadline (checked between requests), and tally what
//! came back to them. Each suite starts its own server, counts its own token requests and
//! prints its own line; the loop and the checks on what the callers got are the same.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::{task::JoinSet, time::Instant};
use tower::ServiceExt;

use super::http::Api;

/// Runs `tasks` tasks sending `GET url` through `api` for `run`; what they got back, and how
/// long they took in all.
pub(crate) async fn run(api: &Api, url: &str, tasks: usize, run: Duration) -> (Tally, Duration) {
    let started = Instant::now();
    let end = started + run;
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (api, url) = (api.clone(), url.to_owned());
        set.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < end {
                tally.record(send(&api, &url).await);
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(result) = set.join_next().await {
        tally.add(result.expect("load task"));
    }
    (tally, started.elapsed())
}

/// The resource server's reasons for refusing, counted.
pub(crate) fn count(reasons: Vec<String>) -> BTreeMap<String, u64> {
    let mut counted = BTreeMap::new();
    for reason in reasons {
        *counted.entry(reason).or_default() += 1;
    }
    counted
}

/// What the callers of the load test got back.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) unauthorized: u64,
    pub(crate) other: u64,
    pub(crate) errors: u64,
    /// The first few unexpected statuses and errors.
    pub(crate) examples: Vec<String>,
}

impl Tally {
    fn record(&mut self, outcome: Result<StatusCode, String>) {
        self.sent += 1;
        match outcome {
            Ok(StatusCode::OK) => self.ok += 1,
            Ok(StatusCode::UNAUTHORIZED) => self.unauthorized += 1,
            Ok(status) => {
                self.other += 1;
                self.example(status.to_string());
            }
            Err(error) => {
                self.errors += 1;
                self.example(error);
            }
        }
    }

    fn example(&mut self, what: String) {
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }

    fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.unauthorized += other.unauthorized;
        self.other += other.other;
        self.errors += other.errors;
        for example in other.examples {
            self.example(example);
        }
    }

    /// What the callers got, for the report: `N requests (R/s); returned to the caller: …`.
    pub(crate) fn figures(&self, elapsed: Duration) -> String {
        format!(
            "{} requests ({:.0}/s); returned to the caller: {} x 200, {} x 401, {} other, {} \
             errors",
            self.sent,
            self.sent as f64 / elapsed.as_secs_f64(),
            self.ok,
            self.unauthorized,
            self.other,
            self.errors,
        )
    }

    /// Every request came back to its caller as 200, none as 401, none failed, and every 200
    /// came from the resource server, which `accepted` and `rejected` that many in all and
    /// refused for `reasons`.
    pub(crate) fn assert_all_ok(
        &self,
        accepted: u64,
        rejected: u64,
        reasons: &BTreeMap<String, u64>,
    ) {
        assert_eq!(
            self.unauthorized, 0,
            "requests returned to the caller as 401; the resource server refused {rejected} in \
             all: {reasons:?}",
        );
        assert_eq!(self.errors, 0, "failed requests, e.g. {:?}", self.examples);
        assert_eq!(
            self.other, 0,
            "unexpected statuses, e.g. {:?}",
            self.examples
        );
        assert_eq!(self.ok, self.sent);
        assert_eq!(accepted, self.ok, "every 200 came from the resource server");
    }
}

/// A GET through the middleware: its status once the body is read, or the error.
async fn send(api: &Api, url: &str) -> Result<StatusCode, String> {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = api
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(status)
}
