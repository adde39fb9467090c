//! The DirPort's URL space (dir-spec §4.2, §5, §6; answers shaped as C tor's
//! `dircache.c` gives them, so C clients and relays treat us like a C authority).
//!
//! Every handler reads the [`Authority`] under its lock and returns a [`Response`]; no
//! handler blocks or does I/O. Unknown resources get 404, malformed ones 400.

use std::collections::BTreeSet;

use proto::RsaIdentity;
use proto::netdoc::consensus::Flavor;

use crate::authority::{Authority, Upload};
use crate::http::{Method, Request, Response, parse_http_date};

/// Most items one URL may ask for (C clients ask for at most 500 microdescriptors).
pub const MAX_ITEMS: usize = 1000;

fn not_found() -> Response {
    Response::short(404, "Not found")
}

fn bad_request() -> Response {
    Response::short(400, "Bad request")
}

fn hex_ids(list: &str, len: usize) -> Option<Vec<Vec<u8>>> {
    let items: Vec<&str> = list.split('+').filter(|s| !s.is_empty()).collect();
    if items.len() > MAX_ITEMS {
        return None;
    }
    let mut out = BTreeSet::new();
    for i in items {
        let b = hex::decode(i).ok().filter(|b| b.len() == len)?;
        out.insert(b);
    }
    Some(out.into_iter().collect())
}

/// The kind of request, for metrics (bounded label values).
pub fn kind(path: &str) -> &'static str {
    let p = path.trim_start_matches("/tor/");
    if p.starts_with("status-vote/current/consensus") {
        "consensus"
    } else if p.starts_with("status-vote/") {
        "vote"
    } else if p.starts_with("micro/") {
        "microdesc"
    } else if p.starts_with("server/") || p.starts_with("extra/") {
        "descriptor"
    } else if p.starts_with("keys/") {
        "keys"
    } else if p.is_empty() || p.starts_with("post/") {
        "post"
    } else {
        "other"
    }
}

/// Answers a GET. `dot_z` tells whether the path ended in `.z` (already stripped).
pub fn get(a: &Authority, req: &Request, path: &str, now: u64) -> Response {
    let Some(rest) = path.strip_prefix("/tor/") else {
        return not_found();
    };
    if let Some(tail) = rest.strip_prefix("status-vote/current/consensus") {
        return consensus(a, req, tail, now);
    }
    if let Some(tail) = rest.strip_prefix("status-vote/") {
        return votes(a, tail);
    }
    if let Some(tail) = rest.strip_prefix("micro/d/") {
        return microdescs(a, tail);
    }
    if let Some(tail) = rest.strip_prefix("server/") {
        return descriptors(a, tail);
    }
    if rest.starts_with("extra/") {
        // We keep no extra-info documents.
        return not_found();
    }
    if let Some(tail) = rest.strip_prefix("keys/") {
        return keys(a, req, tail);
    }
    if rest == "robots.txt" {
        return Response::ok(b"User-agent: *\r\nDisallow: /\r\n".to_vec());
    }
    not_found()
}

fn consensus(a: &Authority, req: &Request, tail: &str, now: u64) -> Response {
    let (flavor, selector) = match tail.strip_prefix("-microdesc") {
        Some(t) => (Flavor::Microdesc, t),
        None => (Flavor::Ns, tail),
    };
    let selector = match selector {
        "" => None,
        s => match s.strip_prefix('/') {
            Some(fps) if !fps.starts_with("diff/") => Some(fps),
            _ => return not_found(),
        },
    };
    let Some(p) = a.published.get(&flavor) else {
        return not_found();
    };
    if p.valid_after > now + 24 * 3600 {
        return Response::short(404, "Consensus is too new");
    }
    if p.valid_until + 24 * 3600 < now {
        return Response::short(404, "Consensus is too old");
    }
    if let Some(fps) = selector {
        let want: Vec<&str> = fps.split('+').collect();
        let signers: Vec<String> = p.signers.iter().map(RsaIdentity::to_hex).collect();
        let have = want
            .iter()
            .filter(|w| {
                signers
                    .iter()
                    .any(|s| s.len() >= w.len() && s[..w.len()].eq_ignore_ascii_case(w))
            })
            .count();
        if have < want.len() / 2 + 1 {
            return Response::short(
                404,
                "Consensus not signed by sufficient number of requested authorities",
            );
        }
    }
    if let Some(ims) = req.header("If-Modified-Since").and_then(parse_http_date)
        && p.valid_after < ims
    {
        return Response::short(304, "Not modified");
    }
    let mut r = Response::ok(p.text.clone().into_bytes()).with("Vary", "X-Or-Diff-From-Consensus");
    if p.fresh_until > now {
        r = r.with("Expires", crate::http::http_date(p.fresh_until));
    } else {
        r = r.with("Pragma", "no-cache");
    }
    r
}

fn votes(a: &Authority, tail: &str) -> Response {
    let round = &a.round;
    let ours = a.keys.cert.v3ident;
    let body: Option<String> = match tail {
        "next/consensus-signatures" => a.detached(),
        "current/consensus-signatures" => None,
        "next/consensus" => round
            .computed
            .as_ref()
            .and_then(|c| c.flavors.get(&Flavor::Ns))
            .map(|(b, _)| b.clone()),
        "next/authority" => round.votes.get(&ours.0).map(|(_, _, t)| t.clone()),
        "current/authority" => a
            .previous_votes
            .iter()
            .find(|(id, _, _)| *id == ours)
            .map(|(_, _, t)| t.clone()),
        t => {
            let (which, list) = match t.split_once('/') {
                Some(x) => x,
                None => return not_found(),
            };
            let (by_digest, list) = match list.strip_prefix("d/") {
                Some(l) => (true, l),
                None => (false, list),
            };
            let Some(ids) = hex_ids(list, 20) else {
                return not_found();
            };
            let mut out = String::new();
            for id in ids {
                let found = if by_digest {
                    round
                        .votes
                        .values()
                        .find(|(_, d, _)| d.as_slice() == id.as_slice())
                        .map(|(_, _, t)| t.clone())
                        .or_else(|| {
                            a.previous_votes
                                .iter()
                                .find(|(_, d, _)| d.as_slice() == id.as_slice())
                                .map(|(_, _, t)| t.clone())
                        })
                } else if which == "next" {
                    round
                        .votes
                        .iter()
                        .find(|(k, _)| k.as_slice() == id.as_slice())
                        .map(|(_, (_, _, t))| t.clone())
                } else if which == "current" {
                    a.previous_votes
                        .iter()
                        .find(|(k, _, _)| k.0.as_slice() == id.as_slice())
                        .map(|(_, _, t)| t.clone())
                } else {
                    None
                };
                if let Some(t) = found {
                    out.push_str(&t);
                }
            }
            (!out.is_empty()).then_some(out)
        }
    };
    match body {
        Some(b) => Response::ok(b.into_bytes()),
        None => not_found(),
    }
}

fn microdescs(a: &Authority, list: &str) -> Response {
    let items: Vec<&str> = list.split('-').filter(|s| !s.is_empty()).collect();
    if items.len() > MAX_ITEMS {
        return bad_request();
    }
    let digests: BTreeSet<[u8; 32]> = items
        .iter()
        .filter(|i| i.len() == 43)
        .filter_map(|i| proto::netdoc::b64_decode(i).and_then(|b| <[u8; 32]>::try_from(b).ok()))
        .collect();
    let body: String = digests.iter().filter_map(|d| a.microdesc(d)).collect();
    if body.is_empty() {
        return not_found();
    }
    Response::ok(body.into_bytes())
}

fn descriptors(a: &Authority, tail: &str) -> Response {
    let texts: Vec<&str> = if tail == "all" {
        a.relays.values().map(|r| r.desc.text.as_str()).collect()
    } else if tail == "authority" {
        a.relays
            .values()
            .filter(|r| {
                a.settings.authority_relays.contains(&r.desc.rsa_identity)
                    && r.desc.dir_port == a.settings.dir_addr.port()
            })
            .map(|r| r.desc.text.as_str())
            .collect()
    } else if let Some(list) = tail.strip_prefix("d/") {
        let Some(ids) = hex_ids(list, 20) else {
            return bad_request();
        };
        ids.iter()
            .filter_map(|d| <[u8; 20]>::try_from(d.as_slice()).ok())
            .filter_map(|d| a.descriptor_by_digest(&d))
            .collect()
    } else if let Some(list) = tail.strip_prefix("fp/") {
        let Some(ids) = hex_ids(list, 20) else {
            return bad_request();
        };
        ids.iter()
            .filter_map(|d| RsaIdentity::from_bytes(d))
            .filter_map(|id| a.relays.get(&id))
            .map(|r| r.desc.text.as_str())
            .collect()
    } else {
        return not_found();
    };
    if texts.is_empty() {
        return Response::short(404, "Servers unavailable");
    }
    Response::ok(texts.concat().into_bytes())
}

fn keys(a: &Authority, req: &Request, tail: &str) -> Response {
    let certs: Vec<&proto::netdoc::authcert::AuthCert> = if tail == "all" {
        a.certs.all().collect()
    } else if tail == "authority" {
        vec![&a.keys.cert]
    } else if let Some(list) = tail.strip_prefix("fp/") {
        let Some(ids) = hex_ids(list, 20) else {
            return bad_request();
        };
        ids.iter()
            .filter_map(|i| <[u8; 20]>::try_from(i.as_slice()).ok())
            .filter_map(|i| a.certs.get(&i))
            .collect()
    } else if let Some(list) = tail.strip_prefix("sk/") {
        let Some(ids) = hex_ids(list, 20) else {
            return bad_request();
        };
        a.certs
            .all()
            .filter(|c| {
                ids.iter()
                    .any(|i| i.as_slice() == c.signing_key_digest.0.as_slice())
            })
            .collect()
    } else if let Some(list) = tail.strip_prefix("fp-sk/") {
        let pairs: Vec<&str> = list.split('+').filter(|s| !s.is_empty()).collect();
        if pairs.len() > MAX_ITEMS {
            return bad_request();
        }
        let mut out = Vec::new();
        for p in pairs {
            let Some((id, sk)) = p.split_once('-') else {
                return bad_request();
            };
            if let Some(c) = a.certs.all().find(|c| {
                c.v3ident.to_hex().eq_ignore_ascii_case(id)
                    && c.signing_key_digest.to_hex().eq_ignore_ascii_case(sk)
            }) {
                out.push(c);
            }
        }
        out
    } else {
        return bad_request();
    };
    if certs.is_empty() {
        return not_found();
    }
    let ims = req.header("If-Modified-Since").and_then(parse_http_date);
    let fresh: Vec<&str> = certs
        .iter()
        .filter(|c| ims.is_none_or(|t| c.published >= t))
        .map(|c| c.text.as_str())
        .collect();
    if fresh.is_empty() {
        return Response::short(304, "Not modified");
    }
    Response::ok(fresh.concat().into_bytes())
}

/// Answers a POST.
pub fn post(a: &mut Authority, path: &str, body: &[u8], now: u64) -> Response {
    match path {
        "/tor/" | "/tor" => match a.upload(body, now) {
            Upload::Accepted => {
                metrics::counter!("dirauth_descriptor_uploads_total", "result" => "accepted")
                    .increment(1);
                Response::short(200, "(no message)")
            }
            Upload::NotNew(_) => {
                metrics::counter!("dirauth_descriptor_uploads_total", "result" => "not_new")
                    .increment(1);
                Response::short(200, "OK").with("X-Descriptor-Not-New", "Yes")
            }
            Upload::Rejected(why) => {
                metrics::counter!("dirauth_descriptor_uploads_total", "result" => "rejected")
                    .increment(1);
                tracing::info!("rejected a descriptor upload: {why}");
                Response::short(400, one_line(&why))
            }
        },
        "/tor/post/vote" => {
            let Ok(text) = std::str::from_utf8(body) else {
                return Response::short(400, "Unable to parse vote");
            };
            match a.add_vote(text, now, true) {
                Ok(_) => {
                    metrics::counter!("dirauth_votes_received_total", "result" => "stored")
                        .increment(1);
                    Response::short(200, "Vote stored")
                }
                Err(why) => {
                    metrics::counter!("dirauth_votes_received_total", "result" => "rejected")
                        .increment(1);
                    tracing::warn!("rejected a vote: {why}");
                    Response::short(400, one_line(&why))
                }
            }
        }
        "/tor/post/consensus-signature" => {
            let Ok(text) = std::str::from_utf8(body) else {
                return Response::short(400, "Couldn't parse detached signatures.");
            };
            match a.add_signatures(text) {
                Ok(msg) => Response::short(200, msg),
                Err(why) => {
                    tracing::warn!("rejected signatures: {why}");
                    Response::short(400, one_line(&why))
                }
            }
        }
        _ => not_found(),
    }
}

/// A reason phrase: one line, bounded.
fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Dispatches a request.
pub fn handle(a: &mut Authority, req: &Request, now: u64) -> (Response, bool) {
    let (path, dot_z) = match req.path.strip_suffix(".z") {
        Some(p) => (p, true),
        None => (req.path.as_str(), false),
    };
    // A URL not under /tor/ is taken as relative to it, as C tor does.
    let owned;
    let path = if path.starts_with("/tor/") || path == "/tor" {
        path
    } else {
        owned = format!("/tor{path}");
        owned.as_str()
    };
    let resp = match req.method {
        Method::Get => get(a, req, path, now),
        Method::Post => post(a, path, &req.body, now),
    };
    let deflate = resp.body.is_some() && crate::http::wants_deflate(req, dot_z);
    (resp, deflate)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::authority::tests_support::{T0, network, relay_descriptor, run_round};

    fn req(path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: Method::Get,
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Vec::new(),
        }
    }

    fn get_status(
        a: &mut Authority,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Option<Vec<u8>>, bool) {
        let (r, deflate) = handle(a, &req(path, headers), T0 + 40);
        (r.status, r.body, deflate)
    }

    #[test]
    fn consensus_urls_selectors_and_if_modified_since() {
        let mut auths = network(3);
        let desc = relay_descriptor(11);
        for a in &mut auths {
            a.upload(desc.as_bytes(), T0);
        }
        let va = run_round(&mut auths, T0);
        let a = &mut auths[0];
        let (s, body, deflate) = get_status(a, "/tor/status-vote/current/consensus-microdesc", &[]);
        assert_eq!(s, 200);
        assert!(!deflate);
        assert!(
            String::from_utf8(body.unwrap())
                .unwrap()
                .starts_with("network-status-version 3 microdesc\n")
        );
        // .z and Accept-Encoding choose deflate.
        assert!(get_status(a, "/tor/status-vote/current/consensus.z", &[]).2);
        assert!(
            get_status(
                a,
                "/tor/status-vote/current/consensus",
                &[("Accept-Encoding", "x-zstd, deflate")]
            )
            .2
        );
        // The authority selector: prefixes of the signers' identities, a majority needed.
        let ids: Vec<String> = a.published[&Flavor::Ns]
            .signers
            .iter()
            .map(|s| s.to_hex()[..6].to_owned())
            .collect();
        let good = format!("/tor/status-vote/current/consensus/{}+{}", ids[0], ids[1]);
        assert_eq!(get_status(a, &good, &[]).0, 200);
        let bad = format!(
            "/tor/status-vote/current/consensus/{}+AAAAAA+BBBBBB",
            ids[0]
        );
        assert_eq!(get_status(a, &bad, &[]).0, 404);
        // If-Modified-Since after valid-after: 304; before: the document.
        let later = crate::http::http_date(va + 1);
        assert_eq!(
            get_status(
                a,
                "/tor/status-vote/current/consensus",
                &[("If-Modified-Since", &later)]
            )
            .0,
            304
        );
        let earlier = crate::http::http_date(va - 1);
        assert_eq!(
            get_status(
                a,
                "/tor/status-vote/current/consensus",
                &[("If-Modified-Since", &earlier)]
            )
            .0,
            200
        );
        assert_eq!(
            get_status(a, "/tor/status-vote/current/consensus/diff/ab/cd", &[]).0,
            404
        );
    }

    #[test]
    fn descriptors_microdescs_keys_and_votes() {
        let mut auths = network(3);
        let desc = relay_descriptor(12);
        for a in &mut auths {
            a.upload(desc.as_bytes(), T0);
        }
        run_round(&mut auths, T0);
        let a = &mut auths[1];
        let r = a.relays.values().next().unwrap().clone();
        let d = hex::encode_upper(r.desc.digest);
        let fp = r.desc.rsa_identity.to_hex();
        for path in [
            format!("/tor/server/d/{d}"),
            format!("/tor/server/fp/{fp}"),
            "/tor/server/all".to_owned(),
        ] {
            let (s, b, _) = get_status(a, &path, &[]);
            assert_eq!((s, b.as_deref()), (200, Some(desc.as_bytes())), "{path}");
        }
        assert_eq!(
            get_status(a, &format!("/tor/server/d/{}", "00".repeat(20)), &[]).0,
            404
        );
        assert_eq!(get_status(a, "/tor/server/d/nothex", &[]).0, 400);
        let md = r.md.digest_b64();
        let (s, b, _) = get_status(a, &format!("/tor/micro/d/{md}-{}", "A".repeat(43)), &[]);
        assert_eq!((s, b.unwrap()), (200, r.md.text.clone().into_bytes()));
        assert_eq!(get_status(a, "/tor/micro/d/short", &[]).0, 404);
        // Keys: all, ours, by identity, by (identity, signing key).
        let (s, b, _) = get_status(a, "/tor/keys/all", &[]);
        assert_eq!(s, 200);
        assert_eq!(
            proto::netdoc::authcert::AuthCert::parse_many(&String::from_utf8(b.unwrap()).unwrap())
                .unwrap()
                .len(),
            3
        );
        let c = a.keys.cert.clone();
        let fp_sk = format!(
            "/tor/keys/fp-sk/{}-{}",
            c.v3ident.to_hex(),
            c.signing_key_digest.to_hex()
        );
        assert_eq!(
            get_status(a, &fp_sk, &[]).1.unwrap(),
            c.text.clone().into_bytes()
        );
        assert_eq!(
            get_status(a, &format!("/tor/keys/fp/{}", c.v3ident.to_hex()), &[]).0,
            200
        );
        assert_eq!(get_status(a, "/tor/keys/bogus", &[]).0, 400);
        // Votes of the last round, by authority and by digest.
        let (s, b, _) = get_status(a, "/tor/status-vote/current/authority", &[]);
        assert_eq!(s, 200);
        let text = String::from_utf8(b.unwrap()).unwrap();
        let digest = hex::encode_upper(proto::netdoc::consensus::Vote::digest_of(&text).unwrap());
        assert_eq!(
            get_status(a, &format!("/tor/status-vote/current/d/{digest}"), &[])
                .1
                .unwrap(),
            text.into_bytes()
        );
        assert_eq!(
            get_status(a, "/tor/status-vote/next/consensus-signatures", &[]).0,
            404
        );
        assert_eq!(get_status(a, "/tor/nothing-here", &[]).0, 404);
        assert_eq!(get_status(a, "/robots.txt", &[]).0, 200);
    }

    #[test]
    fn posts_answer_as_c_tor_does() {
        let mut a = network(1).pop().unwrap();
        let desc = relay_descriptor(13);
        let r = post(&mut a, "/tor/", desc.as_bytes(), T0);
        assert_eq!(r.status, 200);
        let again = post(&mut a, "/tor/", desc.as_bytes(), T0);
        assert_eq!(again.status, 200);
        assert!(
            again
                .headers
                .iter()
                .any(|(k, v)| *k == "X-Descriptor-Not-New" && v == "Yes")
        );
        assert_eq!(post(&mut a, "/tor/", b"router junk\n", T0).status, 400);
        assert_eq!(post(&mut a, "/tor/post/vote", b"junk", T0).status, 400);
        assert_eq!(
            post(&mut a, "/tor/post/consensus-signature", b"junk\n", T0).status,
            400
        );
        assert_eq!(post(&mut a, "/tor/post/elsewhere", b"", T0).status, 404);
    }
}
