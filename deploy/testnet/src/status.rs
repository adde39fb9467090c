//! What `testnet up` prints once the network runs, and writes to `<dir>/status`: every
//! node under a unique name with its role and its flags in the current consensus, how
//! long each phase took and which client verified, ready-to-paste client configuration
//! for an own C tor (`<dir>/torrc`) and for arti (`<dir>/arti.toml`), where the metrics
//! and logs are, and the stop command in the form the start command was typed.
//!
//! Everything here is plain formatting of [`Network`]; nothing is looked up.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// One node of the network as the status shows it.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// Unique name: `ours-…` for our processes, `c-…` for C tor's.
    pub name: String,
    /// Nickname in the consensus (the name without its hyphen).
    pub nickname: String,
    /// What runs it: `ours: dirauth + 1 edge + 1 worker`, `C tor 0.4.9.11`.
    pub kind: String,
    /// authority, exit, middle or client.
    pub role: &'static str,
    /// RSA fingerprint (empty for clients).
    pub fingerprint: String,
    /// Ed25519 identity, unpadded base64.
    pub ed25519: Option<String>,
    /// ORPort on 127.0.0.1.
    pub or_port: Option<u16>,
    /// DirPort on 127.0.0.1 (authorities).
    pub dir_port: Option<u16>,
    /// v3 identity (authorities).
    pub v3ident: Option<String>,
    /// SOCKS port (clients).
    pub socks_port: Option<u16>,
    /// `(process, port)` of every Prometheus endpoint.
    pub metrics: Vec<(String, u16)>,
    /// Log files or directories.
    pub logs: Vec<PathBuf>,
    /// Flags in the current consensus (`None`: not listed, or not a relay).
    pub flags: Option<Vec<String>>,
}

/// How long each phase took.
#[derive(Clone, Debug, Default)]
pub struct Phases {
    /// Building our binaries.
    pub build: Duration,
    /// Starting every process.
    pub start: Duration,
    /// Until a consensus listed every relay Running.
    pub consensus: Duration,
    /// Verifying: which client, and how long it took (`None`: `--no-verify`).
    pub verified: Option<(String, Duration)>,
}

/// The whole picture.
#[derive(Clone, Debug, Default)]
pub struct Network {
    /// The network's directory.
    pub dir: PathBuf,
    /// Every node.
    pub nodes: Vec<Node>,
    /// The `DirAuthority` lines (C tor syntax) every node of the network uses.
    pub dir_authority_lines: Vec<String>,
    /// `valid-after` of the consensus the flags come from.
    pub consensus_valid_after: String,
    /// Phase timings.
    pub phases: Phases,
    /// The command that stops the network, as the user would type it.
    pub stop_command: String,
    /// A port that was free at start, suggested for the user's own client.
    pub suggested_socks_port: u16,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Network {
    /// A complete torrc for a C tor client of this network.
    pub fn torrc(&self) -> String {
        let mut s = format!(
            "# A C tor client of the private network in {dir}\n\
             # Run: tor -f {dir}/torrc\n\
             TestingTorNetwork 1\n\
             DataDirectory {dir}/my-tor\n\
             SocksPort 127.0.0.1:{port}\n\
             ClientUseIPv6 0\n",
            dir = self.dir.display(),
            port = self.suggested_socks_port
        );
        for l in &self.dir_authority_lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// An `arti.toml` for an arti client of this network: the authorities' v3
    /// identities, our authorities' ORPorts as fallback caches, and the settings a
    /// network all on 127.0.0.1 needs. The launcher's embedded client uses this text.
    pub fn arti_toml(&self) -> String {
        crate::verify::arti_toml(self)
    }

    /// The status text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n== private Tor network in {} (all on 127.0.0.1) ==",
            self.dir.display()
        );
        let p = &self.phases;
        let _ = write!(
            s,
            "phases: build {}, start {}, first consensus {}",
            secs(p.build),
            secs(p.start),
            secs(p.consensus)
        );
        match &p.verified {
            Some((client, d)) => {
                let _ = writeln!(s, ", verified {} (by {client})", secs(*d));
            }
            None => s.push_str(", not verified (--no-verify)\n"),
        }
        let total =
            p.build + p.start + p.consensus + p.verified.as_ref().map_or(Duration::ZERO, |v| v.1);
        let _ = writeln!(s, "up in {}", secs(total));
        let _ = writeln!(
            s,
            "\nnodes (flags from the consensus valid after {}):",
            self.consensus_valid_after
        );
        let _ = writeln!(
            s,
            "  {:<13} {:<10} {:<34} PORTS / FLAGS",
            "NAME", "ROLE", "RUNS"
        );
        for n in &self.nodes {
            let mut ports = Vec::new();
            if let Some(p) = n.or_port {
                ports.push(format!("ORPort {p}"));
            }
            if let Some(p) = n.dir_port {
                ports.push(format!("DirPort {p}"));
            }
            if let Some(p) = n.socks_port {
                ports.push(format!("SocksPort {p}"));
            }
            let _ = writeln!(
                s,
                "  {:<13} {:<10} {:<34} {}",
                n.name,
                n.role,
                n.kind,
                ports.join("  ")
            );
            if !n.fingerprint.is_empty() {
                let flags = n
                    .flags
                    .as_ref()
                    .map_or_else(|| "not in the consensus".to_owned(), |f| f.join(" "));
                let _ = writeln!(
                    s,
                    "  {:<13} nickname {}  ${}\n  {:<13} flags: {flags}",
                    "", n.nickname, n.fingerprint, ""
                );
            }
        }
        let _ = writeln!(s, "\nmetrics (Prometheus, http://127.0.0.1:PORT/metrics):");
        for n in self.nodes.iter().filter(|n| !n.metrics.is_empty()) {
            let m: Vec<String> = n.metrics.iter().map(|(w, p)| format!("{w} :{p}")).collect();
            let _ = writeln!(s, "  {:<13} {}", n.name, m.join("  "));
        }
        let _ = writeln!(s, "\nlogs:");
        for n in &self.nodes {
            let l: Vec<String> = n.logs.iter().map(|p| p.display().to_string()).collect();
            let _ = writeln!(s, "  {:<13} {}", n.name, l.join("  "));
        }
        if let Some(c) = self.nodes.iter().find(|n| n.socks_port.is_some()) {
            let port = c.socks_port.unwrap_or_default();
            let _ = writeln!(
                s,
                "\nSOCKS proxy ({}): 127.0.0.1:{port}   e.g. curl --socks5-hostname 127.0.0.1:{port} http://127.0.0.1:PORT/",
                c.name
            );
        }
        let _ = writeln!(
            s,
            "\nyour own C tor client: tor -f {dir}/torrc, which holds\n{}\
             \nyour own arti client: arti proxy -c {dir}/arti.toml, which holds\n{}",
            indent(&self.torrc()),
            indent(&self.arti_toml()),
            dir = self.dir.display()
        );
        let _ = writeln!(
            s,
            "consensus: curl http://127.0.0.1:{}/tor/status-vote/current/consensus",
            self.nodes
                .iter()
                .find_map(|n| n.dir_port)
                .unwrap_or_default()
        );
        let _ = writeln!(s, "stop: {}\n", self.stop_command);
        s
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The display name of a nickname: `oursrelay0` → `ours-relay0`, `crelay0` → `c-relay0`.
pub fn display_name(nickname: &str) -> String {
    for prefix in ["ours", "c"] {
        if let Some(rest) = nickname.strip_prefix(prefix)
            && !rest.is_empty()
        {
            return format!("{prefix}-{rest}");
        }
    }
    nickname.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_prefixed_and_distinct() {
        assert_eq!(display_name("oursrelay0"), "ours-relay0");
        assert_eq!(display_name("crelay0"), "c-relay0");
        assert_eq!(display_name("cexit1"), "c-exit1");
        assert_ne!(display_name("oursrelay0"), display_name("crelay0"));
    }

    #[test]
    fn torrc_lists_every_authority() {
        let line = |i: u16| {
            format!(
                "DirAuthority oursauth{i} orport={} no-v2 v3ident={:040X} 127.0.0.1:{} {:040X}",
                5000 + i,
                100 + i,
                6000 + i,
                i
            )
        };
        let net = Network {
            dir: PathBuf::from("/tmp/net"),
            dir_authority_lines: vec![line(0), line(1)],
            suggested_socks_port: 9999,
            ..Network::default()
        };
        let t = net.torrc();
        assert!(t.contains("TestingTorNetwork 1\n"));
        assert!(t.contains("SocksPort 127.0.0.1:9999\n"));
        assert!(t.contains(&format!(
            "DirAuthority oursauth1 orport=5001 no-v2 v3ident={:040X} 127.0.0.1:6001 {:040X}\n",
            101, 1
        )));
        assert_eq!(t.matches("DirAuthority ").count(), 2);
    }
}
