//! Bodies that filters read and replace whole (`sluice:filter/body`). The proxy lends a
//! request's or response's body to the [`Exchange`](crate::Exchange) as it came, and forwards
//! what the filters left: a [`Payload`] is itself a body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body as it comes from the client or the upstream.
pub type Stream = Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Unpin>;

/// A body, as the filters of a chain leave it.
pub enum Payload {
    /// As it came, none of it read; filters may read up to `cap` bytes of it.
    Unread { stream: Stream, cap: usize },
    /// Read or replaced whole (`replaced`: its length may differ from the one announced), and
    /// the trailers it came with.
    Whole { data: Bytes, trailers: Option<HeaderMap>, replaced: bool },
    /// Larger than the cap: the part read, then the rest as it comes.
    Begun { read: Bytes, rest: Stream },
    /// Reading it failed, so it cannot go on: why.
    Failed(Option<BoxError>),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self {
            Payload::Unread { .. } => "unread",
            Payload::Whole { .. } => "whole",
            Payload::Begun { .. } => "begun",
            Payload::Failed(_) => "failed",
        };
        f.debug_tuple("Payload").field(&state).finish()
    }
}

/// Why a filter could not read a body.
#[derive(Debug, PartialEq)]
pub enum ReadError {
    TooLarge,
    Failed(String),
}

impl Payload {
    /// `body`, which filters may read up to `cap` bytes of.
    pub fn new(body: impl Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static, cap: usize) -> Self {
        Payload::Unread { stream: Box::new(body), cap }
    }

    /// Whether reading the body would wait for it.
    pub(crate) fn is_unread(&self) -> bool {
        matches!(self, Payload::Unread { .. })
    }

    /// The whole body, read up to its cap within `patience` if no filter read it before.
    pub(crate) async fn read(&mut self, patience: Duration) -> Result<Bytes, ReadError> {
        match self {
            Payload::Whole { data, .. } => return Ok(data.clone()),
            Payload::Begun { .. } => return Err(ReadError::TooLarge),
            Payload::Failed(why) => return Err(ReadError::failed(why)),
            Payload::Unread { stream, cap } if stream.size_hint().lower() > *cap as u64 => {
                return Err(ReadError::TooLarge);
            }
            Payload::Unread { .. } => {}
        }
        let Payload::Unread { mut stream, cap } = std::mem::replace(self, Payload::Failed(None)) else {
            unreachable!("matched above");
        };
        let mut read = BytesMut::new();
        let gathered = tokio::time::timeout(patience, gather(&mut stream, &mut read, cap)).await;
        let (next, result) = match gathered {
            Ok(Ok(Gathered::End(trailers))) => {
                let data = read.freeze();
                (Payload::Whole { data: data.clone(), trailers, replaced: false }, Ok(data))
            }
            Ok(Ok(Gathered::Over)) => (Payload::Begun { read: read.freeze(), rest: stream }, Err(ReadError::TooLarge)),
            Ok(Err(e)) => {
                let error = match e.is::<LengthLimitError>() {
                    true => ReadError::TooLarge,
                    false => ReadError::Failed(e.to_string()),
                };
                (Payload::Failed(Some(e)), Err(error))
            }
            Err(_) => {
                let why = format!("the body did not arrive within {patience:?}");
                (Payload::Failed(Some(why.clone().into())), Err(ReadError::Failed(why)))
            }
        };
        *self = next;
        result
    }

    /// Replaces the body; trailers that came with a body read whole stay.
    pub(crate) fn replace(&mut self, data: Vec<u8>) {
        let trailers = match self {
            Payload::Whole { trailers, .. } => trailers.take(),
            _ => None,
        };
        *self = Payload::Whole { data: data.into(), trailers, replaced: true };
    }
}

impl ReadError {
    fn failed(why: &Option<BoxError>) -> Self {
        ReadError::Failed(why.as_ref().map_or_else(|| "the body was lost".to_owned(), ToString::to_string))
    }
}

/// How gathering a body stopped.
enum Gathered {
    /// At its end, with its trailers.
    End(Option<HeaderMap>),
    /// Past the cap.
    Over,
}

async fn gather(stream: &mut Stream, read: &mut BytesMut, cap: usize) -> Result<Gathered, BoxError> {
    while let Some(frame) = stream.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                read.extend_from_slice(&data);
                if read.len() > cap {
                    return Ok(Gathered::Over);
                }
            }
            Err(frame) => return Ok(Gathered::End(frame.into_trailers().ok())),
        }
    }
    Ok(Gathered::End(None))
}

impl Body for Payload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            Payload::Unread { stream, .. } => Pin::new(stream).poll_frame(cx),
            Payload::Whole { data, trailers, .. } => Poll::Ready(match data.is_empty() {
                false => Some(Ok(Frame::data(std::mem::take(data)))),
                true => trailers.take().map(|trailers| Ok(Frame::trailers(trailers))),
            }),
            Payload::Begun { read, .. } if !read.is_empty() => Poll::Ready(Some(Ok(Frame::data(std::mem::take(read))))),
            Payload::Begun { rest, .. } => Pin::new(rest).poll_frame(cx),
            Payload::Failed(why) => Poll::Ready(why.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Payload::Unread { stream, .. } => stream.is_end_stream(),
            Payload::Whole { data, trailers, .. } => data.is_empty() && trailers.is_none(),
            Payload::Begun { .. } => false,
            Payload::Failed(why) => why.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Payload::Unread { stream, .. } => stream.size_hint(),
            Payload::Whole { data, .. } => SizeHint::with_exact(data.len() as u64),
            Payload::Begun { read, rest } => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read.len() as u64);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read.len() as u64);
                }
                hint
            }
            Payload::Failed(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn chunked(chunks: &[&'static str]) -> impl Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static {
        let frames: Vec<Result<_, BoxError>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn all(payload: Payload) -> Bytes {
        payload.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_body_is_read_once_and_goes_on_whole() {
        let mut payload = Payload::new(chunked(&["ab", "cd"]), 16);
        assert_eq!(payload.read(Duration::from_secs(1)).await.unwrap(), "abcd");
        assert_eq!(payload.read(Duration::from_secs(1)).await.unwrap(), "abcd", "a second read sees the same");
        assert_eq!(payload.size_hint().exact(), Some(4));
        assert_eq!(all(payload).await, "abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_goes_on_as_it_came() {
        // Announced: nothing is read.
        let full = Full::new(Bytes::from_static(b"0123456789")).map_err(|never| match never {});
        let mut payload = Payload::new(full, 4);
        assert_eq!(payload.read(Duration::from_secs(1)).await, Err(ReadError::TooLarge));
        assert!(payload.is_unread());
        assert_eq!(all(payload).await, "0123456789");
        // Found out while reading: the part read goes first.
        let mut payload = Payload::new(chunked(&["012", "345", "6789"]), 4);
        assert_eq!(payload.read(Duration::from_secs(1)).await, Err(ReadError::TooLarge));
        assert_eq!(payload.read(Duration::from_secs(1)).await, Err(ReadError::TooLarge));
        assert_eq!(all(payload).await, "0123456789");
    }

    #[tokio::test]
    async fn a_replaced_body_keeps_the_trailers_it_came_with() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<_, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"x"))), Ok(Frame::trailers(trailers))];
        let mut payload = Payload::new(StreamBody::new(futures_util::stream::iter(frames)), 16);
        payload.read(Duration::from_secs(1)).await.unwrap();
        payload.replace(b"yz".to_vec());
        let collected = payload.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "yz");
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_fails() {
        let never = StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>());
        let mut payload = Payload::new(never, 16);
        let read = payload.read(Duration::from_millis(20)).await;
        assert!(matches!(read, Err(ReadError::Failed(why)) if why.contains("did not arrive")));
        assert!(payload.collect().await.is_err(), "the body cannot go on");
    }
}
