//! A minimal Tor ControlPort client (control-spec): `AUTHENTICATE` with no credentials and
//! `GETINFO`, with bounded reads.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// An authenticated control connection.
#[derive(Debug)]
pub struct Control {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Control {
    /// Connects and authenticates (the harness runs tor without control authentication).
    ///
    /// # Errors
    /// Connection failure or a refused AUTHENTICATE.
    pub fn connect(addr: SocketAddr) -> Result<Control> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut c = Control {
            r: BufReader::new(s.try_clone()?),
            w: s,
        };
        let reply = c.command("AUTHENTICATE")?;
        if !reply.iter().any(|l| l.starts_with("250")) {
            bail!("AUTHENTICATE refused: {reply:?}");
        }
        Ok(c)
    }

    /// Sends one command line; returns the reply lines (data lines of `+` replies
    /// included, without the final ".").
    ///
    /// # Errors
    /// I/O failure or a reply longer than 100 000 lines.
    pub fn command(&mut self, line: &str) -> Result<Vec<String>> {
        write!(self.w, "{line}\r\n")?;
        self.w.flush()?;
        let mut out = Vec::new();
        let mut in_data = false;
        for _ in 0..100_000 {
            let mut l = String::new();
            if self.r.read_line(&mut l)? == 0 {
                bail!("control connection closed");
            }
            let l = l.trim_end_matches(['\r', '\n']).to_owned();
            if in_data {
                if l == "." {
                    in_data = false;
                } else {
                    out.push(l);
                }
                continue;
            }
            let done = l.len() >= 4 && l.as_bytes()[3] == b' ';
            in_data = l.len() >= 4 && l.as_bytes()[3] == b'+';
            out.push(l);
            if done {
                return Ok(out);
            }
        }
        bail!("control reply too long")
    }

    /// `GETINFO key`: the value (multi-line values joined with "\n").
    ///
    /// # Errors
    /// I/O failure or an error reply.
    pub fn getinfo(&mut self, key: &str) -> Result<String> {
        let reply = self.command(&format!("GETINFO {key}"))?;
        let first = reply.first().context("empty reply")?;
        if !first.starts_with("250") {
            bail!("GETINFO {key}: {reply:?}");
        }
        if let Some(v) = first.strip_prefix(&format!("250-{key}=")) {
            return Ok(v.to_owned());
        }
        if first.starts_with(&format!("250+{key}=")) {
            let data: Vec<&str> = reply[1..]
                .iter()
                .take_while(|l| !l.starts_with("250 "))
                .map(String::as_str)
                .collect();
            return Ok(data.join("\n"));
        }
        bail!("GETINFO {key}: unexpected reply {reply:?}")
    }
}
