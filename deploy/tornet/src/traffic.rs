//! Traffic for data-path tests: a local HTTP/1.0 file server with deterministic content,
//! and a SOCKS5 client (RFC 1928; username/password, RFC 1929, only to pick a Tor
//! client's circuit through its IsolateSOCKSAuth) to fetch through a Tor client.

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

/// Starts a TCP echo server on 127.0.0.1 (at most 256 connections, each echoed until it
/// closes); returns its address. The threads live as long as the process.
///
/// # Errors
/// When it cannot bind.
pub fn start_echo_server() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().take(256) {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Opens a SOCKS5 stream to `target` (IPv4) through `socks`, within 60 s for each step.
/// With `isolation`, it is sent as the username: a C tor client (IsolateSOCKSAuth, its
/// default) puts streams with different usernames on different circuits.
///
/// # Errors
/// Connection, SOCKS refusal or timeouts.
pub fn socks_connect(
    socks: SocketAddr,
    target: SocketAddr,
    isolation: Option<&str>,
) -> std::io::Result<TcpStream> {
    let fail = |what: String| std::io::Error::other(what);
    let mut s = TcpStream::connect_timeout(&socks, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let method = if isolation.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method])?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r)?;
    if r != [5, method] {
        return Err(fail(format!("SOCKS method refused: {r:?}")));
    }
    if let Some(user) = isolation {
        let user = &user.as_bytes()[..user.len().min(255)];
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user);
        auth.extend_from_slice(&[1, b'x']);
        s.write_all(&auth)?;
        s.read_exact(&mut r)?;
        if r[1] != 0 {
            return Err(fail("SOCKS authentication refused".into()));
        }
    }
    let SocketAddr::V4(v4) = target else {
        return Err(fail("IPv4 only".into()));
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&req)?;
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep)?;
    if rep[1] != 0 {
        return Err(fail(format!("SOCKS CONNECT failed with code {}", rep[1])));
    }
    Ok(s)
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
    let mut s = socks_connect(socks, target, None)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
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
