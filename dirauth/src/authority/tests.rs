#![allow(clippy::unwrap_used)]
use std::net::Ipv4Addr;

use proto::keys::{EdgeKeys, RelayKeys, RsaKeypair};
use proto::netdoc::authcert;
use proto::netdoc::routerdesc::{self, DescriptorParams};
use rand::SeedableRng;

use super::*;

/// 2026-12-01 08:30:00, an interval boundary for 30-second intervals.
pub(crate) const T0: u64 = 1_796_113_800;

fn keys(seed: u64) -> AuthorityKeys {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let id = RsaKeypair::generate(&mut rng, 1024).unwrap();
    let signing = RsaKeypair::generate(&mut rng, 1024).unwrap();
    let text = authcert::build(&id, &signing, None, T0 - 3600, T0 + 86400 * 30).unwrap();
    AuthorityKeys {
        cert: AuthCert::parse(&text).unwrap(),
        signing,
    }
}

pub(crate) fn network(n: usize) -> Vec<Authority> {
    network_from(n, 100)
}

fn network_from(n: usize, seed: u64) -> Vec<Authority> {
    let ks: Vec<AuthorityKeys> = (0..n).map(|i| keys(seed + i as u64)).collect();
    let lines: Vec<AuthorityLine> = ks
        .iter()
        .enumerate()
        .map(|(i, k)| AuthorityLine {
            nickname: format!("auth{i}"),
            v3ident: k.cert.v3ident,
            dir_addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7000 + i as u16),
            or_port: 5000 + i as u16,
            relay_id: RsaIdentity([i as u8 + 1; 20]),
        })
        .collect();
    ks.into_iter()
        .enumerate()
        .map(|(i, k)| {
            let settings = Settings {
                nickname: format!("auth{i}"),
                contact: "x@test.invalid".into(),
                dir_addr: lines[i].dir_addr,
                or_port: lines[i].or_port,
                peers: lines
                    .iter()
                    .filter(|l| l.v3ident != k.cert.v3ident)
                    .cloned()
                    .collect(),
                n_authorities: n,
                authority_relays: lines.iter().map(|l| l.relay_id).collect(),
                interval: 30,
                vote_delay: 4,
                dist_delay: 4,
                intervals_valid: 3,
                reach: Reachability {
                    assume_reachable: true,
                    ..Reachability::default()
                },
                flags: Flags {
                    allow_private_addresses: true,
                    vote_guard: vec!["*".into()],
                    fast_min_bytes: 0,
                    ..Flags::default()
                },
                params: BTreeMap::from([("circwindow".to_owned(), 1000)]),
                client_versions: "0.4.9.11".into(),
                server_versions: "0.4.9.11".into(),
            };
            Authority::new(settings, k)
        })
        .collect()
}

pub(crate) fn relay(seed: u64, published: u64) -> (EdgeKeys, String) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let files = RelayKeys::generate(&mut r, published - 60, 30 * 86400)
        .unwrap()
        .to_files()
        .unwrap();
    let k = EdgeKeys::from_files(&files).unwrap();
    let text = descriptor(&k, published, "accept *:*");
    (k, text)
}

fn descriptor(k: &EdgeKeys, published: u64, policy: &str) -> String {
    let p = DescriptorParams {
        nickname: "ourrelay".into(),
        address: Ipv4Addr::LOCALHOST,
        or_port: 6000,
        ipv6: None,
        platform: "onion-relay 0.1.0 on Linux".into(),
        protocols: routerdesc::OUR_PROTOCOLS.into(),
        published,
        uptime: 100,
        bandwidth: (1_000_000, 2_000_000, 500_000),
        policy: vec![policy.into()],
        contact: None,
        include_tap: true,
        tunnelled_dir_server: true,
    };
    routerdesc::build(&p, k).unwrap().0
}

/// Runs one voting round among `auths` (all of them online) and publishes.
pub(crate) fn round(auths: &mut [Authority], now: u64) -> u64 {
    let va = auths[0].settings.next_valid_after(now);
    let [t_vote, _, t_compute, _] = auths[0].settings.schedule(va);
    let votes: Vec<String> = auths
        .iter_mut()
        .map(|a| a.vote(t_vote, va).unwrap())
        .collect();
    for (i, a) in auths.iter_mut().enumerate() {
        for (j, v) in votes.iter().enumerate() {
            if i != j {
                assert_eq!(a.add_vote(v, t_vote + 1, true), Ok("Vote stored"));
            }
        }
    }
    let sigs: Vec<String> = auths.iter_mut().map(|a| a.compute().unwrap()).collect();
    for (i, a) in auths.iter_mut().enumerate() {
        for (j, s) in sigs.iter().enumerate() {
            if i != j {
                assert_eq!(a.add_signatures(s), Ok("Signatures added"), "{i} from {j}");
            }
        }
        assert_eq!(a.needs_signatures(), sigs.len() < a.settings.n_authorities);
    }
    let _ = t_compute;
    for a in auths.iter_mut() {
        let p = a.publish();
        assert_eq!(p.len(), 2, "both flavors published");
    }
    va
}

#[test]
fn three_authorities_agree_and_publish_a_consensus_listing_the_relay() {
    let mut auths = network(3);
    let (_, desc) = relay(1, T0 - 100);
    for a in &mut auths {
        assert_eq!(a.upload(desc.as_bytes(), T0), Upload::Accepted);
    }
    let va = round(&mut auths, T0);
    let ns: Vec<&str> = auths
        .iter()
        .map(|a| a.published[&Flavor::Ns].text.as_str())
        .collect();
    assert!(
        ns.windows(2).all(|w| w[0] == w[1]),
        "identical consensus everywhere"
    );
    let sc = SignedConsensus::parse(ns[0]).unwrap();
    assert_eq!(sc.valid_after, va);
    assert_eq!(sc.signatures.len(), 3);
    assert!(
        ns[0].contains("\ns Exit Fast Guard Running Stable V2Dir Valid\n"),
        "{}",
        ns[0]
    );
    assert!(ns[0].contains("\nclient-versions 0.4.9.11\n"));
    let md = &auths[0].published[&Flavor::Microdesc].text;
    let m = md.lines().find_map(|l| l.strip_prefix("m ")).unwrap();
    let digest: [u8; 32] = proto::netdoc::b64_decode(m).unwrap().try_into().unwrap();
    assert!(
        auths[1]
            .microdesc(&digest)
            .unwrap()
            .starts_with("onion-key\n")
    );
}

#[test]
fn two_of_three_still_publish_and_one_does_not() {
    let mut auths = network(3);
    let (_, desc) = relay(2, T0 - 100);
    for a in &mut auths {
        a.upload(desc.as_bytes(), T0);
    }
    let mut two: Vec<Authority> = auths.drain(..2).collect();
    round(&mut two, T0);
    assert_eq!(two[0].published[&Flavor::Ns].signers.len(), 2);
    // Alone, an authority has too few votes to compute.
    let mut one = network(3);
    let va = one[0].settings.next_valid_after(T0);
    one[0].vote(va - 8, va).unwrap();
    assert!(one[0].compute().is_err());
    assert!(one[0].publish().is_empty());
}

#[test]
fn votes_outside_the_rules_are_refused() {
    let mut auths = network(2);
    let stranger = network_from(1, 900).pop().unwrap();
    let va = auths[0].settings.next_valid_after(T0);
    let v1 = auths[1].vote(va - 8, va).unwrap();
    // Too late once the fetch step has passed; a fetched vote still counts.
    assert!(
        auths[0]
            .add_vote(&v1, va - 5, true)
            .unwrap_err()
            .contains("too late")
    );
    assert_eq!(auths[0].add_vote(&v1, va - 5, false), Ok("Vote stored"));
    assert_eq!(
        auths[0].add_vote(&v1, va - 5, false),
        Ok("Duplicate discarded")
    );
    // Unknown authority, wrong round, garbage.
    let mut s = stranger;
    let vs = s.vote(va - 8, va).unwrap();
    assert!(
        auths[0]
            .add_vote(&vs, va - 7, true)
            .unwrap_err()
            .contains("recognized")
    );
    let mut other = network(2);
    let later = other[1].vote(va + 22, va + 30).unwrap();
    assert!(auths[0].add_vote(&later, va - 7, true).is_err());
    assert!(
        auths[0]
            .add_vote("network-status-version 3\n", va - 7, true)
            .is_err()
    );
    // Signatures over another consensus (one that lists a relay ours does not) are refused.
    auths[0].vote(va - 8, va).unwrap();
    auths[0].compute().unwrap();
    let (_, desc) = relay(8, T0 - 100);
    other[0].upload(desc.as_bytes(), T0);
    other[0].vote(va - 8, va).unwrap();
    other[0].add_vote(&v1, va - 7, false).unwrap();
    let theirs = other[0].compute().unwrap();
    assert_eq!(
        auths[0].add_signatures(&theirs),
        Err("Mismatched digest.".into())
    );
    assert!(auths[0].add_signatures("garbage\n").is_err());
}

#[test]
fn hostile_uploads_are_refused_and_leave_no_trace() {
    let mut a = network(1).pop().unwrap();
    let (k, desc) = relay(3, T0 - 100);
    // Tampered, truncated, oversized, garbage, not UTF-8.
    let tampered = desc.replace("bandwidth 1000000", "bandwidth 9000000");
    assert!(matches!(
        a.upload(tampered.as_bytes(), T0),
        Upload::Rejected(_)
    ));
    assert!(matches!(
        a.upload(&desc.as_bytes()[..desc.len() / 2], T0),
        Upload::Rejected(_)
    ));
    let big = format!("{desc}{}", "contact x\n".repeat(3000));
    assert!(matches!(a.upload(big.as_bytes(), T0), Upload::Rejected(_)));
    assert!(matches!(
        a.upload(b"router \xff\xfe\n", T0),
        Upload::Rejected(_)
    ));
    assert!(matches!(a.upload(b"hello\n", T0), Upload::NotNew(_)));
    // Too old, too new.
    assert!(matches!(
        a.upload(desc.as_bytes(), T0 + 2 * 86400),
        Upload::Rejected(_)
    ));
    assert!(matches!(
        a.upload(descriptor(&k, T0 + 86400, "reject *:*").as_bytes(), T0),
        Upload::Rejected(_)
    ));
    assert!(a.relays.is_empty());
    // Accepted once; the same again is not new; an older one (a replay) is refused.
    assert_eq!(a.upload(desc.as_bytes(), T0), Upload::Accepted);
    assert!(matches!(a.upload(desc.as_bytes(), T0), Upload::NotNew(_)));
    let older = descriptor(&k, T0 - 200, "reject *:*");
    assert!(matches!(
        a.upload(older.as_bytes(), T0),
        Upload::Rejected(_)
    ));
    assert_eq!(a.relays.values().next().unwrap().desc.text, desc);
    // A newer one replaces it, keeping the old one servable.
    let newer = descriptor(&k, T0 - 10, "reject *:*");
    assert_eq!(a.upload(newer.as_bytes(), T0), Upload::Accepted);
    let r = a.relays.values().next().unwrap();
    assert_eq!(r.summary, "reject 1-65535");
    assert!(
        a.descriptor_by_digest(&r.previous.as_ref().unwrap().0.digest)
            .is_some()
    );
    // Private addresses only where allowed.
    a.settings.flags.allow_private_addresses = false;
    let (_, other) = relay(4, T0 - 100);
    assert!(
        a.upload(other.as_bytes(), T0)
            == Upload::Rejected("Rejected: Address is a private address.".into())
    );
}

#[test]
fn running_follows_reachability_tests() {
    let mut a = network(1).pop().unwrap();
    a.settings.reach.assume_reachable = false;
    let (_, desc) = relay(5, T0 - 100);
    a.upload(desc.as_bytes(), T0);
    let due = a.due_tests(T0);
    assert_eq!(due.len(), 1);
    let id = due[0].rsa_id;
    assert!(due[0].ed_id.is_some());
    a.test_started(&id, T0);
    assert!(a.due_tests(T0 + 1).is_empty());
    let flags = |a: &Authority, now| a.vote_entries(now)[0].flags.clone();
    assert!(!flags(&a, T0).contains("Running"));
    a.test_done(&id, true, T0 + 1);
    assert!(flags(&a, T0 + 2).contains("Running"));
    assert!(!flags(&a, T0 + 1 + a.settings.reach.running_window_secs + 1).contains("Running"));
}

#[test]
fn state_survives_a_restart() {
    let mut auths = network(3);
    let (_, desc) = relay(6, T0 - 100);
    for a in &mut auths {
        a.upload(desc.as_bytes(), T0);
    }
    round(&mut auths, T0);
    let saved: BTreeMap<&str, String> = auths[2].snapshot().into_iter().collect();
    let mut fresh = network(3).pop().unwrap();
    fresh.restore(|n| saved.get(n).cloned(), T0 + 40);
    assert_eq!(fresh.relays.len(), 1);
    assert_eq!(
        fresh.published[&Flavor::Ns].text,
        auths[2].published[&Flavor::Ns].text
    );
    assert_eq!(fresh.certs.len(), 3);
    assert_eq!(fresh.previous_votes.len(), 3);
    // It takes part in the next round again.
    let mut all = vec![auths.remove(0), auths.remove(0), fresh];
    round(&mut all, T0 + 40);
}

#[test]
fn a_lagging_authority_adopts_the_majority_consensus() {
    let mut auths = network(3);
    let (_, desc) = relay(7, T0 - 100);
    for a in &mut auths {
        a.upload(desc.as_bytes(), T0);
    }
    let mut two: Vec<Authority> = auths.drain(..2).collect();
    round(&mut two, T0);
    let mut late = auths.pop().unwrap();
    // It knows the others' certificates (as from earlier votes).
    for a in &two {
        late.certs.insert(a.keys.cert.clone());
    }
    let ns = two[0].published[&Flavor::Ns].text.clone();
    assert_eq!(late.adopt(&ns, T0 + 10), Ok(Flavor::Ns));
    assert!(late.adopt(&ns, T0 + 10).is_err(), "not newer");
    let tampered = ns.replace("Fast", "Fazt");
    let mut other = network(3).pop().unwrap();
    for a in &two {
        other.certs.insert(a.keys.cert.clone());
    }
    assert!(other.adopt(&tampered, T0 + 10).is_err());
}

#[test]
fn exit_flag_rules() {
    let rules = |ls: &[&str]| -> Vec<PolicyRule> {
        ls.iter().map(|l| PolicyRule::parse(l).unwrap()).collect()
    };
    assert!(allows_port_generally(&rules(&["accept *:*"]), 80, false));
    assert!(!allows_port_generally(&rules(&["reject *:*"]), 80, false));
    assert!(!allows_port_generally(
        &rules(&["accept 127.0.0.0/8:*", "reject *:*"]),
        80,
        false
    ));
    assert!(allows_port_generally(
        &rules(&["accept 127.0.0.0/8:*", "reject *:*"]),
        80,
        true
    ));
    assert!(!allows_port_generally(
        &rules(&["accept 1.2.3.0/24:*", "reject *:*"]),
        80,
        false
    ));
    assert!(!allows_port_generally(
        &rules(&["reject *:80", "accept *:*"]),
        80,
        false
    ));
}

#[test]
fn certificates_replaced_by_a_renewal_stay_findable() {
    let k1 = keys(300);
    let mut store = CertStore::default();
    store.insert(k1.cert.clone());
    // The same identity with a newer signing key (renewed: later expiry).
    let mut rng = rand::rngs::StdRng::seed_from_u64(301);
    let id = RsaKeypair::generate(&mut rng, 1024).unwrap();
    let sk_a = RsaKeypair::generate(&mut rng, 1024).unwrap();
    let sk_b = RsaKeypair::generate(&mut rng, 1024).unwrap();
    let old = AuthCert::parse(&authcert::build(&id, &sk_a, None, T0 - 3600, T0 + 86400).unwrap())
        .unwrap();
    let new =
        AuthCert::parse(&authcert::build(&id, &sk_b, None, T0, T0 + 2 * 86400).unwrap()).unwrap();
    store.insert(old.clone());
    store.insert(new.clone());
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.get(&new.v3ident.0).unwrap().signing_key_digest,
        new.signing_key_digest
    );
    assert!(store.find(&old.v3ident, &old.signing_key_digest).is_some());
    // Arriving late, the older one does not displace the newer one.
    store.insert(old.clone());
    assert_eq!(
        store.get(&old.v3ident.0).unwrap().signing_key_digest,
        new.signing_key_digest
    );
    assert_eq!(store.all().count(), 3);
    store.expire(T0 + 86400 + 1);
    assert!(store.find(&old.v3ident, &old.signing_key_digest).is_none());
}
