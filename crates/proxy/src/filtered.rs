//! Bodies through the body phases of a route's filters (proxy-wasm filters exporting
//! `proxy_on_request_body` or `proxy_on_response_body`); without such a filter a body streams
//! untouched.
//!
//! The first chunks are read before the head goes on. If the body ends while the filters still
//! hold it (they paused to buffer it, up to [`MAX_BUFFERED`] or the route's body limit), it goes
//! on whole, with a Content-Length of its new size. As soon as bytes come out before the end,
//! the head goes on without Content-Length (a filter may change the size of what it lets
//! through) and the rest streams through the filters chunk by chunk. Over the cap, a request
//! is answered 413 and a response 500; a fail-closed filter failing mid-stream, once the head
//! has gone, cuts the body off.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, LengthLimitError};
use sluice_filter::{BodyError, BodyStep, Chain, Exchange, Immediate, Payload, Route};
use tokio::sync::mpsc;

use crate::body::{RequestBody, ResponseBody, Upstream, full};
use crate::error::{BoxError, ProxyError};
use crate::metrics::Metrics;

/// The most of a body the filters may hold back at once (Envoy's default buffer limit).
pub(crate) const MAX_BUFFERED: usize = 1 << 20;

/// The buffering cap of a route: [`MAX_BUFFERED`], or its body limit if lower.
pub(crate) fn cap(route: &Route) -> usize {
    route.ingress.max_body_size.map_or(MAX_BUFFERED, |max| usize::try_from(max).unwrap_or(usize::MAX).min(MAX_BUFFERED))
}

/// How a body starts after its first pass through the filters.
pub(crate) enum Start {
    /// It ended: all of it as the filters left it, and its trailers.
    Whole(Bytes, Option<HeaderMap>),
    /// Bytes came out before the end; the rest is still to run through the filters.
    Streaming(Bytes),
    /// A filter answered instead of the upstream.
    Answer(Immediate),
}

/// Why a body stopped.
pub(crate) enum Stop {
    Read(BoxError),
    Filters(BodyError),
}

/// What one frame of a body became.
enum Out {
    /// Bytes to send on (maybe none), and whether the body ended.
    Data(Bytes, bool),
    /// The last bytes, then the trailers.
    Trailers(Bytes, HeaderMap),
    Answer(Immediate),
}

/// A frame read from a body, as its data, whether the body ended (`ended`: the body said so
/// after the frame), and its trailers.
type Split = (Bytes, bool, Option<HeaderMap>);

fn split<E: Into<BoxError>>(frame: Option<Result<Frame<Bytes>, E>>, ended: bool) -> Result<Split, BoxError> {
    Ok(match frame {
        None => (Bytes::new(), true, None),
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => (data, ended, None),
            Err(frame) => (Bytes::new(), true, frame.into_trailers().ok()),
        },
    })
}

/// Runs the next frame of `body` through the filters.
async fn next<B>(chain: &Chain, exchange: &mut Exchange, request: bool, body: &mut B, cap: usize) -> Result<Out, Stop>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let frame = body.frame().await;
    let (chunk, end, trailers) = split(frame, body.is_end_stream()).map_err(Stop::Read)?;
    let bytes = match chain.on_body(exchange, request, chunk.into(), end, cap).map_err(Stop::Filters)? {
        BodyStep::Pass(bytes) => Bytes::from(bytes),
        BodyStep::Respond(answer) => return Ok(Out::Answer(answer)),
    };
    Ok(match trailers {
        Some(trailers) => Out::Trailers(bytes, trailers),
        None => Out::Data(bytes, end),
    })
}

/// Reads `body` through the filters until bytes come out or it ends.
pub(crate) async fn start<B>(
    chain: &Chain,
    exchange: &mut Exchange,
    request: bool,
    body: &mut B,
    cap: usize,
) -> Result<Start, Stop>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        match next(chain, exchange, request, body, cap).await? {
            Out::Data(bytes, false) if bytes.is_empty() => continue,
            Out::Data(bytes, false) => return Ok(Start::Streaming(bytes)),
            Out::Data(bytes, true) => return Ok(Start::Whole(bytes, None)),
            Out::Trailers(bytes, trailers) => return Ok(Start::Whole(bytes, Some(trailers))),
            Out::Answer(answer) => return Ok(Start::Answer(answer)),
        }
    }
}

/// Sets the Content-Length of a body the filters handed over whole.
pub(crate) fn set_length(headers: &mut HeaderMap, length: usize, trailers: bool) {
    match trailers {
        // Trailers need a chunked (or HTTP/2) body.
        true => headers.remove(header::CONTENT_LENGTH),
        false => headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length)),
    };
}

/// The request body for the upstream as the filters that read bodies left it: a body they
/// replaced gets a Content-Length of its size.
pub(crate) fn lent_request(exchange: &mut Exchange, headers: &mut HeaderMap) -> Result<RequestBody, ProxyError> {
    lent(exchange, headers).map(RequestBody::Lent).map_err(|e| request_error(Stop::Read(e)))
}

/// The response body for the client as the filters that read bodies left it, as
/// [`lent_request`]; one that could not be read ends the response (502).
pub(crate) fn lent_response(exchange: &mut Exchange, headers: &mut HeaderMap) -> Result<Payload, ProxyError> {
    lent(exchange, headers).map_err(ProxyError::UpstreamBody)
}

fn lent(exchange: &mut Exchange, headers: &mut HeaderMap) -> Result<Payload, BoxError> {
    match exchange.take_body().unwrap_or(Payload::Failed(None)) {
        Payload::Failed(why) => Err(why.unwrap_or_else(|| "the body was lost".into())),
        payload => {
            if let Payload::Whole { data, trailers, replaced: true } = &payload {
                set_length(headers, data.len(), trailers.is_some());
            }
            Ok(payload)
        }
    }
}

/// Why the request body of a request stopped, as the answer.
pub(crate) fn request_error(stop: Stop) -> ProxyError {
    match stop {
        Stop::Read(e) if e.is::<LengthLimitError>() => ProxyError::PayloadTooLarge,
        Stop::Read(e) => ProxyError::BadRequest(format!("reading the request body: {e}")),
        Stop::Filters(BodyError::TooLarge) => ProxyError::PayloadTooLarge,
        Stop::Filters(BodyError::Failed(failure)) => ProxyError::Filter(failure),
    }
}

/// The frames of a request body the filters pass on as they stream, for the upstream; `None`
/// marks its end, so a body whose filtering stopped short ends in an error, never cut silently.
pub(crate) type Feed = mpsc::Sender<Option<Frame<Bytes>>>;

/// Runs the rest of a streaming request body through the filters into `feed`. `Ok(Some(_))`
/// is a filter's answer instead of the upstream's.
pub(crate) async fn pump<B>(
    chain: &Chain,
    exchange: &mut Exchange,
    mut body: B,
    feed: Feed,
    cap: usize,
) -> Result<Option<Immediate>, ProxyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        let (bytes, trailers, end) = match next(chain, exchange, true, &mut body, cap).await.map_err(request_error)? {
            Out::Data(bytes, end) => (bytes, None, end),
            Out::Trailers(bytes, trailers) => (bytes, Some(trailers), true),
            Out::Answer(answer) => return Ok(Some(answer)),
        };
        let frames = [(!bytes.is_empty()).then(|| Frame::data(bytes)), trailers.map(Frame::trailers)];
        for frame in frames.into_iter().flatten() {
            // The upstream stopped reading (it answered already): nothing more to send.
            if feed.send(Some(frame)).await.is_err() {
                return Ok(None);
            }
        }
        if end {
            let _ = feed.send(None).await;
            return Ok(None);
        }
    }
}

/// Forwards while the request body is pumped through the filters. A filter's answer or a
/// failure of the pump wins over whatever the upstream was doing; an upstream that answers
/// before the body is all sent ends the pump.
pub(crate) async fn while_pumping(
    forwarding: impl Future<Output = Result<Response<ResponseBody>, ProxyError>>,
    pumping: impl Future<Output = Result<Option<Immediate>, ProxyError>>,
) -> Result<Response<ResponseBody>, ProxyError> {
    tokio::pin!(forwarding, pumping);
    tokio::select! {
        biased;
        pumped = &mut pumping => match pumped? {
            Some(answer) => Ok(answer.map(full)),
            None => forwarding.await,
        },
        forwarded = &mut forwarding => forwarded,
    }
}

/// Runs a response body through the filters' response body phases; the exchange goes with the
/// body when it streams, so the filters see all of it (and their log phase runs when it ends).
pub(crate) async fn response(
    chain: Arc<Chain>,
    mut exchange: Exchange,
    mut head: http::response::Parts,
    mut upstream: Upstream,
    cap: usize,
    metrics: Arc<Metrics>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let started = start(&chain, &mut exchange, false, &mut upstream, cap).await;
    skipped(&mut exchange, &metrics);
    let (ready, rest) = match started {
        Err(Stop::Read(e)) => return Err(ProxyError::UpstreamBody(e)),
        Err(Stop::Filters(BodyError::TooLarge)) => return Err(ProxyError::ResponseTooLarge),
        Err(Stop::Filters(BodyError::Failed(failure))) => return Err(ProxyError::Filter(failure)),
        Ok(Start::Answer(answer)) => return Ok(answer.map(full)),
        Ok(Start::Whole(bytes, None)) => {
            set_length(&mut head.headers, bytes.len(), false);
            return Ok(Response::from_parts(head, full(bytes)));
        }
        Ok(Start::Whole(bytes, Some(trailers))) => {
            set_length(&mut head.headers, bytes.len(), true);
            (VecDeque::from([Frame::data(bytes), Frame::trailers(trailers)]), None)
        }
        Ok(Start::Streaming(bytes)) => {
            head.headers.remove(header::CONTENT_LENGTH);
            (VecDeque::from([Frame::data(bytes)]), Some(Box::new(Rest { chain, exchange, cap, metrics })))
        }
    };
    let filters = ResponseFilters { ready, rest };
    Ok(Response::from_parts(head, http_body_util::Either::Left(upstream.filtered(filters))))
}

/// What an upstream response body still goes through: frames ready to go, and the filters of
/// the rest until it ends.
pub(crate) struct ResponseFilters {
    pub ready: VecDeque<Frame<Bytes>>,
    pub rest: Option<Box<Rest>>,
}

pub(crate) struct Rest {
    chain: Arc<Chain>,
    exchange: Exchange,
    cap: usize,
    metrics: Arc<Metrics>,
}

impl ResponseFilters {
    /// Runs one frame of the upstream's body through the filters: what to send (maybe
    /// nothing yet), or why the body stops.
    pub fn take(&mut self, frame: Option<Result<Frame<Bytes>, BoxError>>, ended: bool) -> Result<(), BoxError> {
        let Some(rest) = &mut self.rest else { return Ok(()) };
        let (chunk, end, trailers) = split(frame, ended)?;
        let step = rest.chain.on_body(&mut rest.exchange, false, chunk.into(), end, rest.cap);
        skipped(&mut rest.exchange, &rest.metrics);
        let bytes = match step {
            Ok(BodyStep::Pass(bytes)) => bytes,
            Ok(BodyStep::Respond(_)) => return Err("a filter answered after the response had started".into()),
            Err(BodyError::TooLarge) => return Err("the filters held back more of the response than the cap".into()),
            Err(BodyError::Failed(failure)) => {
                tracing::warn!(plugin = %failure.plugin, kind = failure.kind.as_str(), "{failure}; response cut off");
                rest.metrics.filter_failure(&failure, true);
                return Err(failure.to_string().into());
            }
        };
        if !bytes.is_empty() {
            self.ready.push_back(Frame::data(bytes.into()));
        }
        self.ready.extend(trailers.map(Frame::trailers));
        if end {
            self.rest = None;
        }
        Ok(())
    }

    pub fn ended(&self) -> bool {
        self.ready.is_empty() && self.rest.is_none()
    }
}

/// Logs and counts the fail-open filters that failed and were skipped.
pub(crate) fn skipped(exchange: &mut Exchange, metrics: &Metrics) {
    for failure in exchange.failures.drain(..) {
        tracing::warn!(plugin = %failure.plugin, kind = failure.kind.as_str(), "{failure}; skipped (failure: open)");
        metrics.filter_failure(&failure, false);
    }
}
