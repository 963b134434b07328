use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

use crate::balance::ActiveGuard;
use crate::error::BoxError;
use crate::h1;
use hyper::body::Incoming;

/// What the gateway answers with: an upstream's streamed body, or one of its own.
pub type ResponseBody = Either<Upstream, Full<Bytes>>;

/// An upstream response body: from one of our HTTP/1.1 connections or from hyper's client
/// (HTTPS, HTTP/2). It holds the endpoint's active-request count until the body is finished
/// or dropped, so least-request balancing sees streaming responses as busy.
#[derive(Debug)]
pub struct Upstream {
    body: Either<h1::Body, Incoming>,
    _active: Option<ActiveGuard>,
}

impl Upstream {
    pub(crate) fn new(body: Either<h1::Body, Incoming>, active: Option<ActiveGuard>) -> Self {
        Self { body, _active: active }
    }
}

impl Body for Upstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response of the gateway's own.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Either::Right(Full::new(bytes.into()))
}
