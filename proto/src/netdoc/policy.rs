//! Exit policies in Tor's syntax (dir-spec §2.1.3): `accept|reject ADDR[/MASK]:PORT[-PORT]`,
//! first match wins. The same lines go into the descriptor and decide BEGIN requests.
//!
//! Invariants: ports are 1–65535 (0.4.9.11+ authorities refuse port 0, trap 29); IPv4
//! only in these lines (IPv6 rules belong in `accept6`/`reject6`, which authorities
//! refuse in descriptors); a policy that matches nothing rejects.

use std::net::{IpAddr, Ipv4Addr};

use crate::{Error, Result};

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// Accept (true) or reject.
    pub accept: bool,
    /// Network and prefix length; `None` for `*`.
    pub net: Option<(Ipv4Addr, u8)>,
    /// Port range, inclusive.
    pub ports: (u16, u16),
}

impl PolicyRule {
    /// Parses one line.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for anything outside the syntax above.
    pub fn parse(line: &str) -> Result<Self> {
        let bad = Error::InvalidValue("exit policy line");
        let (kw, rest) = line.trim().split_once(' ').ok_or(bad.clone())?;
        let accept = match kw {
            "accept" => true,
            "reject" => false,
            _ => return Err(bad),
        };
        let (addr, ports) = rest.trim().rsplit_once(':').ok_or(bad.clone())?;
        let net = if addr == "*" {
            None
        } else {
            let (ip, bits) = match addr.split_once('/') {
                Some((ip, b)) => (ip, b.parse::<u8>().map_err(|_| bad.clone())?),
                None => (addr, 32),
            };
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad.clone())?;
            if bits > 32 {
                return Err(bad);
            }
            Some((mask(ip, bits), bits))
        };
        let ports = if ports == "*" {
            (1, 65535)
        } else {
            let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
            let lo: u16 = lo.parse().map_err(|_| bad.clone())?;
            let hi: u16 = hi.parse().map_err(|_| bad.clone())?;
            if lo == 0 || hi < lo {
                return Err(bad);
            }
            (lo, hi)
        };
        Ok(PolicyRule { accept, net, ports })
    }

    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        let port_ok = (self.ports.0..=self.ports.1).contains(&port);
        let addr_ok = match (self.net, ip) {
            (None, _) => true,
            (Some((net, bits)), IpAddr::V4(v4)) => mask(v4, bits) == net,
            (Some(_), IpAddr::V6(_)) => false,
        };
        port_ok && addr_ok
    }

    /// The descriptor line.
    pub fn to_line(&self) -> String {
        let kw = if self.accept { "accept" } else { "reject" };
        let addr = match self.net {
            None => "*".to_owned(),
            Some((ip, 32)) => ip.to_string(),
            Some((ip, bits)) => format!("{ip}/{bits}"),
        };
        let ports = match self.ports {
            (1, 65535) => "*".to_owned(),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        };
        format!("{kw} {addr}:{ports}")
    }
}

fn mask(ip: Ipv4Addr, bits: u8) -> Ipv4Addr {
    let m = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    };
    Ipv4Addr::from(u32::from(ip) & m)
}

/// Ranges C tor's `ExitPolicyRejectPrivate` rejects: loopback, RFC 1918, link-local,
/// "this network", CGNAT and multicast/reserved.
pub const PRIVATE_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
];

/// An ordered exit policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPolicy {
    /// Rules, first match wins.
    pub rules: Vec<PolicyRule>,
}

impl ExitPolicy {
    /// Parses `lines`; with `reject_private`, rules rejecting [`PRIVATE_RANGES`] come
    /// first; a final `reject *:*` is implied (and written).
    ///
    /// # Errors
    /// The first malformed line.
    pub fn parse(lines: &[String], reject_private: bool) -> Result<Self> {
        let mut rules = Vec::new();
        if reject_private {
            for r in PRIVATE_RANGES {
                rules.push(PolicyRule::parse(&format!("reject {r}:*"))?);
            }
        }
        for l in lines {
            rules.push(PolicyRule::parse(l)?);
        }
        let catch_all = PolicyRule {
            accept: false,
            net: None,
            ports: (1, 65535),
        };
        let ends_with_wildcard = rules
            .last()
            .is_some_and(|r| r.net.is_none() && r.ports == (1, 65535));
        if !ends_with_wildcard {
            rules.push(catch_all);
        }
        Ok(ExitPolicy { rules })
    }

    /// Whether a connection to `ip:port` is allowed.
    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        self.rules
            .iter()
            .find(|r| r.matches(ip, port))
            .is_some_and(|r| r.accept)
    }

    /// True when nothing is accepted (a non-exit).
    pub fn rejects_all(&self) -> bool {
        !self.rules.iter().any(|r| r.accept)
    }

    /// The descriptor lines.
    pub fn to_lines(&self) -> Vec<String> {
        self.rules.iter().map(PolicyRule::to_line).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rejects_private_ranges() {
        let p = ExitPolicy::parse(&["accept *:*".into()], true).unwrap();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.5.5",
            "169.254.1.1",
            "0.0.0.0",
        ] {
            assert!(!p.allows(ip.parse().unwrap(), 80), "{ip}");
        }
        assert!(p.allows("93.184.216.34".parse().unwrap(), 443));
        assert!(!p.rejects_all());
        assert_eq!(p.to_lines().first().unwrap(), "reject 0.0.0.0/8:*");
        assert_eq!(p.to_lines().last().unwrap(), "accept *:*");
    }

    #[test]
    fn syntax_and_first_match() {
        let p = ExitPolicy::parse(
            &["accept 127.0.0.1:8000-8010".into(), "reject *:*".into()],
            false,
        )
        .unwrap();
        assert!(p.allows("127.0.0.1".parse().unwrap(), 8005));
        assert!(!p.allows("127.0.0.1".parse().unwrap(), 8011));
        assert!(!p.allows("127.0.0.2".parse().unwrap(), 8005));
        assert_eq!(p.to_lines(), ["accept 127.0.0.1:8000-8010", "reject *:*"]);
        let none = ExitPolicy::parse(&[], false).unwrap();
        assert!(none.rejects_all());
        assert_eq!(none.to_lines(), ["reject *:*"]);
        for bad in [
            "accept *:0",
            "allow *:*",
            "accept 1.2.3.4/33:*",
            "accept *:9-8",
            "accept ::1:80",
            "reject",
        ] {
            assert!(PolicyRule::parse(bad).is_err(), "{bad}");
        }
        assert!(!p.allows("::1".parse().unwrap(), 8005));
    }
}
