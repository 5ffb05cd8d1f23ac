//! The layer's response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    Error,
    retry::{BoxFuture, Retry},
};

pin_project! {
    /// The response future of [`BearerAuth`](super::BearerAuth).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // The request went out with a token; with `retry`, it may go out once more.
        Called {
            #[pin]
            future: S::Future,
            // Boxed: the retry state is large, and inline it would make every response
            // future that big, retry or not.
            retry: OutOfLine<Box<Retry<S, B>>>,
        },
        // Waiting for a token, or retrying: the rare paths, boxed.
        Boxed {
            future: OutOfLine<BoxFuture<Result<S::Response, Error<S::Error>>>>,
        },
        // The output was returned.
        Done,
    }
}

/// A value whose drop is out of line: its own drop glue, inlined, only checks for `None`. With
/// the retry state's drop (and the boxed future's) inlined into the response future's drop
/// glue, that glue was too large to inline into the caller, which called it on every request,
/// retry or not.
struct OutOfLine<T>(Option<T>);

impl<T> Drop for OutOfLine<T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            drop_out_of_line(value);
        }
    }
}

#[inline(never)]
fn drop_out_of_line<T>(value: T) {
    drop(value);
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn direct(future: S::Future) -> Self {
        Self {
            state: State::Called {
                future,
                retry: OutOfLine(None),
            },
        }
    }

    pub(crate) fn retryable(future: S::Future, retry: Box<Retry<S, B>>) -> Self {
        Self {
            state: State::Called {
                future,
                retry: OutOfLine(Some(retry)),
            },
        }
    }

    /// A request that fails before it is sent.
    pub(crate) fn failed(error: impl Into<Error<S::Error>>) -> Self
    where
        S::Response: Send + 'static,
        S::Error: Send + 'static,
    {
        Self::boxed(Box::pin(std::future::ready(Err(error.into()))))
    }

    pub(crate) fn boxed(future: BoxFuture<Result<S::Response, Error<S::Error>>>) -> Self {
        Self {
            state: State::Boxed {
                future: OutOfLine(Some(future)),
            },
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    type Output = Result<Response<ResBody>, Error<S::Error>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        // Nothing to look at (retry off, no DPoP): the inner result as it comes, inlined into
        // the caller so that the response is moved once.
        if let StateProj::Called {
            future,
            retry: OutOfLine(None),
        } = state.as_mut().project()
        {
            let output = ready!(future.poll(cx));
            state.set(State::Done);
            return Poll::Ready(output.map_err(Error::Inner));
        }
        let output = ready!(poll_state(state.as_mut(), cx));
        // Done on every path that returns the output, and seen to be here: the caller, which
        // drops this future once it has the response, then has nothing left to drop, and does
        // not move the response around a drop that might touch it.
        match state.project() {
            StateProj::Done => Poll::Ready(output),
            _ => unreachable!("poll_state leaves the future done"),
        }
    }
}

/// The response future's other paths: the first response looked at for a retry, the boxed
/// futures. Out of line, so that the common path above stays small enough to inline. Leaves
/// the future done when it returns the output, as soon as the output is there (later, the
/// drop of the state in between made the response move twice more).
#[inline(never)]
fn poll_state<S, B, ResBody>(
    mut state: Pin<&mut State<S, B>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResBody>, Error<S::Error>>>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    loop {
        match state.as_mut().project() {
            StateProj::Called { future, retry } => {
                let output = ready!(future.poll(cx));
                let retry = retry.0.take();
                state.set(State::Done);
                let response = output.map_err(Error::Inner)?;
                let Some(retry) = retry else {
                    return Poll::Ready(Ok(response));
                };
                if !retry.inspect(&response) || !retry.config.retry {
                    return Poll::Ready(Ok(response));
                }
                match (*retry).into_retry(response) {
                    Ok(future) => state.set(State::Boxed {
                        future: OutOfLine(Some(future)),
                    }),
                    Err(response) => return Poll::Ready(Ok(response)),
                }
            }
            StateProj::Boxed { future } => {
                let output = match &mut future.0 {
                    Some(future) => ready!(future.as_mut().poll(cx)),
                    None => unreachable!("a boxed state holds its future"),
                };
                state.set(State::Done);
                return Poll::Ready(output);
            }
            StateProj::Done => panic!("ResponseFuture polled after completion"),
        }
    }
}
