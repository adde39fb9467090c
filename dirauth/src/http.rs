//! HTTP/1.0 as Tor's directory protocol uses it (dir-spec §6; INTEROP E.5): one request
//! per connection, the server closes after the response, header names written in C
//! tor's exact case (C clients match `Content-Length: ` and friends case-sensitively).
//!
//! Invariants: requests are bounded (headers [`MAX_HEADERS`], bodies [`MAX_BODY`], whole
//! request within a deadline), so a slow or hostile client costs one task and a bounded
//! buffer; a malformed request gets `400` and the connection closed.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest header block accepted (C tor: 50 000; clients send up to ~22 kB of md digests).
pub const MAX_HEADERS: usize = 50_000;
/// Largest request body accepted (votes of large networks fit).
pub const MAX_BODY: usize = 16 << 20;

/// What can go wrong reading a request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The peer went away or I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The request did not arrive in time.
    #[error("timed out")]
    Timeout,
    /// The request is malformed.
    #[error("bad request: {0}")]
    Bad(&'static str),
    /// The request is larger than allowed.
    #[error("request too large")]
    TooLarge,
}

/// The methods the directory protocol uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// One request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path, e.g. `/tor/status-vote/current/consensus-microdesc/AAAAAA+BBBBBB.z`.
    pub path: String,
    /// Headers as sent (names compared case-insensitively by [`Request::header`]).
    pub headers: Vec<(String, String)>,
    /// Body (POST).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

/// Reads one request within `limit`.
///
/// # Errors
/// [`HttpError`].
pub async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Result<Request, HttpError> {
    tokio::time::timeout(limit, read_request_inner(s))
        .await
        .map_err(|_| HttpError::Timeout)?
}

async fn read_request_inner<S: AsyncRead + Unpin>(s: &mut S) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEADERS {
            return Err(HttpError::TooLarge);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Bad("connection closed before the headers ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEADERS {
        return Err(HttpError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| HttpError::Bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = match parts.next().map(str::to_ascii_uppercase).as_deref() {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => return Err(HttpError::Bad("method")),
    };
    let mut path = parts.next().ok_or(HttpError::Bad("no URL"))?.to_owned();
    let version = parts.next().ok_or(HttpError::Bad("no HTTP version"))?;
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err(HttpError::Bad("request line"));
    }
    // An absolute URL is reduced to its path, as C tor does.
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest
            .find('/')
            .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned());
    }
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or(HttpError::Bad("header line"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut body = buf[head_end + 4..].to_vec();
    let want = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| {
            v.parse::<usize>()
                .map_err(|_| HttpError::Bad("Content-Length"))
        })
        .transpose()?;
    match (method, want) {
        (_, Some(n)) if n > MAX_BODY => return Err(HttpError::TooLarge),
        (_, Some(n)) => {
            while body.len() < n {
                let k = s.read(&mut chunk).await?;
                if k == 0 {
                    return Err(HttpError::Bad("body shorter than Content-Length"));
                }
                body.extend_from_slice(&chunk[..k]);
            }
            body.truncate(n);
        }
        (Method::Post, None) => {
            // No length: the body runs to EOF (HTTP/1.0).
            loop {
                if body.len() > MAX_BODY {
                    return Err(HttpError::TooLarge);
                }
                let k = s.read(&mut chunk).await?;
                if k == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..k]);
            }
        }
        (Method::Get, None) => body.clear(),
    }
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

/// One response.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Body (none for short answers such as 304, 404 and POST results).
    pub body: Option<Vec<u8>>,
    /// Extra headers, written after the standard ones.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A body-less answer (C tor's `write_short_http_response`).
    pub fn short(status: u16, reason: impl Into<String>) -> Self {
        Response {
            status,
            reason: reason.into(),
            body: None,
            headers: Vec::new(),
        }
    }

    /// `200 OK` with `body`.
    pub fn ok(body: Vec<u8>) -> Self {
        Response {
            status: 200,
            reason: "OK".into(),
            body: Some(body),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// `Tue, 01 Dec 2026 08:33:59 GMT` (RFC 1123).
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = proto::netdoc::format_time(secs);
    // t = "YYYY-MM-DD HH:MM:SS"
    let (y, mo, d) = (&t[0..4], &t[5..7], &t[8..10]);
    let m = mo.parse::<usize>().unwrap_or(1).clamp(1, 12);
    let weekday = DAYS[usize::try_from((secs / 86400) % 7).unwrap_or(0)];
    format!("{weekday}, {d} {} {y} {} GMT", MONTHS[m - 1], &t[11..19])
}

/// Parses an RFC 1123 date (`If-Modified-Since`); `None` when malformed.
pub fn parse_http_date(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let w: Vec<&str> = s.split_whitespace().collect();
    if w.len() != 6 || w[5] != "GMT" {
        return None;
    }
    let m = MONTHS.iter().position(|&x| x == w[2])? + 1;
    let d: u32 = w[1].parse().ok()?;
    let y: u32 = w[3].parse().ok()?;
    proto::netdoc::parse_time(&format!("{y:04}-{m:02}-{d:02} {}", w[4]))
}

/// Compresses with zlib (the `deflate` encoding of the directory protocol).
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Decompresses zlib data, refusing output larger than `max`.
///
/// # Errors
/// An I/O error for corrupt or oversized data.
pub fn inflate(data: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(u64::try_from(max).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut out)?;
    if out.len() > max {
        return Err(std::io::Error::other("decompressed body too large"));
    }
    Ok(out)
}

/// Whether the client accepts deflate: a `.z` URL or `deflate` in `Accept-Encoding`.
pub fn wants_deflate(req: &Request, dot_z: bool) -> bool {
    dot_z
        || req
            .header("Accept-Encoding")
            .is_some_and(|v| v.split(',').any(|e| e.trim() == "deflate"))
}

/// Writes `resp` (compressing its body when `deflate`) and flushes.
///
/// # Errors
/// I/O errors.
pub async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    resp: &Response,
    deflate_body: bool,
    now: u64,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.0 {} {}\r\nDate: {}\r\n",
        resp.status,
        resp.reason,
        http_date(now)
    );
    let body = resp.body.as_ref().map(|b| {
        if deflate_body {
            (deflate(b), "deflate")
        } else {
            (b.clone(), "identity")
        }
    });
    if let Some((b, enc)) = &body {
        head.push_str("Content-Type: text/plain\r\n");
        head.push_str(&format!(
            "Content-Encoding: {enc}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    if let Some((b, _)) = &body {
        s.write_all(b).await?;
    }
    s.flush().await
}

/// A response read by [`get`] or [`post`].
#[derive(Debug)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Body, decompressed.
    pub body: Vec<u8>,
}

async fn exchange(
    addr: SocketAddr,
    request: Vec<u8>,
    limit: Duration,
    max: usize,
) -> std::io::Result<ClientResponse> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&request).await?;
        s.flush().await?;
        let mut buf = Vec::new();
        (&mut s)
            .take(u64::try_from(max + MAX_HEADERS).unwrap_or(u64::MAX))
            .read_to_end(&mut buf)
            .await?;
        let bad = |w: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, w.to_owned());
        let end = find(&buf, b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
        let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("headers not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut sp = status_line.splitn(3, ' ');
        if !sp.next().unwrap_or("").starts_with("HTTP/1.") {
            return Err(bad("bad status line"));
        }
        let status: u16 = sp
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("bad status"))?;
        let reason = sp.next().unwrap_or("").to_owned();
        let deflated = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("content-encoding") && v.trim() == "deflate"
            })
        });
        let raw = &buf[end + 4..];
        let body = if deflated {
            inflate(raw, max)?
        } else {
            raw.to_vec()
        };
        Ok(ClientResponse {
            status,
            reason,
            body,
        })
    };
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "directory request timed out")
    })?
}

/// `GET path` from a DirPort.
///
/// # Errors
/// I/O errors, timeouts, malformed responses.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
    max: usize,
) -> std::io::Result<ClientResponse> {
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept-Encoding: deflate, identity\r\n\r\n"
    );
    exchange(addr, req.into_bytes(), limit, max).await
}

/// `POST path` with `body` to a DirPort.
///
/// # Errors
/// I/O errors, timeouts, malformed responses.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    limit: Duration,
) -> std::io::Result<ClientResponse> {
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    exchange(addr, req, limit, 1 << 20).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(1_796_114_039), "Tue, 01 Dec 2026 08:33:59 GMT");
        assert_eq!(
            parse_http_date("Tue, 01 Dec 2026 08:33:59 GMT"),
            Some(1_796_114_039)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn deflate_round_trips_and_bombs_are_refused() {
        let data = b"network-status-version 3\n".repeat(100);
        assert_eq!(inflate(&deflate(&data), 1 << 20).unwrap(), data);
        assert!(inflate(&deflate(&vec![0u8; 100_000]), 1000).is_err());
        assert!(inflate(b"not zlib", 1000).is_err());
    }

    #[tokio::test]
    async fn requests_parse_and_bad_ones_fail() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(b"POST /tor/ HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let r = read_request(&mut b, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            (r.method, r.path.as_str(), r.body.as_slice()),
            (Method::Post, "/tor/", &b"hello"[..])
        );
        assert_eq!(r.header("host"), Some("x"));
        for bad in [
            &b"BREW /tor/ HTTP/1.0\r\n\r\n"[..],
            b"GET /tor/\r\n\r\n",
            b"GET /tor/ HTTP/1.0\r\nnocolon\r\n\r\n",
            b"POST /tor/ HTTP/1.0\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            a.write_all(bad).await.unwrap();
            drop(a);
            assert!(read_request(&mut b, Duration::from_secs(1)).await.is_err());
        }
        // A client that never finishes its headers times out.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(b"GET /tor/ HTTP/1.0\r\n").await.unwrap();
        assert!(matches!(
            read_request(&mut b, Duration::from_millis(100)).await,
            Err(HttpError::Timeout)
        ));
        // Endless headers are cut off.
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(b"GET /tor/ HTTP/1.0\r\n").await.unwrap();
        a.write_all(&vec![b'a'; MAX_HEADERS + 10]).await.unwrap();
        assert!(matches!(
            read_request(&mut b, Duration::from_secs(1)).await,
            Err(HttpError::TooLarge)
        ));
    }
}
