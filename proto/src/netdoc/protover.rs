//! Protocol version lists (tor-spec §9): `proto` in descriptors, `pr` in consensuses and
//! the `*-protocols` lines of votes. Syntax as C tor's `protover.c` accepts it:
//! `Name=range[,range]` entries separated by single spaces, names of `[A-Za-z0-9-]`
//! (at most 100 characters), versions 0–63.
//!
//! Invariant: [`Protocols`] renders in canonical form (names sorted, ranges merged),
//! because one malformed or non-canonical `pr` line makes C reject a whole consensus
//! (INTEROP trap 20).

use std::collections::BTreeMap;
use std::fmt;

use crate::{Error, Result};

/// A parsed protocol list: for each name, a bit set of versions 0–63.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocols(BTreeMap<String, u64>);

fn bad(what: &str) -> Error {
    Error::Malformed(format!("protocol list: {what}"))
}

impl Protocols {
    /// Parses a list.
    ///
    /// # Errors
    /// [`Error::Malformed`] for anything C tor would refuse.
    pub fn parse(s: &str) -> Result<Self> {
        let mut map = BTreeMap::new();
        if s.is_empty() {
            return Ok(Protocols(map));
        }
        for entry in s.split(' ') {
            let (name, ranges) = entry
                .split_once('=')
                .ok_or_else(|| bad("entry without ="))?;
            if name.is_empty()
                || name.len() > 100
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(bad("bad protocol name"));
            }
            let mut bits = 0u64;
            if !ranges.is_empty() {
                for r in ranges.split(',') {
                    let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                    let num = |x: &str| -> Result<u32> {
                        if x.is_empty() || x.len() > 2 || !x.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(bad("bad version number"));
                        }
                        x.parse::<u32>().map_err(|_| bad("bad version number"))
                    };
                    let (lo, hi) = (num(lo)?, num(hi)?);
                    if lo > hi || hi > 63 {
                        return Err(bad("bad version range"));
                    }
                    for v in lo..=hi {
                        bits |= 1 << v;
                    }
                }
            }
            if map.insert(name.to_owned(), bits).is_some() {
                return Err(bad("protocol listed twice"));
            }
        }
        Ok(Protocols(map))
    }

    /// Whether version `v` of protocol `name` is listed.
    pub fn supports(&self, name: &str, v: u8) -> bool {
        v < 64 && self.0.get(name).is_some_and(|b| b & (1 << v) != 0)
    }

    /// The versions listed by at least `threshold` (minimum 1) of `lists`, for each
    /// protocol name; names left with no version are dropped.
    pub fn vote(lists: &[Protocols], threshold: usize) -> Protocols {
        let mut out = BTreeMap::new();
        for name in lists.iter().flat_map(|p| p.0.keys()) {
            if out.contains_key(name) {
                continue;
            }
            let bits = (0..64u32)
                .filter(|v| {
                    lists
                        .iter()
                        .filter(|p| p.0.get(name).is_some_and(|b| b & (1 << v) != 0))
                        .count()
                        >= threshold.max(1)
                })
                .fold(0u64, |acc, v| acc | (1 << v));
            if bits != 0 {
                out.insert(name.clone(), bits);
            }
        }
        Protocols(out)
    }

    /// Whether every version `required` lists is listed here too.
    pub fn covers(&self, required: &Protocols) -> bool {
        required
            .0
            .iter()
            .all(|(n, bits)| self.0.get(n).is_some_and(|have| have & bits == *bits))
    }
}

impl fmt::Display for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, bits) in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}=")?;
            let mut v = 0u32;
            let mut first_range = true;
            while v < 64 {
                if bits & (1 << v) == 0 {
                    v += 1;
                    continue;
                }
                let lo = v;
                while v < 63 && bits & (1 << (v + 1)) != 0 {
                    v += 1;
                }
                if !first_range {
                    f.write_str(",")?;
                }
                first_range = false;
                if lo == v {
                    write!(f, "{lo}")?;
                } else {
                    write!(f, "{lo}-{v}")?;
                }
                v += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_c_tor_lists_canonically() {
        let c = "Conflux=1 Cons=1-2 Desc=1-4 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=3-5 LinkAuth=3 Microdesc=1-3 Padding=2 Relay=2-6";
        let p = Protocols::parse(c).unwrap();
        assert_eq!(p.to_string(), c);
        assert!(p.supports("Relay", 4) && !p.supports("Relay", 7) && !p.supports("X", 1));
        let messy = Protocols::parse("Relay=4,2-3 Link=5,3-4").unwrap();
        assert_eq!(messy.to_string(), "Link=3-5 Relay=2-4");
        let req = Protocols::parse("Cons=2 Desc=2 Link=4 Relay=2").unwrap();
        assert!(p.covers(&req));
        assert!(!messy.covers(&req));
        assert_eq!(Protocols::parse("").unwrap().to_string(), "");
    }

    #[test]
    fn vote_keeps_versions_enough_lists_share() {
        let lists: Vec<Protocols> = ["Link=3-5 Relay=2", "Link=4-5 Relay=2-4", "Link=5 Cons=2"]
            .iter()
            .map(|l| Protocols::parse(l).unwrap())
            .collect();
        assert_eq!(Protocols::vote(&lists, 2).to_string(), "Link=4-5 Relay=2");
        assert_eq!(Protocols::vote(&lists, 3).to_string(), "Link=5");
        assert_eq!(
            Protocols::vote(&lists, 0).to_string(),
            "Cons=2 Link=3-5 Relay=2-4"
        );
        assert_eq!(Protocols::vote(&[], 1).to_string(), "");
    }

    #[test]
    fn refuses_bad_lists() {
        for bad in [
            "Link",
            "Link=64",
            "Link=3-2",
            "Link=1 Link=2",
            "Li nk=1",
            "=1",
            "Link=a",
            "Link=1  Relay=2",
            "Link=1,",
            "Link=-1",
        ] {
            assert!(Protocols::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn canonical_form_round_trips(m in proptest::collection::btree_map("[A-Za-z]{1,8}", 1u64.., 0..6)) {
            let p = Protocols(m);
            prop_assert_eq!(Protocols::parse(&p.to_string()).unwrap(), p);
        }

        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = Protocols::parse(&s);
        }
    }
}
