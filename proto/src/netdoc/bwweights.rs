//! Consensus bandwidth weights (dir-spec §3.8.3; C: `networkstatus_compute_bw_weights_v10`).
//!
//! Inputs are the consensus bandwidths (kB) of the listed relays split into four classes:
//! Guard-only (G), Exit-only (E), Guard+Exit (D) and neither (M); totals start at 1 (T at
//! 4) so no class is ever empty. The output is the `bandwidth-weights` line, or `None`
//! where the algorithm finds no balanced solution (C then omits the line).
//!
//! Invariant: all arithmetic is i64 with truncating division, exactly as C does it, so
//! every authority computes the same line.

/// Bandwidth totals per class, kB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Guard-only.
    pub g: i64,
    /// Neither guard nor exit.
    pub m: i64,
    /// Exit-only.
    pub e: i64,
    /// Guard and exit.
    pub d: i64,
    /// Everything.
    pub t: i64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            g: 1,
            m: 1,
            e: 1,
            d: 1,
            t: 4,
        }
    }
}

impl Totals {
    /// Adds one relay of `bw` kB.
    pub fn add(&mut self, bw: u64, guard: bool, exit: bool) {
        let bw = i64::try_from(bw).unwrap_or(i64::MAX / 8);
        self.t += bw;
        match (guard, exit) {
            (true, true) => self.d += bw,
            (false, true) => self.e += bw,
            (true, false) => self.g += bw,
            (false, false) => self.m += bw,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct W {
    gg: i64,
    gd: i64,
    mg: i64,
    me: i64,
    md: i64,
    ed: i64,
    ee: i64,
}

#[derive(Debug, PartialEq, Eq)]
enum Check {
    Ok,
    BalanceMid,
    Fail,
}

fn check(w: &W, t: &Totals, s: i64) -> Check {
    let margin = 10;
    if (w.ed + w.md + w.gd - s).abs() > margin
        || (w.mg + w.gg - s).abs() > margin
        || (w.me + w.ee - s).abs() > margin
    {
        return Check::Fail;
    }
    if [w.gg, w.gd, w.mg, w.me, w.md, w.ed, w.ee]
        .iter()
        .any(|&x| x < 0 || x > s)
    {
        return Check::Fail;
    }
    let guard_side = w.gg * t.g + w.gd * t.d;
    if (guard_side - (w.ee * t.e + w.ed * t.d)).abs() > (margin * t.t) / 3 {
        return Check::Fail;
    }
    if (guard_side - (t.m * s + w.md * t.d + w.me * t.e + w.mg * t.g)).abs() > (margin * t.t) / 3 {
        return Check::BalanceMid;
    }
    Check::Ok
}

/// The `bandwidth-weights` arguments (without the keyword) for `totals` and weight scale
/// `s` (consensus param `bwweightscale`, default 10000), or `None` when C would omit the
/// line.
pub fn compute(totals: &Totals, s: i64) -> Option<String> {
    let Totals { g, m, e, d, t } = *totals;
    if g <= 0 || m <= 0 || e <= 0 || d <= 0 || s < 1 {
        return None;
    }
    let mut w = W::default();
    if 3 * e >= t && 3 * g >= t {
        // Case 1: neither guards nor exits are scarce.
        w.gd = s / 3;
        w.ed = s / 3;
        w.md = s / 3;
        w.ee = s * (e + g + m) / (3 * e);
        w.me = s - w.ee;
        w.mg = s * (2 * g - e - m) / (3 * g);
        w.gg = s - w.mg;
        if check(&w, totals, s) != Check::Ok {
            return None;
        }
    } else if 3 * e < t && 3 * g < t {
        // Case 2: both scarce.
        let (r, big) = (e.min(g), e.max(g));
        if r + d < big {
            // 2a
            w.gg = s;
            w.ee = s;
            if e < g {
                w.ed = s;
            } else {
                w.gd = s;
            }
        } else {
            // 2b1
            w.ee = s * (e - g + m) / e;
            w.ed = s * (d - 2 * e + 4 * g - 2 * m) / (3 * d);
            w.me = s * (g - m) / e;
            w.mg = 0;
            w.gg = s;
            w.md = (s - w.ed) / 2;
            w.gd = w.md;
            let mut c = check(&w, totals, s);
            if c != Check::Ok {
                // 2b2, 2b3
                w.gg = s;
                w.ee = s;
                w.ed = s * (d - 2 * e + g + m) / (3 * d);
                w.md = s * (d - 2 * m + g + e) / (3 * d);
                w.me = 0;
                w.mg = 0;
                if w.md < 0 {
                    w.md = 0;
                }
                w.gd = s - w.ed - w.md;
                c = check(&w, totals, s);
            }
            if c == Check::Fail {
                return None;
            }
        }
    } else {
        // Case 3: exactly one class scarce.
        let small = e.min(g);
        if 3 * (small + d) < t {
            if g < e {
                w.gg = s;
                w.gd = s;
                w.me = if e < m { 0 } else { s * (e - m) / (2 * e) };
                w.ee = s - w.me;
            } else {
                w.ee = s;
                w.ed = s;
                w.mg = if g < m { 0 } else { s * (g - m) / (2 * g) };
                w.gg = s - w.mg;
            }
        } else {
            if g < e {
                w.gg = s;
                w.gd = s * (d - 2 * g + e + m) / (3 * d);
                w.ee = s * (e + m) / (2 * e);
                w.me = s - w.ee;
                w.md = (s - w.gd) / 2;
                w.ed = w.md;
            } else {
                w.ee = s;
                w.ed = s * (d - 2 * e + g + m) / (3 * d);
                w.gg = s * (g + m) / (2 * g);
                w.mg = s - w.gg;
                w.md = (s - w.ed) / 2;
                w.gd = w.md;
            }
            if check(&w, totals, s) != Check::Ok {
                return None;
            }
        }
    }
    Some(format!(
        "Wbd={} Wbe={} Wbg={} Wbm={s} Wdb={s} Web={s} Wed={} Wee={} Weg={} Wem={} Wgb={s} Wgd={} Wgg={} Wgm={} Wmb={s} Wmd={} Wme={} Wmg={} Wmm={s}",
        w.md, w.me, w.mg, w.ed, w.ee, w.ed, w.ee, w.gd, w.gg, w.gg, w.md, w.me, w.mg
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(relays: &[(u64, bool, bool)]) -> Totals {
        let mut t = Totals::default();
        for &(bw, g, e) in relays {
            t.add(bw, g, e);
        }
        t
    }

    /// The line C tor's authorities wrote for five Guard+Exit relays (tests/data/ctor).
    #[test]
    fn all_guard_exit_matches_c_tor() {
        let t = totals(&[
            (79, true, true),
            (1, true, true),
            (5, true, true),
            (84, true, true),
            (1, true, true),
        ]);
        assert_eq!(
            compute(&t, 10000).unwrap(),
            "Wbd=3333 Wbe=0 Wbg=0 Wbm=10000 Wdb=10000 Web=10000 Wed=3333 Wee=10000 Weg=3333 Wem=10000 Wgb=10000 Wgd=3333 Wgg=10000 Wgm=10000 Wmb=10000 Wmd=3333 Wme=0 Wmg=0 Wmm=10000"
        );
        let c = include_str!("../../tests/data/ctor/consensus.ns");
        assert!(c.contains(&compute(&t, 10000).unwrap()));
    }

    #[test]
    fn case_one_and_scarce_cases() {
        let t = totals(&[
            (1000, true, false),
            (1000, true, false),
            (1000, false, true),
            (1000, false, true),
            (1000, false, false),
        ]);
        assert_eq!(
            compute(&t, 10000).unwrap(),
            "Wbd=3333 Wbe=1666 Wbg=1665 Wbm=10000 Wdb=10000 Web=10000 Wed=3333 Wee=8334 Weg=3333 Wem=8334 Wgb=10000 Wgd=3333 Wgg=8335 Wgm=8335 Wmb=10000 Wmd=3333 Wme=1666 Wmg=1665 Wmm=10000"
        );
        // One guard, four middles: exits scarce (2a).
        let t = totals(&[
            (1000, true, false),
            (1000, false, false),
            (1000, false, false),
            (1000, false, false),
            (1000, false, false),
        ]);
        let line = compute(&t, 10000).unwrap();
        assert!(line.contains("Wed=10000") && line.contains("Wgg=10000") && line.contains("Wgd=0"));
        // Three Guard+Exit and two middles: no balanced solution, no line (as C).
        let t = totals(&[
            (1000, true, true),
            (1000, true, true),
            (1000, true, true),
            (1000, false, false),
            (1000, false, false),
        ]);
        assert_eq!(compute(&t, 10000), None);
    }
}
