//! Traffic for data-path tests: a local HTTP/1.0 file server with deterministic content,
//! and a SOCKS5 client (RFC 1928, no authentication) to fetch through a Tor client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The deterministic body served for `/bytes/N`: byte i is `(i * 31 + i / 251) % 256`.
pub fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + i / 251) % 256) as u8).collect()
}

/// Starts a file server on 127.0.0.1 answering `GET /bytes/N`; returns its address. The
/// serving thread lives as long as the test process.
///
/// # Errors
/// When it cannot bind.
pub fn start_http_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    Ok(addr)
}

fn serve(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let n = text
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/bytes/"))
        .and_then(|n| n.parse::<usize>().ok());
    match n {
        Some(n) if n <= 256 << 20 => {
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {n}\r\n\r\n");
            let _ = s.write_all(&body(n));
        }
        _ => {
            let _ = s.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n");
        }
    }
}

/// Fetches `http://target/bytes/n` through the SOCKS5 proxy at `socks`; returns the body.
///
/// # Errors
/// SOCKS refusal, I/O errors, timeouts, a non-200 status.
pub fn fetch_via_socks(
    socks: SocketAddr,
    target: SocketAddr,
    n: usize,
    limit: Duration,
) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&socks, Duration::from_secs(5))?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    s.write_all(&[5, 1, 0])?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r)?;
    if r != [5, 0] {
        bail!("SOCKS greeting refused: {r:?}");
    }
    let SocketAddr::V4(v4) = target else {
        bail!("IPv4 only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&req)?;
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep)?;
    if rep[1] != 0 {
        bail!("SOCKS CONNECT failed with code {}", rep[1]);
    }
    write!(s, "GET /bytes/{n} HTTP/1.0\r\nHost: {target}\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).context("reading the response")?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    if !resp.starts_with(b"HTTP/1.0 200") {
        bail!(
            "HTTP status: {}",
            String::from_utf8_lossy(&resp[..head_end])
        );
    }
    Ok(resp[head_end + 4..].to_vec())
}
