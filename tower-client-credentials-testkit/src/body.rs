//! Response bodies used by the mock servers: full bodies with optional trailers, and the
//! broken bodies that the token endpoint's faults send.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{BoxBody, BoxError};

/// Boxes a complete body.
pub(crate) fn full(data: impl Into<Bytes>) -> BoxBody {
    MockBody::new(data.into(), None, End::Finish).boxed_unsync()
}

/// Boxes a complete body followed by trailers.
pub(crate) fn full_with_trailers(data: Bytes, trailers: HeaderMap) -> BoxBody {
    MockBody::new(data, Some(trailers), End::Finish).boxed_unsync()
}

/// Boxes a body that sends `prefix` and then never finishes.
pub(crate) fn stalled(prefix: Bytes) -> BoxBody {
    MockBody::new(prefix, None, End::Stall).boxed_unsync()
}

/// Boxes a body that sends `prefix` and then fails.
pub(crate) fn aborted(prefix: Bytes) -> BoxBody {
    MockBody::new(prefix, None, End::Abort).boxed_unsync()
}

/// What a [`MockBody`] does after its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Finish,
    Stall,
    Abort,
}

/// One data frame, then trailers, then the end that was asked for.
#[derive(Debug)]
struct MockBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    end: End,
    aborted: Aborted,
}

/// Progress of an aborting body after its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aborted {
    NotYet,
    Yielded,
    Done,
}

impl MockBody {
    fn new(data: Bytes, trailers: Option<HeaderMap>, end: End) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            trailers,
            end,
            aborted: Aborted::NotYet,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match self.end {
            End::Finish => Poll::Ready(None),
            // Never woken: the body stays pending until it is dropped.
            End::Stall => Poll::Pending,
            End::Abort => match self.aborted {
                Aborted::NotYet => {
                    // Yield once so that a server flushes the head and the data to the peer
                    // before the error tears the connection down.
                    self.aborted = Aborted::Yielded;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Aborted::Yielded => {
                    self.aborted = Aborted::Done;
                    Poll::Ready(Some(Err(Box::new(BodyAborted))))
                }
                Aborted::Done => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end == End::Finish && self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, |data| data.len() as u64);
        match self.end {
            End::Finish => SizeHint::with_exact(len),
            End::Stall | End::Abort => {
                let mut hint = SizeHint::new();
                hint.set_lower(len);
                hint
            }
        }
    }
}

/// The error that an aborting fault body ends with.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct BodyAborted;

impl std::fmt::Display for BodyAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock server aborted the response body")
    }
}

impl std::error::Error for BodyAborted {}
