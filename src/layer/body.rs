//! Request bodies that can be sent twice, for the retry after a 401.
//!
//! `http_body::Body` cannot be cloned, so the layer's [`ReplayPolicy`] says how to send the
//! same bytes again. Every policy takes any body type; they differ in what they replay:
//! [`NoReplay`] nothing, a closure what it decides for a body type of your choosing, and the
//! default, [`ReplayBodies`], the body types the crate knows, through their [`ReplayBody`]
//! implementations:
//!
//! - bodies that are already in memory (`Full<Bytes>`, `Empty<Bytes>`, `String`) are simply
//!   copied: for `Full<Bytes>` that is one `Bytes` clone, a reference-count increment;
//! - boxed bodies (`BoxBody`, `UnsyncBoxBody`, `tonic::body::Body` with the `tonic` feature,
//!   `axum::body::Body` with the `axum` feature) are wrapped in a [`RecordedBody`] that keeps
//!   each chunk it passes on (up to a limit), and the retry sends the kept chunks followed by
//!   whatever the first attempt had not read yet, then the trailers: byte for byte what the
//!   first attempt would have sent;
//! - a boxed body known to be empty costs nothing;
//! - `hyper::body::Incoming` (a proxied body) cannot be rebuilt and is never retried;
//! - any other type is sent once: a refused request gets its 401 back (see [`ReplayBodies`]).
//!
//! For `Either<L, R>` (replayed as its side is) or a body type of your own, implement
//! [`ReplayBody`] and pass `replay_policy(Type::into_replay)`; for a foreign type, write a
//! closure with [`Replay::ready`] (a copy you made), [`Replay::record`] (for a type that can be
//! built around another body) or [`Replay::none`].

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{
    BodyExt, Either, Empty, Full,
    combinators::{BoxBody, UnsyncBoxBody},
};

/// How [`BearerAuth`](crate::BearerAuth) gets a request body back for the retry after a
/// refusal: the layer's replay policy, set with
/// [`BearerAuthLayer::replay_policy`](crate::BearerAuthLayer::replay_policy), as tower-http's
/// `FollowRedirect` takes a `Policy` that says how to clone a body.
///
/// - [`ReplayBodies`] (the default) replays the body types the crate knows, through their
///   [`ReplayBody`] implementations, and sends any other once.
/// - [`NoReplay`] replays nothing: a refused request is not retried (its 401 comes back, and
///   the token is still replaced).
/// - A closure `Fn(B, usize) -> (B, Replay<B>)` decides for a body type of your own choosing,
///   foreign ones included (`limit` is the [`replay_limit`](crate::BearerAuthLayer::replay_limit)).
///
/// ```
/// # fn f(tokens: tower_client_credentials::TokenHandle) {
/// use http_body_util::Limited;
/// use tower_client_credentials::{BearerAuthLayer, Replay};
///
/// // A capped axum body: recorded as it streams, rebuilt capped the same way for the retry.
/// let layer = BearerAuthLayer::new(tokens).replay_policy(
///     |body: Limited<axum::body::Body>, limit: usize| {
///         Replay::record(body, limit, |recorded| {
///             Limited::new(axum::body::Body::new(recorded), 1 << 20)
///         })
///     },
/// );
/// # let _ = layer;
/// # }
/// ```
pub trait ReplayPolicy<B> {
    /// Splits `body` into the body for the first attempt and the means to send the same bytes
    /// again, keeping at most `limit` bytes.
    fn replay(&self, body: B, limit: usize) -> (B, Replay<B>);
}

/// The default [`ReplayPolicy`]: takes any body type, and replays the ones the crate knows.
///
/// The known types are replayed through their [`ReplayBody`] implementation: `Full<Bytes>`,
/// `Empty<Bytes>` and `String` (copied), `BoxBody<Bytes, E>` and `UnsyncBoxBody<Bytes, E>`
/// for `E` one of `BoxError`, `Infallible`, `hyper::Error` and `std::io::Error` (recorded as
/// they stream), `tonic::body::Body` and `axum::body::Body` with their features (recorded),
/// and `hyper::body::Incoming` (never). The type is found when the service is compiled, so
/// this costs nothing at run time.
///
/// Any other body type is sent as it is: a request the API refuses is answered with its 401,
/// not retried (the token is still replaced for the next requests), and a warning names the
/// type the first time. For such a type, say which replay you want with
/// [`replay_policy`](crate::BearerAuthLayer::replay_policy): [`NoReplay`], its own
/// [`ReplayBody`] implementation (`replay_policy(MyBody::into_replay)`, or
/// `Either::<A, B>::into_replay`), or a closure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayBodies;

impl<B: Body + 'static> ReplayPolicy<B> for ReplayBodies {
    #[inline]
    fn replay(&self, body: B, limit: usize) -> (B, Replay<B>) {
        type BoxError = Box<dyn std::error::Error + Send + Sync>;

        let mut body = Some(body);
        macro_rules! known {
            ($($ty:ty),* $(,)?) => {$(
                if let Some(replayed) = as_known::<B, $ty>(&mut body, limit) {
                    return replayed;
                }
            )*};
        }
        known!(
            Full<Bytes>,
            Empty<Bytes>,
            String,
            UnsyncBoxBody<Bytes, BoxError>,
            UnsyncBoxBody<Bytes, Infallible>,
            UnsyncBoxBody<Bytes, hyper::Error>,
            UnsyncBoxBody<Bytes, std::io::Error>,
            BoxBody<Bytes, BoxError>,
            BoxBody<Bytes, Infallible>,
            BoxBody<Bytes, hyper::Error>,
            BoxBody<Bytes, std::io::Error>,
            hyper::body::Incoming,
        );
        #[cfg(feature = "tonic")]
        known!(tonic::body::Body);
        #[cfg(feature = "axum")]
        known!(axum_core::body::Body);

        let body = body.expect("a body no known type took");
        report_unreplayable::<B>();
        (body, Replay::none())
    }
}

/// `body`'s replay through `K`'s [`ReplayBody`] implementation, if `B` is `K`; `body` is left
/// alone otherwise. The type comparison is resolved when the caller is compiled.
#[inline(always)]
fn as_known<B: 'static, K: ReplayBody + 'static>(
    body: &mut Option<B>,
    limit: usize,
) -> Option<(B, Replay<B>)> {
    use std::any::Any;

    let known = (body as &mut dyn Any).downcast_mut::<Option<K>>()?;
    let (first, replay) = known.take()?.into_replay(limit);
    // `K` is `B`: these casts cannot fail.
    let first = (&mut Some(first) as &mut dyn Any)
        .downcast_mut::<Option<B>>()?
        .take()?;
    let replay = (&mut Some(replay) as &mut dyn Any)
        .downcast_mut::<Option<Replay<B>>>()?
        .take()?;
    Some((first, replay))
}

/// The replay of `body` left in its request, when the policy is the default and the body one
/// of the in-memory types (`Full<Bytes>`, `Empty<Bytes>`, `String`): the same replay as
/// [`ReplayBodies`] makes of them (a copy, a reference count for `Full<Bytes>`), without
/// taking the body out of the request and putting it back, which moved the request's head
/// twice. `None` for any other policy or body type, which go through
/// [`ReplayPolicy::replay`]. Resolved when the caller is compiled.
#[inline(always)]
pub(crate) fn replay_in_place<P: 'static, B: 'static>(
    _policy: &P,
    body: &B,
    limit: usize,
) -> Option<Replay<B>> {
    use std::any::TypeId;

    if TypeId::of::<P>() != TypeId::of::<ReplayBodies>() {
        return None;
    }
    in_place::<B, Full<Bytes>>(body, |body| Replay::ready(body.clone()))
        .or_else(|| in_place::<B, Empty<Bytes>>(body, |_| Replay::ready(Empty::new())))
        .or_else(|| {
            in_place::<B, String>(body, |body| {
                if body.len() > limit {
                    Replay::none()
                } else {
                    Replay::ready(body.clone())
                }
            })
        })
}

/// `replay(body)` if `B` is `K`.
#[inline(always)]
fn in_place<B: 'static, K: 'static>(
    body: &B,
    replay: impl FnOnce(&K) -> Replay<K>,
) -> Option<Replay<B>> {
    use std::any::Any;

    let known = (body as &dyn Any).downcast_ref::<K>()?;
    // `K` is `B`: this cast cannot fail.
    (&mut Some(replay(known)) as &mut dyn Any)
        .downcast_mut::<Option<Replay<B>>>()?
        .take()
}

/// Warns, once per body type (nearly: a few slots, lossy beyond them), that the default policy
/// cannot replay `B`.
#[cold]
#[inline(never)]
fn report_unreplayable<B>() {
    let name = std::any::type_name::<B>();
    // The name's address stands for the type: cheap, and a duplicate only repeats a warning.
    if !first_report(name.as_ptr() as usize) {
        return;
    }
    tracing::warn!(
        body = name,
        "the default replay policy cannot replay this request body type: a request the API \
         refuses is answered with its 401, not retried; choose one with `replay_policy` \
         (`NoReplay` to say so, or the body's own replay)"
    );
}

/// Whether `id` is reported for the first time. Sixteen slots; once they are full, nothing is
/// reported again.
fn first_report(id: usize) -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static REPORTED: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];
    for slot in &REPORTED {
        match slot.compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) if seen == id => return false,
            Err(_) => {}
        }
    }
    false
}

/// A [`ReplayPolicy`] that never replays, for any body type: with it the layer asks nothing
/// of the request body, and a refused request is not retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    fn replay(&self, body: B, _limit: usize) -> (B, Replay<B>) {
        (body, Replay::none())
    }
}

impl<B, F> ReplayPolicy<B> for F
where
    F: Fn(B, usize) -> (B, Replay<B>),
{
    fn replay(&self, body: B, limit: usize) -> (B, Replay<B>) {
        self(body, limit)
    }
}

/// A request body that [`BearerAuth`](crate::BearerAuth) can send a second time.
///
/// The default policy, [`ReplayBodies`], uses it for the body types it knows; for a type of
/// your own, or a generic one such as `Either<L, R>`, pass the method as the policy:
/// `replay_policy(MyBody::into_replay)`.
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
    /// `wrap` turns a recorded body into `B` (for a boxed body type, its `new`; for
    /// `Limited<axum::body::Body>`, `|recorded| Limited::new(Body::new(recorded), max)`).
    /// Returns the body for the first attempt and the replay.
    pub fn record<I, W>(inner: I, limit: usize, wrap: W) -> (B, Self)
    where
        I: Body + Unpin + Send + 'static,
        I::Data: Buf,
        W: Fn(RecordedBody<I, B>) -> B + Send + Sync + 'static,
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
        let first = (recording.wrap)(RecordedBody {
            recording: Arc::clone(&recording) as Arc<Recording<I, Wrap<I, B>>>,
            epoch: 0,
            cursor: Cursor::Recording,
        });
        let replay = Self {
            kind: Kind::Recorded(recording),
        };
        (first, replay)
    }

    /// The same replay for a body `B` wrapped in `C` (an `Either` variant, say).
    pub fn map<C, F>(self, f: F) -> Replay<C>
    where
        B: 'static,
        C: 'static,
        F: Fn(B) -> C + Send + Sync + 'static,
    {
        Replay {
            kind: match self.kind {
                Kind::None => Kind::None,
                Kind::Ready(body) => Kind::Ready(f(body)),
                Kind::Recorded(source) => Kind::Recorded(Arc::new(Mapped { source, f })),
            },
        }
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

/// A recorded replay whose body is then wrapped ([`Replay::map`]).
struct Mapped<B, F> {
    source: Arc<dyn Source<B>>,
    f: F,
}

impl<B, C, F> Source<C> for Mapped<B, F>
where
    F: Fn(B) -> C + Send + Sync,
{
    fn replay(self: Arc<Self>) -> Option<C> {
        Arc::clone(&self.source).replay().map(&self.f)
    }
}

/// The recording shared by the attempts' bodies and the replay (one allocation); `W` is the
/// user's `wrap`, unsized to [`Wrap`] in the bodies so that their type does not name it.
struct Recording<I, W: ?Sized> {
    state: Mutex<RecordingState<I>>,
    wrap: W,
}

type Wrap<I, B> = dyn Fn(RecordedBody<I, B>) -> B + Send + Sync;

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

impl<I, W: ?Sized> Recording<I, W> {
    fn lock(&self) -> MutexGuard<'_, RecordingState<I>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<I, B, W> Source<B> for Recording<I, W>
where
    I: Send + 'static,
    B: 'static,
    W: Fn(RecordedBody<I, B>) -> B + Send + Sync + 'static,
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
        Some((self.wrap)(RecordedBody {
            recording: Arc::clone(&self) as Arc<Recording<I, Wrap<I, B>>>,
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
    recording: Arc<Recording<I, Wrap<I, B>>>,
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
    I: Body + Unpin,
    I::Data: Buf,
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
            // `Bytes` as it is (its `copy_to_bytes` is a reference count); other buffers once.
            Poll::Ready(Some(Ok(frame))) => {
                frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
            }
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

/// Either side, replayed as that side's type is.
impl<L, R> ReplayBody for Either<L, R>
where
    L: ReplayBody + 'static,
    L::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R: ReplayBody<Data = L::Data> + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn into_replay(self, limit: usize) -> (Self, Replay<Self>) {
        match self {
            Either::Left(body) => {
                let (first, replay) = body.into_replay(limit);
                (Either::Left(first), replay.map(Either::Left))
            }
            Either::Right(body) => {
                let (first, replay) = body.into_replay(limit);
                (Either::Right(first), replay.map(Either::Right))
            }
        }
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

    #[test]
    fn each_unreplayable_type_is_reported_once() {
        assert!(first_report(1));
        assert!(!first_report(1));
        assert!(first_report(2));
        assert!(!first_report(1) && !first_report(2));
    }

    /// The replay left in the request is the default policy's, for the in-memory types it
    /// covers (the same bytes, the same answer over the limit); any other policy or body type
    /// goes through the policy.
    #[test]
    fn the_replay_in_place_is_the_default_policys() {
        let full = Full::new(Bytes::from_static(b"abc"));
        let replay = replay_in_place(&ReplayBodies, &full, 8).expect("in place");
        assert_eq!(bytes_of(replay.take().expect("ready")), b"abc");
        let (_, policy) = ReplayBodies.replay(full, 8);
        assert_eq!(bytes_of(policy.take().expect("ready")), b"abc");

        let empty = Empty::<Bytes>::new();
        let replay = replay_in_place(&ReplayBodies, &empty, 8).expect("in place");
        assert!(matches!(replay.kind, Kind::Ready(_)));

        for (text, limit) in [("abc", 8), ("abcdefghij", 8), ("abcdefgh", 8)] {
            let body = text.to_owned();
            let in_place = replay_in_place(&ReplayBodies, &body, limit).expect("in place");
            let (_, policy) = ReplayBodies.replay(body, limit);
            assert_eq!(in_place.take(), policy.take(), "{text} with limit {limit}");
        }

        assert!(replay_in_place(&NoReplay, &Full::new(Bytes::new()), 8).is_none());
        let closure = |body: Full<Bytes>, _: usize| (body, Replay::<Full<Bytes>>::none());
        assert!(replay_in_place(&closure, &Full::new(Bytes::new()), 8).is_none());
        let boxed: TestBody = Full::new(Bytes::from_static(b"abc")).boxed_unsync();
        assert!(replay_in_place(&ReplayBodies, &boxed, 8).is_none());
    }

    fn bytes_of(body: Full<Bytes>) -> Vec<u8> {
        futures_util::FutureExt::now_or_never(body.collect())
            .expect("in memory")
            .expect("infallible")
            .to_bytes()
            .to_vec()
    }

    /// The default policy replays the types it knows through their own replay, and sends
    /// others once.
    #[test]
    fn the_default_policy_finds_known_types() {
        let (_, replay) = ReplayBodies.replay(Full::new(Bytes::from_static(b"abc")), 8);
        assert!(matches!(replay.kind, Kind::Ready(_)));
        let boxed: BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>> =
            Full::new(Bytes::from_static(b"abc"))
                .map_err(Into::into)
                .boxed();
        let (_, replay) = ReplayBodies.replay(boxed, 8);
        assert!(matches!(replay.kind, Kind::Recorded(_)));
        let unknown = Full::new(Bytes::from_static(b"abc")).map_err(|_| std::fmt::Error);
        let (_, replay) = ReplayBodies.replay(unknown, 8);
        assert!(matches!(replay.kind, Kind::None));
    }

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

    /// Any `Buf` data is recorded (as `Bytes`), here a `Vec`-backed buffer of a body type the
    /// crate knows nothing of; `Either` replays through its side.
    #[tokio::test]
    async fn buf_data_and_either_replay_exactly() {
        let body = Full::new(VecDeque::from(b"vec-backed".to_vec()));
        let (first, replay) = Replay::record(body, 1024, UnsyncBoxBody::new);
        assert_eq!(read(first).await.0, b"vec-backed");
        assert_eq!(read(replay.take().unwrap()).await.0, b"vec-backed");

        let body: Either<Full<Bytes>, TestBody> = Either::Right(chunked(&["a", "b"], None));
        let (first, replay) = body.into_replay(1024);
        assert_eq!(read(first).await.0, b"ab");
        let again = replay.take().unwrap();
        assert!(matches!(again, Either::Right(_)));
        assert_eq!(read(again).await.0, b"ab");
    }

    #[test]
    fn strings_over_the_limit_are_not_copied() {
        let (_, replay) = String::from("abcdef").into_replay(3);
        assert!(replay.take().is_none());
        let (_, replay) = String::from("abc").into_replay(3);
        assert_eq!(replay.take().unwrap(), "abc");
    }
}
