//! A response body read from its upstream connection as the client takes it; at its end the
//! connection goes back to the pool if it can carry another request.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio_util::io::poll_read_buf;

use super::codec::{self, Decoded, Framing};
use super::{Connection, Error, READ_SIZE, pool};

/// The body of a response from an upstream over HTTP/1.1.
#[derive(Debug)]
pub struct Body {
    /// `None` once the body has ended or failed.
    conn: Option<Connection>,
    framing: Framing,
    /// Whether the connection is pooled at the end.
    reusable: bool,
    idle: Duration,
}

impl Body {
    pub(super) fn new(conn: Connection, framing: Framing, reusable: bool, idle: Duration) -> Self {
        let mut body = Self { conn: Some(conn), framing, reusable, idle };
        if matches!(framing, Framing::Empty | Framing::Length(0)) {
            body.finish();
        }
        body
    }

    /// The (empty) body of a 101, holding the connection for the tunnel.
    pub(super) fn switching(conn: Connection) -> Self {
        Self { conn: Some(conn), framing: Framing::Empty, reusable: false, idle: Duration::ZERO }
    }

    /// The connection of a 101 response, to be joined with the client's.
    pub fn take_connection(&mut self) -> Option<Connection> {
        self.conn.take()
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.read.is_empty()
        {
            pool::checkin(conn, self.idle);
        }
        self.framing = Framing::Empty;
    }

    /// The next frame from what has been read, if it holds one (at the end of a chunked body
    /// without trailers, none, and the connection is released).
    fn decode(&mut self) -> Result<Option<Frame<Bytes>>, Error> {
        let conn = self.conn.as_mut().expect("decoding only while the body is open");
        if conn.read.is_empty() && !matches!(self.framing, Framing::Chunked(_)) {
            return Ok(None);
        }
        let frame = match &mut self.framing {
            Framing::Empty => None,
            Framing::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.read.len());
                *left -= take as u64;
                let data = conn.read.split_to(take).freeze();
                if *left == 0 {
                    self.finish();
                }
                Some(Frame::data(data))
            }
            Framing::Close => Some(Frame::data(conn.read.split().freeze())),
            Framing::Chunked(state) => match codec::decode_chunked(state, &mut conn.read)? {
                Decoded::Data(data) => Some(Frame::data(data)),
                Decoded::More => None,
                Decoded::End(trailers) => {
                    self.finish();
                    (!trailers.is_empty()).then(|| Frame::trailers(trailers))
                }
            },
        };
        Ok(frame)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            if this.conn.is_none() || this.framing == Framing::Empty {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if this.conn.is_none() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let conn = this.conn.as_mut().expect("checked above");
            conn.read.reserve(READ_SIZE);
            match ready!(poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.read)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Invalid("connection closed before the response body ended"))));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Empty | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
