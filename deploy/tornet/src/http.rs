//! A minimal, bounded HTTP/1.0 client for directory requests on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Largest response body read.
const MAX_BODY: usize = 32 << 20;

/// `GET path`; returns the status and the body.
///
/// # Errors
/// Connection failure, timeout, or a malformed response.
pub fn get(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, Vec<u8>)> {
    request(addr, "GET", path, &[], limit)
}

/// The sum of the Prometheus samples at `addr`'s `/metrics` whose lines start with
/// `needle` (a name, optionally with the start of its labels); 0 when the endpoint does
/// not answer.
pub fn metric(addr: SocketAddr, needle: &str) -> f64 {
    try_metric(addr, needle).unwrap_or(0.0)
}

/// As [`metric`], but `None` when the scrape itself failed (so a caller comparing two
/// scrapes can tell "0" from "no answer").
pub fn try_metric(addr: SocketAddr, needle: &str) -> Option<f64> {
    let Ok((200, body)) = get(addr, "/metrics", Duration::from_secs(5)) else {
        return None;
    };
    Some(
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// `POST path` with `body`.
///
/// # Errors
/// As [`get`].
pub fn post(addr: SocketAddr, path: &str, body: &[u8], limit: Duration) -> Result<(u16, Vec<u8>)> {
    request(addr, "POST", path, body, limit)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    limit: Duration,
) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.take(MAX_BODY as u64).read_to_end(&mut resp)?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&resp[..head_end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    if !head.starts_with("HTTP/1.") {
        bail!("not HTTP: {head}");
    }
    Ok((status, resp[head_end + 4..].to_vec()))
}
