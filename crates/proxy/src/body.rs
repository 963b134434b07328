use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use sluice_filter::{Holds, Payload};
use tokio::sync::mpsc;

use crate::balance::ActiveGuard;
use crate::error::BoxError;
use crate::filtered::{Feed, ResponseFilters};
use crate::h1;
use hyper::body::Incoming;

/// What the gateway answers with: an upstream's streamed body, or one of its own.
pub type ResponseBody = Either<Upstream, Full<Bytes>>;

/// An upstream response body: from one of our HTTP/1.1 connections or from hyper's client
/// (HTTPS, HTTP/2). It holds the endpoint's active-request count until the body is finished
/// or dropped, so least-request balancing sees streaming responses as busy.
pub struct Upstream {
    /// From a connection, or lent to filters that read bodies and as they left it.
    body: Either<Either<h1::Body, Incoming>, Payload>,
    _active: Option<ActiveGuard>,
    /// Places the request's filters hold until the body is finished or dropped.
    _holds: Holds,
    /// The filters' response body phases, when a filter has them.
    filters: Option<Box<ResponseFilters>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("body", &self.body).finish_non_exhaustive()
    }
}

impl Upstream {
    pub(crate) fn new(body: Either<h1::Body, Incoming>, active: Option<ActiveGuard>) -> Self {
        Self { body: Either::Left(body), _active: active, _holds: Holds::default(), filters: None }
    }

    /// A response body lent to filters that read bodies, as they left it.
    pub(crate) fn lent(payload: Payload) -> Self {
        Self { body: Either::Right(payload), _active: None, _holds: Holds::default(), filters: None }
    }

    /// The body, holding the places its request's filters hold until it ends.
    pub(crate) fn holding(mut self, holds: Holds) -> Self {
        self._holds = holds;
        self
    }

    /// The body with what the filters' response body phases make of it.
    pub(crate) fn filtered(mut self, filters: ResponseFilters) -> Self {
        self.filters = Some(Box::new(filters));
        self
    }
}

impl Body for Upstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(filters) = &mut this.filters else {
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        loop {
            if let Some(frame) = filters.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if filters.ended() {
                return Poll::Ready(None);
            }
            let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
            if let Err(e) = filters.take(frame, this.body.is_end_stream()) {
                filters.rest = None;
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.filters {
            Some(filters) => filters.ended(),
            None => self.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.filters {
            Some(_) => SizeHint::default(),
            None => self.body.size_hint(),
        }
    }
}

/// A response of the gateway's own.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Either::Right(Full::new(bytes.into()))
}

/// A request body on its way upstream: the client's as it streams, or what the filters' body
/// phases made of it.
#[derive(Debug)]
pub enum RequestBody {
    Client(Incoming),
    /// Lent to filters that read bodies, as they left it.
    Lent(Payload),
    /// Handed over whole by the filters (data, then trailers).
    Whole(Option<Bytes>, Option<HeaderMap>),
    /// Streaming out of the filters; `None` ends it.
    Filtered(mpsc::Receiver<Option<Frame<Bytes>>>, bool),
}

impl RequestBody {
    /// A body the filters handed over whole.
    pub(crate) fn whole(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        RequestBody::Whole((!data.is_empty()).then_some(data), trailers)
    }

    /// A body streaming out of the filters, its first bytes already out, and where the rest goes.
    pub(crate) fn filtered(first: Bytes) -> (Self, Feed) {
        let (feed, frames) = mpsc::channel(4);
        feed.try_send(Some(Frame::data(first))).expect("a new channel has room");
        (RequestBody::Filtered(frames, false), feed)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Lent(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Whole(data, trailers) => match data.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Ready(trailers.take().map(|trailers| Ok(Frame::trailers(trailers)))),
            },
            RequestBody::Filtered(_, true) => Poll::Ready(None),
            RequestBody::Filtered(frames, ended) => match ready!(frames.poll_recv(cx)) {
                Some(Some(frame)) => Poll::Ready(Some(Ok(frame))),
                Some(None) => {
                    *ended = true;
                    Poll::Ready(None)
                }
                None => Poll::Ready(Some(Err("the request body stopped in its filters".into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Lent(body) => body.is_end_stream(),
            RequestBody::Whole(data, trailers) => data.is_none() && trailers.is_none(),
            RequestBody::Filtered(_, ended) => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Lent(body) => body.size_hint(),
            RequestBody::Whole(data, _) => SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64)),
            RequestBody::Filtered(..) => SizeHint::default(),
        }
    }
}
