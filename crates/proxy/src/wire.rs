//! A guard on the bytes of an HTTP/1.1 connection, between the socket and hyper: it follows
//! the message framing, judges every request head and chunked body line with [`front`] before
//! hyper sees it, and turns what it refuses into an answer.
//!
//! A refused head never reaches hyper. In its place hyper gets a stand-in head, and the
//! service answers that request with the refusal ([`Verdicts::refused`]): so the answer goes
//! out in order after the responses to earlier pipelined requests, and the connection closes.
//! A malformed chunked body that comes in the same read as its head refuses the request the
//! same way; one that comes later fails the request's body (hyper sees a read error), and its
//! answer is replaced by the refusal. After a refusal the guard reads nothing more.
//!
//! The cost on the hot path: each head is parsed twice (here with httparse, then by hyper), and
//! copied only when it spans reads; bodies are only counted, chunked ones scanned for their
//! line ends.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::front::{self, ClientLimits, Framing, Head, Reject};

/// What hyper reads in place of a refused head: a request the service answers with the
/// refusal, never routed.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused.invalid\r\n\r\n";

/// The HTTP/2 connection preface: a connection that starts with it is not inspected.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Refusals of one connection, shared between its guard and its service.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Request heads handed to hyper so far.
    heads: AtomicU64,
    /// Requests the service has taken so far.
    served: AtomicU64,
    /// The request (counted from 1) to answer with a refusal, and the refusal.
    refused: Mutex<Option<(u64, Reject)>>,
}

impl Verdicts {
    /// Called by the service for each request it takes, in order; the request's number.
    pub fn next_request(&self) -> u64 {
        self.served.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The refusal to answer request `number` with, if any.
    pub fn refused(&self, number: u64) -> Option<Reject> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.filter(|(at, _)| *at == number).map(|(_, reject)| reject)
    }

    fn refuse(&self, number: u64, reject: Reject) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some((number, reject));
    }
}

/// Where in the byte stream the guard is.
#[derive(Debug)]
enum State {
    /// In a request head (its bytes so far in `Guard::buffer`), or between requests.
    Head,
    /// In a body of known length: this many bytes left; then a head, or pass-through after
    /// an upgrade.
    Body { left: u64, then_tunnel: bool },
    /// In a chunk-size line (its bytes so far in `Guard::buffer`).
    ChunkSize,
    /// In chunk data: this many bytes left, then CRLF.
    ChunkData(u64),
    /// Expecting the CR (false) or LF (true) that ends chunk data.
    ChunkEnd(bool),
    /// In the trailer section, this many bytes of it so far; the current line in `Guard::buffer`.
    Trailer(usize),
    /// Not HTTP/1.1 framing any more (HTTP/2, an upgrade): bytes pass unexamined.
    Through,
    /// A refusal was handed over: nothing more is read.
    Refused,
}

/// An I/O stream whose incoming HTTP/1.1 bytes are checked before they are read.
#[derive(Debug)]
pub struct Guard<S> {
    inner: S,
    limits: Arc<ClientLimits>,
    verdicts: Arc<Verdicts>,
    state: State,
    /// Bytes read by [`Guard::sniff`], examined as if read now.
    replay: Vec<u8>,
    /// The unfinished head or chunk line, when it spans reads. A head is held back until it
    /// is complete and judged: hyper never sees part of a head that is then refused.
    buffer: Vec<u8>,
    /// A held head released by the current read, to go before its bytes.
    released: Vec<u8>,
    /// Where in the current read the head of the request whose body is being read starts,
    /// if it is in this read (`Some(0)` also for a released head).
    head_here: Option<usize>,
    /// Bytes to hand over before reading more, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// Whether reading fails once `out` is handed over (a malformed body).
    fail: bool,
}

/// What the guard does with the bytes of one read: hand over the first `kept`, then the
/// verdict's consequence, if any.
struct Outcome {
    kept: usize,
    verdict: Option<Verdict>,
}

enum Verdict {
    /// A head is refused: the stand-in head follows.
    Refuse(Reject),
    /// A body whose head hyper has is malformed: reading fails.
    Fail(Reject),
}

impl<S: AsyncRead + Unpin> Guard<S> {
    /// Guards `inner`, or only passes its bytes through when `http2` (negotiated by ALPN).
    pub fn new(inner: S, limits: Arc<ClientLimits>, verdicts: Arc<Verdicts>, http2: bool) -> Self {
        let state = if http2 { State::Through } else { State::Head };
        Self {
            inner,
            limits,
            verdicts,
            state,
            replay: Vec::new(),
            buffer: Vec::new(),
            released: Vec::new(),
            head_here: None,
            out: Vec::new(),
            out_at: 0,
            fail: false,
        }
    }

    /// How long a client may take to send a request head.
    pub fn header_timeout(&self) -> std::time::Duration {
        self.limits.header_timeout
    }

    /// Reads until it is clear whether the client speaks HTTP/2 with prior knowledge (its
    /// preface) or HTTP/1.1, and says which: the connection is then served by hyper's HTTP/1
    /// or HTTP/2 side directly, whose header timeout runs while a head is held back here.
    pub async fn sniff(&mut self) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        while H2_PREFACE.starts_with(&self.replay) && self.replay.len() < H2_PREFACE.len() {
            let mut chunk = [0; 24];
            let n = self.inner.read(&mut chunk[..H2_PREFACE.len() - self.replay.len()]).await?;
            if n == 0 {
                break;
            }
            self.replay.extend_from_slice(&chunk[..n]);
        }
        let http2 = self.replay == H2_PREFACE;
        if http2 {
            self.state = State::Through;
        }
        Ok(http2)
    }
}

impl<S> Guard<S> {
    /// Follows the framing over `bytes`, judging heads and chunk lines.
    fn inspect(&mut self, bytes: &[u8]) -> Outcome {
        let mut at = 0;
        self.head_here = None;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let step = match self.state {
                State::Through | State::Refused => break,
                State::Head => match self.head(rest) {
                    // The rest is a partial head, held back.
                    Ok(None) => return Outcome { kept: at, verdict: None },
                    Ok(Some(used)) => {
                        self.head_here = Some(at);
                        used
                    }
                    Err(reject) => return Outcome { kept: at, verdict: Some(Verdict::Refuse(reject)) },
                },
                State::Body { left, then_tunnel } => {
                    let used = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    let left = left - used as u64;
                    self.state = match (left, then_tunnel) {
                        (0, true) => State::Through,
                        (0, false) => State::Head,
                        (left, _) => State::Body { left, then_tunnel },
                    };
                    used
                }
                State::ChunkData(left) => {
                    let used = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    let left = left - used as u64;
                    self.state = if left == 0 { State::ChunkEnd(false) } else { State::ChunkData(left) };
                    used
                }
                State::ChunkEnd(lf) => {
                    if rest[0] != if lf { b'\n' } else { b'\r' } {
                        return self.malformed_body(at, Reject::bad_chunk());
                    }
                    self.state = if lf { State::ChunkSize } else { State::ChunkEnd(true) };
                    1
                }
                State::ChunkSize | State::Trailer(_) => match self.chunk_line(rest) {
                    Ok(used) => used,
                    Err(reject) => return self.malformed_body(at, reject),
                },
            };
            at += step;
        }
        Outcome { kept: bytes.len(), verdict: None }
    }

    /// A malformed body at `at`: when its head came in the same read, hyper has not seen it
    /// and the whole request is refused; otherwise its body fails.
    fn malformed_body(&mut self, at: usize, reject: Reject) -> Outcome {
        match self.head_here {
            Some(start) => {
                self.verdicts.heads.fetch_sub(1, Ordering::Relaxed);
                if start == 0 {
                    self.released.clear();
                }
                Outcome { kept: start, verdict: Some(Verdict::Refuse(reject)) }
            }
            None => Outcome { kept: at, verdict: Some(Verdict::Fail(reject)) },
        }
    }

    /// Takes a head from the start of `rest`: how many bytes of `rest` it has, or `None` when
    /// it is still partial (and held, to the end of `rest`).
    fn head(&mut self, rest: &[u8]) -> Result<Option<usize>, Reject> {
        let held = self.buffer.len();
        let judged = if held == 0 {
            front::head(rest, &self.limits)?
        } else {
            self.buffer.extend_from_slice(rest);
            front::head(&self.buffer, &self.limits)?
        };
        let Head::Complete { len, framing } = judged else {
            if held == 0 {
                self.buffer.extend_from_slice(rest);
            }
            return Ok(None);
        };
        self.verdicts.heads.fetch_add(1, Ordering::Relaxed);
        self.state = match framing {
            Framing::Length(0) => State::Head,
            Framing::Length(left) => State::Body { left, then_tunnel: false },
            Framing::Tunnel(0) => State::Through,
            Framing::Tunnel(left) => State::Body { left, then_tunnel: true },
            Framing::Chunked => State::ChunkSize,
        };
        if held > 0 {
            self.buffer.truncate(held);
            self.released = std::mem::take(&mut self.buffer);
        }
        Ok(Some(len - held))
    }
    /// Takes the bytes of a chunk-size or trailer line from the start of `rest`.
    fn chunk_line(&mut self, rest: &[u8]) -> Result<usize, Reject> {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            self.buffer.extend_from_slice(rest);
            if self.buffer.len() > MAX_CHUNK_LINE {
                return Err(Reject::bad_chunk());
            }
            return Ok(rest.len());
        };
        self.buffer.extend_from_slice(&rest[..lf]);
        let line = std::mem::take(&mut self.buffer);
        let line = line.strip_suffix(b"\r").ok_or_else(Reject::bad_chunk)?;
        if line.len() > MAX_CHUNK_LINE {
            return Err(Reject::bad_chunk());
        }
        self.state = match self.state {
            State::ChunkSize => match front::chunk_size(line)? {
                0 => State::Trailer(0),
                size => State::ChunkData(size),
            },
            State::Trailer(_) if line.is_empty() => State::Head,
            State::Trailer(seen) => {
                front::trailer_field(line)?;
                let seen = seen + line.len() + 2;
                if seen > self.limits.header_section {
                    return Err(Reject::bad_chunk());
                }
                State::Trailer(seen)
            }
            _ => unreachable!("chunk_line runs in chunk-size and trailer lines only"),
        };
        Ok(lf + 1)
    }
}

impl Reject {
    fn bad_chunk() -> Self {
        Reject { status: http::StatusCode::BAD_REQUEST, reason: "invalid chunked framing" }
    }
}

/// The error a malformed request body fails with; the service answers its request with the
/// refusal recorded in [`Verdicts`].
#[derive(Debug)]
struct MalformedBody;

impl std::fmt::Display for MalformedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed request body")
    }
}

impl std::error::Error for MalformedBody {}

impl<S: AsyncRead + Unpin> AsyncRead for Guard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_at < this.out.len() {
                let n = (this.out.len() - this.out_at).min(buf.remaining());
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.fail {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, MalformedBody)));
            }
            if matches!(this.state, State::Refused) {
                // The stand-in's answer closes the connection; until then there is nothing to read.
                return Poll::Pending;
            }
            let before = buf.filled().len();
            if this.replay.is_empty() {
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            } else {
                let n = this.replay.len().min(buf.remaining());
                buf.put_slice(&this.replay[..n]);
                this.replay.drain(..n);
            }
            if buf.filled().len() == before {
                return Poll::Ready(Ok(()));
            }
            let Outcome { kept, verdict } = this.inspect(&buf.filled()[before..]);
            if this.released.is_empty() && verdict.is_none() {
                buf.set_filled(before + kept);
            } else {
                let mut out = std::mem::take(&mut this.released);
                out.extend_from_slice(&buf.filled()[before..before + kept]);
                buf.set_filled(before);
                match verdict {
                    None => {}
                    Some(Verdict::Refuse(reject)) => {
                        this.state = State::Refused;
                        let number = this.verdicts.heads.fetch_add(1, Ordering::Relaxed) + 1;
                        this.verdicts.refuse(number, reject);
                        out.extend_from_slice(STAND_IN);
                    }
                    Some(Verdict::Fail(reject)) => {
                        this.state = State::Refused;
                        this.verdicts.refuse(this.verdicts.heads.load(Ordering::Relaxed), reject);
                        this.fail = true;
                    }
                }
                (this.out, this.out_at) = (out, 0);
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            // Everything read so far is a held partial head: read on.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A client's bytes, arriving in the given pieces.
    struct Pieces(VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            if let Some(mut piece) = self.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// What hyper reads through a guard from `pieces` (in reads of at most `chunk` bytes), the
    /// refusal recorded, and whether reading failed.
    async fn through(pieces: &[&[u8]], chunk: usize) -> (Vec<u8>, Option<(u64, Reject)>, bool) {
        let pieces = Pieces(pieces.iter().map(|p| p.to_vec()).collect());
        let verdicts = Arc::new(Verdicts::default());
        let mut guard = Guard::new(pieces, Arc::new(ClientLimits::default()), verdicts.clone(), false);
        assert!(!guard.sniff().await.unwrap());
        let (mut out, mut failed) = (Vec::new(), false);
        let mut buf = vec![0; chunk];
        loop {
            let read = tokio::time::timeout(std::time::Duration::from_millis(50), guard.read(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => {
                    failed = true;
                    break;
                }
            }
        }
        let refused = *verdicts.refused.lock().unwrap();
        (out, refused, failed)
    }

    const GOOD: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const BAD_CHUNK: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n";

    #[tokio::test]
    async fn good_requests_pass_unchanged_however_they_arrive() {
        let pipelined = [GOOD, GOOD].concat();
        for chunk in [1, 7, 4096] {
            for split in [1, 24, 40, GOOD.len()] {
                let (out, refused, failed) = through(&[&pipelined[..split], &pipelined[split..]], chunk).await;
                assert_eq!(out, pipelined, "chunk {chunk}, split {split}");
                assert!(refused.is_none() && !failed);
            }
        }
    }

    #[tokio::test]
    async fn a_refused_head_is_replaced_by_the_stand_in() {
        let bad = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for split in [1, 24, 60, bad.len()] {
            let (out, refused, _) = through(&[&bad[..split], &bad[split..]], 4096).await;
            assert_eq!(out, STAND_IN, "split {split}");
            assert_eq!(refused.map(|(n, r)| (n, r.reason)), Some((1, "both Content-Length and Transfer-Encoding")));
        }
        // After a good request, the refusal is the second request.
        let (out, refused, _) = through(&[&[GOOD, bad.as_slice()].concat()], 4096).await;
        assert_eq!(out, [GOOD, STAND_IN].concat());
        assert_eq!(refused.map(|(n, _)| n), Some(2));
    }

    #[tokio::test]
    async fn a_malformed_body_refuses_its_request_or_fails_it_once_forwarded() {
        // Body and head in one read: hyper never sees the head.
        for split in [0, 24] {
            let (out, refused, failed) = through(&[&BAD_CHUNK[..split], &BAD_CHUNK[split..]], 4096).await;
            assert_eq!(out, STAND_IN, "split {split}");
            assert_eq!(refused.map(|(n, r)| (n, r.reason)), Some((1, "invalid chunked framing")));
            assert!(!failed);
        }
        // The head went ahead: its body fails.
        let (out, refused, failed) = through(&[&BAD_CHUNK[..62], &BAD_CHUNK[62..]], 4096).await;
        assert_eq!(out, &BAD_CHUNK[..BAD_CHUNK.len() - b"X\r\n0\r\n\r\n".len()]);
        assert_eq!(refused.map(|(n, _)| n), Some(1));
        assert!(failed);
    }

    #[tokio::test]
    async fn the_http2_preface_turns_the_guard_off() {
        let h2 = [H2_PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
        let pieces = Pieces(VecDeque::from([h2[..5].to_vec(), h2[5..].to_vec()]));
        let mut guard = Guard::new(pieces, Arc::new(ClientLimits::default()), Arc::default(), false);
        assert!(guard.sniff().await.unwrap());
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, h2);
    }
}
