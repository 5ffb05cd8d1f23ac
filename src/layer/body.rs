//! Request bodies that can be sent twice, for the retry after a 401.
//!
//! `http_body::Body` cannot be cloned, so [`ReplayBody`] says, per body type, how to send the
//! same bytes again:
//!
//! - bodies that are already in memory (`Full<Bytes>`, `Empty<Bytes>`, `String`) are simply
//!   copied: for `Full<Bytes>` that is one `Bytes` clone, a reference-count increment;
//! - boxed bodies (`BoxBody`, `UnsyncBoxBody`, `tonic::body::Body` with the `tonic` feature,
//!   `axum::body::Body` with the `axum` feature) are wrapped in a [`RecordedBody`] that keeps each chunk it passes on (up to a
//!   limit), and the retry sends the kept chunks followed by whatever the first attempt had not
//!   read yet, then the trailers: byte for byte what the first attempt would have sent;
//! - a body known to be empty costs nothing;
//! - `hyper::body::Incoming` (a proxied body) cannot be rebuilt and is never retried.
//!
//! Implement [`ReplayBody`] for your own body type with [`Replay::ready`] (a copy you made),
//! [`Replay::record`] (for a type that can box another body) or [`Replay::none`].

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{
    BodyExt, Empty, Full,
    combinators::{BoxBody, UnsyncBoxBody},
};

/// A request body that [`BearerAuth`](crate::BearerAuth) can send a second time.
pub trait ReplayBody: Body + Sized {
    /// Splits `self` into the body for the first attempt and the means to send the same bytes
    /// again. Bodies that would need more than `limit` bytes of buffering may decline.
    fn into_replay(self, limit: usize) -> (Self, Replay<Self>);
}

/// How to get a request body back for the retry. Built by [`ReplayBody::into_replay`].
pub struct Replay<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    None,
    Ready(B),
    Recorded(Arc<dyn Source<B>>),
}

impl<B> Replay<B> {
    /// The body cannot be sent again; the request is not retried.
    pub fn none() -> Self {
        Self { kind: Kind::None }
    }

    /// A copy of the body, made in advance.
    pub fn ready(body: B) -> Self {
        Self {
            kind: Kind::Ready(body),
        }
    }

    /// Wraps `inner` in a [`RecordedBody`] that keeps up to `limit` bytes as they are sent.
    /// `wrap` turns a recorded body into `B` (for a boxed body type, its `new`). Returns the
    /// body for the first attempt and the replay.
    pub fn record<I>(inner: I, limit: usize, wrap: fn(RecordedBody<I, B>) -> B) -> (B, Self)
    where
        I: Body<Data = Bytes> + Unpin + Send + 'static,
        B: 'static,
    {
        let recording = Arc::new(Recording {
            state: Mutex::new(RecordingState {
                inner: Some(inner),
                chunks: Vec::new(),
                buffered: 0,
                limit,
                trailers: None,
                overflowed: false,
                finished: false,
                failed: false,
                epoch: 0,
            }),
            wrap,
        });
        let first = wrap(RecordedBody {
            recording: Arc::clone(&recording),
            epoch: 0,
            cursor: Cursor::Recording,
        });
        let replay = Self {
            kind: Kind::Recorded(recording),
        };
        (first, replay)
    }

    /// The body for the retry, or `None` if it cannot be had (more than the limit was sent,
    /// or the body failed).
    pub(crate) fn take(self) -> Option<B> {
        match self.kind {
            Kind::None => None,
            Kind::Ready(body) => Some(body),
            Kind::Recorded(source) => source.replay(),
        }
    }
}

impl<B> fmt::Debug for Replay<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::None => "None",
            Kind::Ready(_) => "Ready",
            Kind::Recorded(_) => "Recorded",
        };
        f.debug_tuple("Replay").field(&kind).finish()
    }
}

trait Source<B>: Send + Sync {
    fn replay(self: Arc<Self>) -> Option<B>;
}

struct Recording<I, B> {
    state: Mutex<RecordingState<I>>,
    wrap: fn(RecordedBody<I, B>) -> B,
}

struct RecordingState<I> {
    /// The original body, read by whichever attempt is current.
    inner: Option<I>,
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    overflowed: bool,
    finished: bool,
    failed: bool,
    /// Bumped when a replay starts: bodies of earlier attempts then end.
    epoch: u32,
}

impl<I, B> Recording<I, B> {
    fn lock(&self) -> MutexGuard<'_, RecordingState<I>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<I, B> Source<B> for Recording<I, B>
where
    I: Send,
{
    fn replay(self: Arc<Self>) -> Option<B> {
        let epoch = {
            let mut state = self.lock();
            if state.overflowed || state.failed || state.epoch > 0 {
                return None;
            }
            state.epoch += 1;
            state.epoch
        };
        let wrap = self.wrap;
        Some(wrap(RecordedBody {
            recording: self,
            epoch,
            cursor: Cursor::Replaying {
                next: 0,
                trailers_sent: false,
            },
        }))
    }
}

enum Cursor {
    /// The first attempt: pass frames on and keep them.
    Recording,
    /// The retry: send the kept chunks, then the rest of the original.
    Replaying { next: usize, trailers_sent: bool },
}

/// A body that keeps the chunks it passes on so they can be sent again. Made by
/// [`Replay::record`].
pub struct RecordedBody<I, B> {
    recording: Arc<Recording<I, B>>,
    epoch: u32,
    cursor: Cursor,
}

impl<I, B> fmt::Debug for RecordedBody<I, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedBody").finish_non_exhaustive()
    }
}

impl<I, B> Body for RecordedBody<I, B>
where
    I: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = I::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, I::Error>>> {
        let this = self.get_mut();
        let mut state = this.recording.lock();
        if state.epoch != this.epoch {
            // A later attempt has taken over.
            return Poll::Ready(None);
        }
        let recording = match &mut this.cursor {
            Cursor::Recording => true,
            Cursor::Replaying {
                next,
                trailers_sent,
            } => {
                if let Some(chunk) = state.chunks.get(*next) {
                    *next += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
                }
                if state.finished {
                    if !*trailers_sent && let Some(trailers) = &state.trailers {
                        *trailers_sent = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
                    }
                    return Poll::Ready(None);
                }
                false
            }
        };
        let Some(inner) = state.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                state.finished = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(error))) => {
                state.failed = true;
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if recording {
            if let Some(data) = frame.data_ref() {
                let state = &mut *state;
                if !state.overflowed {
                    // `buffered <= limit` holds: no overflow, whatever the limit.
                    if data.len() > state.limit - state.buffered {
                        state.overflowed = true;
                        state.chunks = Vec::new();
                    } else {
                        state.buffered += data.len();
                        state.chunks.push(data.clone());
                    }
                }
            } else if let Some(trailers) = frame.trailers_ref() {
                state.trailers = Some(trailers.clone());
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let state = self.recording.lock();
        if state.epoch != self.epoch {
            return true;
        }
        let replay_pending = match &self.cursor {
            Cursor::Recording => false,
            Cursor::Replaying {
                next,
                trailers_sent,
            } => *next < state.chunks.len() || (!*trailers_sent && state.trailers.is_some()),
        };
        !replay_pending
            && (state.finished
                || state
                    .inner
                    .as_ref()
                    .is_none_or(|inner| inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.recording.lock();
        match &self.cursor {
            Cursor::Recording => state
                .inner
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint()),
            Cursor::Replaying { .. } => {
                // The whole body again; exact only when the original was read to the end.
                if state.finished {
                    SizeHint::with_exact(state.buffered as u64)
                } else {
                    let mut hint = SizeHint::new();
                    hint.set_lower(state.buffered as u64);
                    hint
                }
            }
        }
    }
}

impl ReplayBody for Full<Bytes> {
    fn into_replay(self, _limit: usize) -> (Self, Replay<Self>) {
        // Already in memory: a copy is a reference-count increment.
        (self.clone(), Replay::ready(self))
    }
}

impl ReplayBody for Empty<Bytes> {
    fn into_replay(self, _limit: usize) -> (Self, Replay<Self>) {
        (self, Replay::ready(Empty::new()))
    }
}

impl ReplayBody for String {
    fn into_replay(self, limit: usize) -> (Self, Replay<Self>) {
        if self.len() > limit {
            return (self, Replay::none());
        }
        let copy = self.clone();
        (self, Replay::ready(copy))
    }
}

impl ReplayBody for hyper::body::Incoming {
    fn into_replay(self, _limit: usize) -> (Self, Replay<Self>) {
        // A body streamed from elsewhere cannot be rebuilt as this type.
        (self, Replay::none())
    }
}

fn never<E>(never: Infallible) -> E {
    match never {}
}

impl<E> ReplayBody for UnsyncBoxBody<Bytes, E>
where
    E: 'static,
{
    fn into_replay(self, limit: usize) -> (Self, Replay<Self>) {
        if self.is_end_stream() {
            let empty = Empty::<Bytes>::new().map_err(never::<E>).boxed_unsync();
            return (self, Replay::ready(empty));
        }
        Replay::record(self, limit, UnsyncBoxBody::new)
    }
}

impl<E> ReplayBody for BoxBody<Bytes, E>
where
    E: 'static,
{
    fn into_replay(self, limit: usize) -> (Self, Replay<Self>) {
        if self.is_end_stream() {
            let empty = Empty::<Bytes>::new().map_err(never::<E>).boxed();
            return (self, Replay::ready(empty));
        }
        Replay::record(self, limit, BoxBody::new)
    }
}

#[cfg(feature = "tonic")]
impl ReplayBody for tonic::body::Body {
    fn into_replay(self, limit: usize) -> (Self, Replay<Self>) {
        if self.is_end_stream() {
            return (self, Replay::ready(tonic::body::Body::empty()));
        }
        Replay::record(self, limit, tonic::body::Body::new)
    }
}

/// `axum::body::Body`: recorded as it streams, up to the replay limit, like a boxed body.
#[cfg(feature = "axum")]
impl ReplayBody for axum_core::body::Body {
    fn into_replay(self, limit: usize) -> (Self, Replay<Self>) {
        if self.is_end_stream() {
            return (self, Replay::ready(axum_core::body::Body::empty()));
        }
        Replay::record(self, limit, axum_core::body::Body::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::StreamBody;
    use std::collections::VecDeque;

    type TestBody = UnsyncBoxBody<Bytes, Infallible>;

    /// A body that yields the given chunks one by one, then optional trailers.
    fn chunked(chunks: &[&str], trailers: Option<(&'static str, &'static str)>) -> TestBody {
        let mut frames: VecDeque<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c.as_bytes()))))
            .collect();
        if let Some((name, value)) = trailers {
            let mut map = HeaderMap::new();
            map.insert(name, HeaderValue::from_static(value));
            frames.push_back(Ok(Frame::trailers(map)));
        }
        StreamBody::new(futures_stream(frames)).boxed_unsync()
    }

    fn futures_stream(
        frames: VecDeque<Result<Frame<Bytes>, Infallible>>,
    ) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin + Send {
        struct Frames(VecDeque<Result<Frame<Bytes>, Infallible>>);
        impl futures_core::Stream for Frames {
            type Item = Result<Frame<Bytes>, Infallible>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                Poll::Ready(self.0.pop_front())
            }
        }
        Frames(frames)
    }

    /// Reads a body to the end: its bytes and trailers.
    async fn read<B: Body<Data = Bytes> + Unpin>(body: B) -> (Vec<u8>, Option<HeaderMap>)
    where
        B::Error: fmt::Debug,
    {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    /// Reads `n` frames only, as an inner service that answered early would.
    async fn read_frames<B: Body<Data = Bytes> + Unpin>(body: &mut B, n: usize) -> Vec<u8>
    where
        B::Error: fmt::Debug,
    {
        let mut out = Vec::new();
        for _ in 0..n {
            match body.frame().await {
                Some(Ok(frame)) => out.extend_from_slice(frame.data_ref().unwrap()),
                _ => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn full_and_empty_are_copies() {
        let (first, replay) = Full::new(Bytes::from_static(b"hello")).into_replay(0);
        assert_eq!(read(first).await.0, b"hello");
        assert_eq!(read(replay.take().unwrap()).await.0, b"hello");
        let (first, replay) = Empty::<Bytes>::new().into_replay(0);
        assert!(first.is_end_stream());
        assert!(replay.take().unwrap().is_end_stream());
    }

    #[tokio::test]
    async fn recorded_chunks_and_trailers_replay_exactly() {
        let (first, replay) = chunked(&["ab", "cd", "ef"], Some(("x-sum", "42"))).into_replay(1024);
        let original = read(first).await;
        assert_eq!(original.0, b"abcdef");
        let again = read(replay.take().unwrap()).await;
        assert_eq!(again, original);
        assert_eq!(again.1.unwrap()["x-sum"], "42");
    }

    #[tokio::test]
    async fn partial_read_then_replay_sends_everything_once() {
        let (mut first, replay) = chunked(&["ab", "cd", "ef", "gh"], None).into_replay(1024);
        assert_eq!(read_frames(&mut first, 2).await, b"abcd");
        let second = replay.take().unwrap();
        // The first attempt is superseded, even if it is still alive.
        assert_eq!(read_frames(&mut first, 1).await, b"");
        assert_eq!(read(second).await.0, b"abcdefgh");
    }

    #[tokio::test]
    async fn over_the_limit_is_not_replayed() {
        let (first, replay) = chunked(&["abc", "def"], None).into_replay(4);
        assert_eq!(read(first).await.0, b"abcdef");
        assert!(replay.take().is_none());
        // At the limit exactly, it is.
        let (first, replay) = chunked(&["ab", "cd"], None).into_replay(4);
        read(first).await;
        assert_eq!(read(replay.take().unwrap()).await.0, b"abcd");
    }

    #[tokio::test]
    async fn unread_body_replays_from_the_original() {
        let (first, replay) = chunked(&["xy", "z"], None).into_replay(1024);
        drop(first);
        assert_eq!(read(replay.take().unwrap()).await.0, b"xyz");
    }

    #[tokio::test]
    async fn empty_boxed_body_costs_no_recording() {
        let body = Empty::<Bytes>::new()
            .map_err(never::<Infallible>)
            .boxed_unsync();
        let (first, replay) = body.into_replay(1024);
        assert!(matches!(replay.kind, Kind::Ready(_)));
        assert!(first.is_end_stream());
    }

    #[test]
    fn strings_over_the_limit_are_not_copied() {
        let (_, replay) = String::from("abcdef").into_replay(3);
        assert!(replay.take().is_none());
        let (_, replay) = String::from("abc").into_replay(3);
        assert_eq!(replay.take().unwrap(), "abc");
    }
}
