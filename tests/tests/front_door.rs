//! The front door against malformed, ambiguous and abusive clients: raw bytes on real sockets
//! to the real binary, with a backend that counts every byte it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_tests::manifests::{ingress, service};
use sluice_tests::{Gateway, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers every read with a small 200 and keeps every byte it received.
struct Backend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(ip: &str) -> Backend {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let counted = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 65536];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        counted.lock().unwrap().extend_from_slice(&buf[..n]);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Backend { addr, received, task }
    }

    /// How many request lines the backend received.
    fn requests(&self) -> usize {
        let received = self.received.lock().unwrap();
        received.windows(11).filter(|w| w == b" HTTP/1.1\r\n").count()
    }

    fn received(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway routing every path of `front.test` to a counting backend.
async fn setup(args: &[&str]) -> (tempfile::TempDir, Backend, Gateway) {
    let backend = Backend::start("127.0.0.40").await;
    let dir = tempfile::tempdir().unwrap();
    let manifests = [service("app", &[backend.addr], &[]), ingress("app", "front.test", &[("/", "Prefix", "app")])];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), args).await.unwrap();
    (dir, backend, gateway)
}

/// Writes `parts` (pausing between them, as a slow client would) and reads until the server
/// closes, for at most a second; the answer, and whether it closed in time.
async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // The server may answer and close before the client has written everything.
        if stream.write_all(part).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Malformed or ambiguous requests and the status each gets: `|` splits a request into
/// writes sent 30 ms apart.
const CASES: &[(&str, u16, &[u8])] = &[
    // Framing that a backend could read another way (request smuggling).
    ("CL then TE", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE then CL", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
    ("CL.TE smuggle", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED"),
    ("TE.CL smuggle", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
    ("TE gzip, chunked", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE chunked, identity", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("TE xchunked", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("TE identity", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: identity\r\n\r\n"),
    ("TE chunked, chunked", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("TE quoted", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"),
    ("TE twice", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE identity then chunked", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE on HTTP/1.0", 400, b"POST / HTTP/1.0\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE space before colon", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("TE tab before colon", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n"),
    ("TE folded", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    ("TE vertical tab", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n"),
    ("CL plus sign", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: +4\r\n\r\nbody"),
    ("CL negative", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: -1\r\n\r\n"),
    ("CL inner space", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 1 0\r\n\r\n0123456789"),
    ("CL hex", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 0x4\r\n\r\nbody"),
    ("CL exponent", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4e0\r\n\r\nbody"),
    ("CL list of equal", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4, 4\r\n\r\nbody"),
    ("CL list of different", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4, 5\r\n\r\nbody"),
    ("CL twice, different", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbody"),
    ("CL twice, equal", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nbody"),
    ("CL overflow", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 99999999999999999999\r\n\r\n"),
    ("CL empty", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length:\r\n\r\n"),
    ("CL trailing letter", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4a\r\n\r\nbody"),
    // Chunked bodies: refused before any byte of them is forwarded.
    ("chunk size not hex", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("chunk size trailing space", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    ("chunk empty extension", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n"),
    ("chunk extension control byte", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x01\r\nhello\r\n0\r\n\r\n"),
    ("chunk size negative", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size 0x prefix", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size overflow", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n"),
    ("chunk data too long", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"),
    ("chunk line bare LF", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ("TE in trailer", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("CL in trailer", 400, b"POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n"),
    // Request lines.
    ("bare CR ends request line", 400, b"GET /0123456789 HTTP/1.1\rHost: front.test\r\n\r\n"),
    ("bare CR ends request line, slowly", 400, b"GET /0123456789 HTTP/1.1\r|Host: front.test\r\n\r\n"),
    ("bare CR in target", 400, b"GET /a\rb HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("NUL in target", 400, b"GET /a\x00b HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("control byte in target", 400, b"GET /a\x01b HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("DEL in target", 400, b"GET /a\x7fb HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("obs-text in target", 400, b"GET /a\xffb HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("UTF-8 in target", 400, b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("version HTTP/1.2", 400, b"GET / HTTP/1.2\r\nHost: front.test\r\n\r\n"),
    ("version HTTP/2.0", 400, b"GET / HTTP/2.0\r\nHost: front.test\r\n\r\n"),
    ("version lowercase", 400, b"GET / http/1.1\r\nHost: front.test\r\n\r\n"),
    ("HTTP/0.9", 400, b"GET /\r\n\r\n"),
    ("tab separator", 400, b"GET\t/ HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("double space", 400, b"GET  / HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("trailing space after version", 400, b"GET / HTTP/1.1 \r\nHost: front.test\r\n\r\n"),
    ("method with parenthesis", 400, b"G(T / HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("target not origin-form", 400, b"GET foo HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("asterisk with GET", 400, b"GET * HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    // Header lines.
    ("header line ends in CR CR", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\r\n\r\n"),
    ("header line ends in CR CR, slowly", 400, b"GET / HTTP/1.1\r\nHost: front.test\r|\r\n\r\n"),
    ("bare CR in a value", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nX: a\rb\r\n\r\n"),
    ("NUL in a value", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nX: a\x00b\r\n\r\n"),
    ("control byte in a value", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nX: a\x01b\r\n\r\n"),
    ("DEL in a value", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nX: a\x7fb\r\n\r\n"),
    ("obs-fold", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nX: a\r\n b\r\n\r\n"),
    ("first header line folded", 400, b"GET / HTTP/1.1\r\n Host: front.test\r\n\r\n"),
    ("space before colon", 400, b"GET / HTTP/1.1\r\nHost : front.test\r\n\r\n"),
    ("invalid field name", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nX(y): 1\r\n\r\n"),
    ("empty field name", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\n: x\r\n\r\n"),
    ("field line without colon", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nFoo\r\n\r\n"),
    // Host.
    ("no Host on HTTP/1.1", 400, b"GET / HTTP/1.1\r\n\r\n"),
    ("two Hosts", 400, b"GET / HTTP/1.1\r\nHost: front.test\r\nHost: other.test\r\n\r\n"),
    ("Host with user info", 400, b"GET / HTTP/1.1\r\nHost: user@front.test\r\n\r\n"),
    ("Host with a path", 400, b"GET / HTTP/1.1\r\nHost: front.test/x\r\n\r\n"),
    ("Host empty", 400, b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    ("Host list", 400, b"GET / HTTP/1.1\r\nHost: front.test, other.test\r\n\r\n"),
    ("Host with a space", 400, b"GET / HTTP/1.1\r\nHost: front test\r\n\r\n"),
    ("Host port not numeric", 400, b"GET / HTTP/1.1\r\nHost: front.test:http\r\n\r\n"),
    ("Host port too long", 400, b"GET / HTTP/1.1\r\nHost: front.test:8000000\r\n\r\n"),
    ("absolute-form without Host", 400, b"GET http://front.test/ HTTP/1.1\r\n\r\n"),
    ("absolute-form with user info", 400, b"GET http://user@front.test/ HTTP/1.1\r\nHost: front.test\r\n\r\n"),
    ("absolute-form of another scheme", 400, b"GET ftp://front.test/ HTTP/1.1\r\nHost: front.test\r\n\r\n"),
];

#[tokio::test]
async fn malformed_and_ambiguous_requests_are_refused_and_never_forwarded() {
    let (_dir, backend, gateway) = setup(&[]).await;
    assert!(CASES.len() >= 60);
    let mut failures = Vec::new();
    for (name, status, bytes) in CASES {
        let parts: Vec<&[u8]> = bytes.split(|&b| b == b'|').collect();
        let (answer, closed) = exchange(gateway.http, &parts).await;
        let expected = format!("HTTP/1.1 {status} ");
        let forwarded = backend.received();
        if !answer.starts_with(&expected) || !closed || forwarded > 0 {
            let line = answer.lines().next().unwrap_or_default();
            failures
                .push(format!("{name}: answered {line:?}, closed within 1 s: {closed}, backend got {forwarded} bytes"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));

    // The same gateway forwards a well-formed request, and a pipelined malformed one after
    // it is refused in order.
    let ok = b"GET / HTTP/1.1\r\nHost: front.test\r\n\r\n";
    let bad = b"POST / HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (answer, closed) = exchange(gateway.http, &[&[ok.as_slice(), bad.as_slice()].concat()]).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("HTTP/1.1 400 "), "{answer}");
    assert!(closed);
    assert_eq!(backend.requests(), 1, "only the well-formed request was forwarded");
}

#[tokio::test]
async fn heads_over_the_limits_are_refused_with_414_and_431() {
    let (_dir, backend, gateway) = setup(&["--max-request-line", "1k", "--max-request-head", "4k"]).await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: front.test\r\n\r\n", "a".repeat(1100));
    let long_method = format!("{} / HTTP/1.1\r\nHost: front.test\r\n\r\n", "A".repeat(100_000));
    let long_value = format!("GET / HTTP/1.1\r\nHost: front.test\r\nX: {}\r\n\r\n", "v".repeat(5000));
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: front.test\r\n{many}\r\n");
    for (name, request, status) in [
        ("target", &long_target, 414),
        ("method", &long_method, 414),
        ("value", &long_value, 431),
        ("count", &many, 431),
    ] {
        let (answer, closed) = exchange(gateway.http, &[request.as_bytes()]).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{name}: {answer}");
        assert!(closed, "{name}");
    }
    assert_eq!(backend.received(), 0);
    let at_limit = format!("GET /{} HTTP/1.1\r\nHost: front.test\r\n\r\n", "a".repeat(1000));
    let (answer, _) = exchange(gateway.http, &[at_limit.as_bytes()]).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test]
async fn an_answer_given_before_the_body_is_read_closes_the_connection() {
    let (_dir, _backend, gateway) = setup(&[]).await;
    // No route: 404 before the body is read. The client learns that the connection closes.
    let post = b"POST /x HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 5\r\n\r\nhello";
    let (answer, closed) = exchange(gateway.http, &[post]).await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(closed);
    // Without a body the connection stays open for the next request.
    let get = b"GET /x HTTP/1.1\r\nHost: nowhere.test\r\n\r\n";
    let (answer, closed) = exchange(gateway.http, &[get]).await;
    assert!(answer.starts_with("HTTP/1.1 404 ") && !answer.to_ascii_lowercase().contains("connection: close"));
    assert!(!closed, "a keep-alive connection stays open");
}

#[tokio::test]
async fn a_post_whose_upstream_fails_says_connection_close() {
    let dir = tempfile::tempdir().unwrap();
    let gone: SocketAddr = ([127, 0, 0, 41], free_port("127.0.0.41").unwrap()).into();
    let manifests = [service("gone", &[gone], &[]), ingress("gone", "gone.test", &[("/", "Prefix", "gone")])];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let post = b"POST / HTTP/1.1\r\nHost: gone.test\r\nContent-Length: 5\r\n\r\nhello";
    let (answer, closed) = exchange(gateway.http, &[post]).await;
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(closed);
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    let (_dir, backend, gateway) = setup(&["--client-header-timeout", "500ms"]).await;
    // A head trickled slower than the timeout.
    let mut slow = TcpStream::connect(gateway.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: front.test\r\n").await.unwrap();
    let mut buf = [0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed after the header timeout: {read:?}");
    // An idle keep-alive connection after a request.
    let mut idle = TcpStream::connect(gateway.http).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: front.test\r\n\r\n").await.unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
    let read = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "idle connection closed: {read:?}");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_counted() {
    let (_dir, _backend, gateway) = setup(&["--max-connections", "4"]).await;
    // At most 4 per worker, one worker per core: 64 idle connections are more than that.
    let mut open = Vec::new();
    for _ in 0..64 {
        open.push(TcpStream::connect(gateway.http).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut open {
        let mut buf = [0; 16];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            closed += 1;
        }
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(closed >= 64 - 4 * workers, "{closed} of 64 closed");
    let metrics = sluice_tests::Client::new().get(&format!("http://{}/metrics", gateway.admin), "admin").await.unwrap();
    let refused = metrics.body.lines().find_map(|l| l.strip_prefix("sluice_refused_connections_total "));
    assert_eq!(refused.and_then(|v| v.parse::<usize>().ok()), Some(closed), "{}", metrics.body);
    // Once the idle ones go, new connections are served again.
    drop(open);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (answer, _) =
        exchange(gateway.http, &[b"GET / HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n"]).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

/// An HTTP/2 frame: type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A HEADERS frame ending the stream, its fields as HPACK literals without indexing.
fn headers(stream: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    frame(1, 0x5, stream, &block)
}

const GET: [(&str, &str); 4] = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "front.test")];

/// Sends the HTTP/2 preface, an empty SETTINGS and `frames`; returns the server's frames
/// (type, flags, stream, payload) until it closes or goes quiet for half a second.
async fn h2_exchange(addr: SocketAddr, frames: &[Vec<u8>]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frames.concat());
    stream.write_all(&out).await.unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0; 16384];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        bytes.extend_from_slice(&buf[..n]);
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 9 {
        let len = (usize::from(bytes[at]) << 16) | (usize::from(bytes[at + 1]) << 8) | usize::from(bytes[at + 2]);
        let stream = u32::from_be_bytes(bytes[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff;
        let end = (at + 9 + len).min(bytes.len());
        frames.push((bytes[at + 3], bytes[at + 4], stream, bytes[at + 9..end].to_vec()));
        at += 9 + len;
    }
    frames
}

#[tokio::test]
async fn http2_limits_and_malformed_requests() {
    let (_dir, backend, gateway) = setup(&["--http2-max-streams", "10", "--max-request-head", "4k"]).await;

    // The server's SETTINGS announce the stream and header list limits.
    let frames = h2_exchange(gateway.http, &[headers(1, &GET)]).await;
    let settings = &frames.iter().find(|f| f.0 == 4 && f.1 & 1 == 0).unwrap().3;
    let setting = |id: u16| {
        settings
            .chunks(6)
            .find(|s| u16::from_be_bytes([s[0], s[1]]) == id)
            .map(|s| u32::from_be_bytes(s[2..].try_into().unwrap()))
    };
    assert_eq!((setting(3), setting(6)), (Some(10), Some(4096)));
    assert!(frames.iter().any(|f| f.0 == 1 && f.2 == 1), "a well-formed request is answered");
    assert_eq!(backend.requests(), 1);

    // Malformed requests are stream errors (RST_STREAM, PROTOCOL_ERROR) or end the
    // connection (GOAWAY); none reaches the backend.
    let malformed: [&[(&str, &str)]; 5] = [
        &[GET[0], GET[1], GET[2], GET[3], ("connection", "keep-alive")],
        &[GET[0], GET[1], GET[2], GET[3], ("transfer-encoding", "chunked")],
        &[GET[0], GET[1], GET[2], GET[3], ("te", "gzip")],
        &[GET[0], GET[1], ("x", "1"), GET[2], GET[3]],
        &[GET[0], GET[1], GET[3]],
    ];
    for fields in malformed {
        let frames = h2_exchange(gateway.http, &[headers(1, fields)]).await;
        let reset = frames.iter().any(|f| f.0 == 3 && f.2 == 1 && f.3 == 1u32.to_be_bytes());
        let away = frames.iter().any(|f| f.0 == 7);
        assert!(reset || away, "{fields:?}: {frames:?}");
        assert!(!frames.iter().any(|f| f.0 == 1 && f.2 == 1), "{fields:?} answered");
    }
    let uppercase = h2_exchange(gateway.http, &[headers(1, &[GET[0], GET[1], GET[2], GET[3], ("X-Up", "1")])]).await;
    assert!(uppercase.iter().any(|f| f.0 == 3 || f.0 == 7), "{uppercase:?}");
    assert_eq!(backend.requests(), 1, "no malformed request reached the backend");

    // Rapid reset: streams opened and cancelled at once end in GOAWAY (ENHANCE_YOUR_CALM),
    // and only a few of them reach the backend.
    let flood: Vec<Vec<u8>> = (0..500u32)
        .flat_map(|i| {
            let id = 2 * i + 1;
            let open = headers(id, &GET);
            [frame(1, 0x4, id, &open[9..]), frame(3, 0, id, &8u32.to_be_bytes())]
        })
        .collect();
    let frames = h2_exchange(gateway.http, &flood).await;
    let goaway = frames.iter().find(|f| f.0 == 7).expect("GOAWAY");
    assert_eq!(goaway.3[4..8], 11u32.to_be_bytes(), "ENHANCE_YOUR_CALM");
    assert!(backend.requests() < 100, "{} of 500 reset streams reached the backend", backend.requests());
}
