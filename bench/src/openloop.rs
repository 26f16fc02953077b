//! An open-loop HTTP client: every request goes out when it is due, on a connection of
//! its own or an idle one, without waiting for the answers to earlier requests. It models
//! many browsers, each with its own connection, where a thread per connection would make
//! the bench's own CPU the limit (the server shares the machine's cores with it).

use std::net::SocketAddr;
use std::sync::Mutex;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// What a server answered to one request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// 200, with the answer's `min_as_of` when it had one.
    Accepted { min_as_of: Option<u64> },
    /// 429 or 503; whether it said when to come back (`Retry-After`).
    Shed { retry_after: bool },
    /// Any other status, or no answer.
    Failed(String),
}

impl Answer {
    /// The answer of this status, `Retry-After` header and body.
    fn of(status: u16, retry_after: bool, body: &[u8]) -> Answer {
        match status {
            200 => Answer::Accepted { min_as_of: crate::harness::min_as_of_in(body) },
            429 | 503 => Answer::Shed { retry_after },
            s => Answer::Failed(format!("{s} {}", String::from_utf8_lossy(body))),
        }
    }

    /// Reads a `ureq` answer (the closed-loop senders').
    pub(crate) fn from_ureq(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        match response {
            Ok(mut r) => {
                let retry_after = r.headers().contains_key("retry-after");
                Answer::of(r.status().as_u16(), retry_after, &crate::harness::answer_body(&mut r))
            }
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

/// One request: the path and query, its content type, whether its body is gzipped.
pub(crate) struct Request {
    pub path_and_query: String,
    pub content_type: &'static str,
    pub gzip: bool,
    pub body: Vec<u8>,
}

/// Connections to one server, opened as requests need them and kept for reuse.
pub(crate) struct Client {
    addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// At most this many requests (so connections) at once; the others wait here.
    slots: tokio::sync::Semaphore,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr, max_connections: usize) -> Client {
        Client { addr, idle: Mutex::new(Vec::new()), slots: tokio::sync::Semaphore::new(max_connections.max(1)) }
    }

    /// Sends `request` once a connection is free, unless that is at `not_after` or
    /// later (`None`: not sent).
    pub(crate) async fn send(&self, request: Request, not_after: std::time::Instant) -> Option<Answer> {
        // The semaphore is never closed.
        let _slot = self.slots.acquire().await.ok()?;
        if std::time::Instant::now() >= not_after {
            return None;
        }
        Some(self.exchange(request).await.unwrap_or_else(Answer::Failed))
    }

    async fn exchange(&self, request: Request) -> Result<Answer, String> {
        let reused = self.idle.lock().map_err(|e| e.to_string())?.pop();
        let mut conn = match reused {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        if conn.ready().await.is_err() {
            conn = self.connect().await?;
        }
        let mut req = hyper::Request::post(request.path_and_query)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, request.content_type);
        if request.gzip {
            req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        let req = req.body(Full::new(Bytes::from(request.body))).map_err(|e| e.to_string())?;
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key(hyper::header::RETRY_AFTER);
        let body = Limited::new(resp.into_body(), 1 << 16).collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !conn.is_closed()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(conn);
        }
        Ok(Answer::of(status, retry_after, &body))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}
