//! The ways the token endpoint can be told to misbehave.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::*;

/// A way for the token endpoint to misbehave.
///
/// Give faults to [`MockAuthServer::fail_next`] or [`MockAuthServer::set_fault_plan`]. A fault
/// replaces the normal answer, except [`Fault::delay`] which answers normally after a delay;
/// [`with_delay`](Fault::with_delay), [`with_status`](Fault::with_status) and
/// [`with_header`](Fault::with_header) adjust any fault. Delays use `tokio::time::sleep`, so they
/// follow a paused clock.
#[derive(Debug, Clone)]
pub struct Fault {
    pub(super) delay: Option<Duration>,
    pub(super) status: Option<StatusCode>,
    pub(super) headers: HeaderMap,
    pub(super) kind: FaultKind,
}

#[derive(Debug, Clone)]
pub(super) enum FaultKind {
    /// The normal answer.
    Succeed,
    /// A complete response.
    Respond(Bytes),
    /// No answer at all.
    Hang,
    /// Response head, then these bytes, then nothing.
    Stall(Bytes),
    /// Response head, then these bytes, then a body error.
    Abort(Bytes),
}

impl Fault {
    pub(super) fn new(kind: FaultKind) -> Self {
        Self {
            delay: None,
            status: None,
            headers: HeaderMap::new(),
            kind,
        }
    }

    /// Answers with `status` and an empty body.
    pub fn status(status: StatusCode) -> Self {
        Self::new(FaultKind::Respond(Bytes::new())).with_status(status)
    }

    /// Answers with the given status, headers and body.
    pub fn response(status: StatusCode, headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        let mut fault = Self::new(FaultKind::Respond(body.into())).with_status(status);
        fault.headers = headers;
        fault
    }

    /// Answers with an [RFC 6749 §5.2] error:
    /// `{"error": error, "error_description": description}` as `application/json`.
    ///
    /// [RFC 6749 §5.2]: https://www.rfc-editor.org/rfc/rfc6749#section-5.2
    pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Self {
        Self::json(status, error_body(error, description))
    }

    /// Answers with `body` as `application/json`; it need not be valid JSON.
    pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Respond(body.into()))
            .with_status(status)
            .with_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
    }

    /// Answers with an HTML page, as a proxy or load balancer in front of a server would.
    pub fn html(status: StatusCode, html: impl Into<String>) -> Self {
        Self::new(FaultKind::Respond(Bytes::from(html.into())))
            .with_status(status)
            .with_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )
    }

    /// Answers with `body` and no `Content-Type`.
    pub fn raw(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Respond(body.into())).with_status(status)
    }

    /// Answers normally, after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Self::new(FaultKind::Succeed).with_delay(delay)
    }

    /// Never answers. The request stays pending until the client gives up (or, over a socket,
    /// until the server shuts down).
    pub fn hang() -> Self {
        Self::new(FaultKind::Hang)
    }

    /// Answers `200 OK` as `application/json`, sends `prefix`, then never finishes the body.
    pub fn stall_body(prefix: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Stall(prefix.into())).with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
    }

    /// Answers `200 OK` as `application/json`, sends `prefix`, then fails the body with
    /// [`BodyAborted`](crate::BodyAborted) (over a socket, the connection is cut).
    pub fn abort_body(prefix: impl Into<Bytes>) -> Self {
        Self::new(FaultKind::Abort(prefix.into())).with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
    }

    /// Waits `delay` before doing what the fault says.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Uses `status` for the response. Has no effect on [`Fault::hang`].
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets a response header, replacing any value the response had. Has no effect on
    /// [`Fault::hang`].
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}
