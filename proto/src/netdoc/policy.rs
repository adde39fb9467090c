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

/// Ranges C tor's `ExitPolicyRejectPrivate` rejects: loopback, RFC 1918, link-local and
/// "this network", plus CGNAT (100.64.0.0/10, where some Kubernetes networks live).
///
/// Nothing larger than a /8 belongs here: a reject rule for more than 2^25 addresses
/// makes the authorities summarize the whole policy as `reject 1-65535` ([`summarize`]),
/// and clients would never pick the relay as an exit.
pub const PRIVATE_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];

/// The IPv4 networks C tor ignores in reject rules when it summarizes a policy
/// (`private_nets` in C's `policies.c`); every authority must use the same list.
const SUMMARY_PRIVATE_NETS: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([127, 0, 0, 0], 8),
    ([192, 168, 0, 0], 16),
    ([10, 0, 0, 0], 8),
    ([172, 16, 0, 0], 12),
];

/// Ports with at most this many rejected addresses still count as accepted by a later
/// `accept *:port` (C: `REJECT_CUTOFF_COUNT`).
const REJECT_CUTOFF_COUNT: u64 = 1 << 25;
/// Longest summary C writes (`MAX_EXITPOLICY_SUMMARY_LEN`).
const MAX_SUMMARY_LEN: usize = 1000;

/// The port summary of an IPv4 exit policy, as directory authorities write it in `p`
/// lines (dir-spec §3.4.1; C: `policy_summarize`): `accept PORTS` or `reject PORTS`,
/// whichever is shorter, `reject 1-65535` when nothing is accepted and `accept 1-65535`
/// when nothing is rejected.
///
/// A port counts as accepted when an `accept *:port` rule comes before reject rules
/// covering more than 2^25 addresses for it; accepts for specific networks are ignored,
/// and so are rejects of exactly the private networks C tor lists.
pub fn summarize(rules: &[PolicyRule]) -> String {
    // (first port, accepted, rejected-address count) per range; ranges cover 1-65535.
    struct Range {
        lo: u32,
        hi: u32,
        accepted: bool,
        rejected: u64,
    }
    let mut ranges = vec![Range {
        lo: 1,
        hi: 65535,
        accepted: false,
        rejected: 0,
    }];
    let split = |ranges: &mut Vec<Range>, at: u32| {
        if let Some(i) = ranges.iter().position(|r| r.lo < at && at <= r.hi) {
            let r = &ranges[i];
            let tail = Range {
                lo: at,
                hi: r.hi,
                accepted: r.accepted,
                rejected: r.rejected,
            };
            ranges[i].hi = at - 1;
            ranges.insert(i + 1, tail);
        }
    };
    for rule in rules {
        let (lo, hi) = (u32::from(rule.ports.0), u32::from(rule.ports.1));
        split(&mut ranges, lo);
        split(&mut ranges, hi + 1);
        let inside = |r: &Range| r.lo >= lo && r.hi <= hi;
        if rule.accept {
            if rule.net.is_none() {
                for r in ranges.iter_mut().filter(|r| inside(r)) {
                    if !r.accepted && r.rejected <= REJECT_CUTOFF_COUNT {
                        r.accepted = true;
                    }
                }
            }
        } else {
            let bits = rule.net.map_or(0, |(_, b)| b);
            let private = rule
                .net
                .is_some_and(|(ip, b)| SUMMARY_PRIVATE_NETS.contains(&(ip.octets(), b)));
            if !private {
                let count = 1u64 << (32 - u32::from(bits));
                for r in ranges.iter_mut().filter(|r| inside(r)) {
                    r.rejected += count;
                }
            }
        }
    }
    // Merge neighbours with the same verdict, then write both lists.
    let mut accepts = Vec::new();
    let mut rejects = Vec::new();
    let mut i = 0;
    while i < ranges.len() {
        let start = ranges[i].lo;
        let verdict = ranges[i].accepted;
        while i + 1 < ranges.len() && ranges[i + 1].accepted == verdict {
            i += 1;
        }
        let end = ranges[i].hi;
        let s = if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        };
        if verdict {
            accepts.push(s);
        } else {
            rejects.push(s);
        }
        i += 1;
    }
    if accepts.is_empty() {
        return "reject 1-65535".into();
    }
    if rejects.is_empty() {
        return "accept 1-65535".into();
    }
    let (a, r) = (accepts.join(","), rejects.join(","));
    if r.len() > MAX_SUMMARY_LEN - 7 && a.len() > MAX_SUMMARY_LEN - 7 {
        // Both too long: C cuts the accept list at the last comma that fits.
        let cut = a[..MAX_SUMMARY_LEN - 7].rfind(',').unwrap_or(0);
        format!("accept {}", &a[..cut])
    } else if r.len() < a.len() {
        format!("reject {r}")
    } else {
        format!("accept {a}")
    }
}

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

    fn rules(lines: &[&str]) -> Vec<PolicyRule> {
        lines
            .iter()
            .map(|l| PolicyRule::parse(l).unwrap())
            .collect()
    }

    #[test]
    fn summaries_as_c_tor_writes_them() {
        assert_eq!(summarize(&rules(&["reject *:*"])), "reject 1-65535");
        assert_eq!(summarize(&rules(&["accept *:*"])), "accept 1-65535");
        // Accepting only a private network is not an exit for the summary.
        assert_eq!(
            summarize(&rules(&["accept 127.0.0.0/8:*", "reject *:*"])),
            "reject 1-65535"
        );
        assert_eq!(
            summarize(&rules(&["accept *:80", "accept *:443", "reject *:*"])),
            "accept 80,443"
        );
        assert_eq!(
            summarize(&rules(&["reject *:25", "reject *:119", "accept *:*"])),
            "reject 25,119"
        );
        // Rejecting the private ranges first (ExitPolicyRejectPrivate) changes nothing,
        // and neither does a small reject; a reject of more than 2^25 addresses does.
        let private: Vec<String> = PRIVATE_RANGES
            .iter()
            .map(|r| format!("reject {r}:*"))
            .collect();
        let mut p: Vec<&str> = private.iter().map(String::as_str).collect();
        p.push("reject 8.8.8.0/24:*");
        p.push("accept *:*");
        assert_eq!(summarize(&rules(&p)), "accept 1-65535");
        assert_eq!(
            summarize(&rules(&["reject 64.0.0.0/2:443", "accept *:*"])),
            "reject 443"
        );
        // The default policy of the C tor exits in tests/data/ctor.
        let c_default = [
            "accept 127.0.0.0/8:*",
            "reject *:25",
            "reject *:119",
            "reject *:135-139",
            "reject *:445",
            "reject *:563",
            "reject *:1214",
            "reject *:4661-4666",
            "reject *:6346-6429",
            "reject *:6699",
            "reject *:6881-6999",
            "accept *:*",
        ];
        assert_eq!(
            summarize(&rules(&c_default)),
            "reject 25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999"
        );
        // Our default exit policy with private ranges rejected still summarizes as an exit.
        let ours = ExitPolicy::parse(&["accept *:*".into()], true).unwrap();
        assert_eq!(summarize(&ours.rules), "accept 1-65535");
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
