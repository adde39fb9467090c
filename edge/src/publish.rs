//! Descriptor upload to directory authorities (dir-spec §4.2, INTEROP D.4): `POST /tor/`
//! with the descriptor as the body, straight to each authority's DirPort, as C tor relays
//! do. Authorities answer 200 (accepted, possibly with `X-Descriptor-Not-New`) or 400 with
//! a reason.
//!
//! Invariants: every request is bounded in time and in response size; a failing authority
//! never blocks uploads to the others.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response we read from an authority.
const MAX_RESPONSE: usize = 64 * 1024;

/// What an authority said about an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadResult {
    /// HTTP status code.
    pub status: u16,
    /// The reason phrase (C tor puts its rejection reason here).
    pub reason: String,
}

impl UploadResult {
    /// True when the authority accepted the descriptor.
    pub fn accepted(&self) -> bool {
        self.status == 200
    }
}

/// Why an upload did not get an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Connection or I/O failure.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Not an HTTP response.
    #[error("malformed response")]
    Malformed,
}

/// POSTs `body` to `http://{authority}/tor/`.
///
/// # Errors
/// [`UploadError`] when no well-formed HTTP status line comes back within `limit`.
pub async fn upload(
    authority: SocketAddr,
    body: &str,
    reason: &str,
    limit: Duration,
) -> Result<UploadResult, UploadError> {
    tokio::time::timeout(limit, upload_inner(authority, body, reason))
        .await
        .map_err(|_| UploadError::Timeout)?
}

async fn upload_inner(
    authority: SocketAddr,
    body: &str,
    reason: &str,
) -> Result<UploadResult, UploadError> {
    let mut s = TcpStream::connect(authority).await?;
    let head = format!(
        "POST /tor/ HTTP/1.0\r\nHost: {authority}\r\nContent-Length: {}\r\nX-Desc-Gen-Reason: {}\r\n\r\n",
        body.len(),
        reason.replace(['\r', '\n'], " ")
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.flush().await?;
    let mut resp = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&chunk[..n]);
        if resp.len() > MAX_RESPONSE || resp.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    parse_status(&resp).ok_or(UploadError::Malformed)
}

/// Parses `HTTP/1.x NNN reason` from the first line.
fn parse_status(resp: &[u8]) -> Option<UploadResult> {
    let end = resp.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&resp[..end])
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    Some(UploadResult {
        status,
        reason: parts.next().unwrap_or("").to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.0 400 Missing TAP key\r\n\r\n"),
            Some(UploadResult {
                status: 400,
                reason: "Missing TAP key".into()
            })
        );
        assert!(parse_status(b"HTTP/1.0 200 OK\r\n").unwrap().accepted());
        assert_eq!(parse_status(b"garbage\n"), None);
        assert_eq!(parse_status(b"HTTP/1.0 abc\n"), None);
        assert_eq!(parse_status(b"no newline"), None);
    }

    #[tokio::test]
    async fn posts_the_body_and_reads_the_answer() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&req).contains("router x") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
            String::from_utf8(req).unwrap()
        });
        let r = upload(addr, "router x\n", "test", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(r.accepted());
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /tor/ HTTP/1.0\r\n"), "{req}");
        assert!(req.contains("Content-Length: 9\r\n"));
        // A silent server times out instead of hanging.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        assert!(matches!(
            upload(addr, "router x\n", "test", Duration::from_millis(300)).await,
            Err(UploadError::Timeout)
        ));
    }
}
