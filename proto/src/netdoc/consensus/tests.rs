use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;

use super::*;
use crate::netdoc::authcert;

const VA: u64 = 1_796_114_400;

struct Auth {
    cert: AuthCert,
    signing: RsaKeypair,
    nickname: String,
}

fn authority(seed: u64) -> Auth {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let id = RsaKeypair::generate(&mut rng, 1024).unwrap();
    let signing = RsaKeypair::generate(&mut rng, 1024).unwrap();
    let text = authcert::build(&id, &signing, None, VA - 86400, VA + 86400 * 30).unwrap();
    Auth {
        cert: AuthCert::parse(&text).unwrap(),
        signing,
        nickname: format!("auth{seed}"),
    }
}

fn flags(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn entry(n: u8, fl: &[&str]) -> VoteEntry {
    VoteEntry {
        nickname: format!("relay{n}"),
        rsa_id: RsaIdentity([n; 20]),
        desc_digest: [n + 100; 20],
        published: VA - 600,
        address: Ipv4Addr::new(127, 0, 0, 1),
        or_port: 5000 + u16::from(n),
        dir_port: 0,
        flags: flags(fl),
        version: Some("Tor 0.4.9.11".into()),
        protocols: "Cons=1-2 Desc=1-2 Link=3-5 LinkAuth=3 Microdesc=1-2 Relay=2".into(),
        bandwidth_kb: 100 * u64::from(n),
        measured_kb: None,
        policy_summary: "reject 1-65535".into(),
        ed_id: Some(Ed25519Identity([n; 32])),
        md_digest: Some([n; 32]),
    }
}

fn vote(a: &Auth, entries: Vec<VoteEntry>) -> Vote {
    Vote {
        published: VA - 30,
        valid_after: VA,
        fresh_until: VA + 60,
        valid_until: VA + 180,
        vote_delay: 5,
        dist_delay: 5,
        consensus_methods: CONSENSUS_METHODS.to_vec(),
        client_versions: Some("0.4.9.11,0.4.8.1".into()),
        server_versions: Some("0.4.9.11".into()),
        known_flags: flags(&[
            "Authority",
            "Exit",
            "Fast",
            "Guard",
            "HSDir",
            "Running",
            "Stable",
            "StaleDesc",
            "V2Dir",
            "Valid",
        ]),
        params: BTreeMap::from([
            ("circwindow".to_owned(), 1000),
            ("bwweightscale".to_owned(), 10000),
        ]),
        protocols: ProtocolLines::default(),
        nickname: a.nickname.clone(),
        hostname: "127.0.0.1".into(),
        ip: Ipv4Addr::new(127, 0, 0, 1),
        dir_port: 7000,
        or_port: 7001,
        contact: format!("{}@test.invalid", a.nickname),
        cert: a.cert.clone(),
        entries,
    }
}

const RV: &[&str] = &["Fast", "Guard", "Running", "Stable", "V2Dir", "Valid"];

fn three_votes() -> (Vec<Auth>, Vec<(Vote, [u8; 20])>) {
    let auths: Vec<Auth> = (1..=3).map(authority).collect();
    let mut votes = Vec::new();
    for (i, a) in auths.iter().enumerate() {
        let mut entries = vec![
            entry(1, RV),
            entry(2, RV),
            entry(4, &["Fast", "Running", "Valid"]),
        ];
        // relay 3 is listed only by the first authority; relay 5 is Running for one only.
        if i == 0 {
            entries.push(entry(3, RV));
            entries.push(entry(5, RV));
        } else {
            entries.push(entry(5, &["Fast", "Valid"]));
        }
        // relay 2: Exit by two of three.
        if i < 2 {
            entries[1].flags.insert("Exit".into());
        }
        // relay 4 has no microdescriptor.
        entries[2].md_digest = None;
        let v = vote(a, entries);
        let text = v.to_signed_text(&a.signing).unwrap();
        votes.push(Vote::parse(&text).unwrap());
    }
    (auths, votes)
}

#[test]
fn votes_round_trip_and_are_checked() {
    let a = authority(1);
    let v = vote(&a, vec![entry(2, RV), entry(1, RV)]);
    let text = v.to_signed_text(&a.signing).unwrap();
    let (back, digest) = Vote::parse(&text).unwrap();
    assert_eq!(Vote::digest_of(&text), Some(digest));
    assert_eq!(back.entries.len(), 2);
    assert_eq!(
        back.entries[0].rsa_id,
        RsaIdentity([1; 20]),
        "entries sorted by identity"
    );
    assert_eq!(back.entries[1], entry(2, RV));
    assert_eq!(back.params, v.params);
    assert_eq!(back.protocols, v.protocols);
    assert_eq!(back.cert.v3ident, a.cert.v3ident);
    // Tampering breaks the signature; another key cannot sign for this certificate.
    let t = text.replace("w Bandwidth=100\n", "w Bandwidth=999999\n");
    assert_ne!(t, text);
    assert!(Vote::parse(&t).is_err());
    let other = authority(9);
    assert!(v.to_signed_text(&other.signing).is_err());
    // A flag outside known-flags is refused.
    let mut bad = vote(&a, vec![entry(1, RV)]);
    bad.entries[0].flags.insert("Bogus".into());
    assert!(Vote::parse(&bad.to_signed_text(&a.signing).unwrap()).is_err());
}

#[test]
fn c_tor_vote_parses() {
    let text = include_str!("../../../tests/data/ctor/vote.auth0");
    let (v, _) = Vote::parse(text).unwrap();
    assert_eq!(v.entries.len(), 5);
    assert_eq!(v.nickname, "auth0");
    assert!(v.known_flags.contains("Running"));
    assert!(
        v.entries
            .iter()
            .all(|e| e.md_digest.is_some() && e.ed_id.is_some())
    );
    // Its vote-digest as the C consensus lists it.
    let c = include_str!("../../../tests/data/ctor/consensus.md");
    let d = Vote::digest_of(text).unwrap();
    assert!(c.contains(&format!("vote-digest {}", hex::encode_upper(d))));
}

#[test]
fn consensus_follows_the_majority_rules() {
    let (_, votes) = three_votes();
    let c = Consensus::compute(&votes, 3).unwrap();
    assert_eq!(c.method, 35);
    let ids: Vec<u8> = c.routers.iter().map(|r| r.rsa_id.0[0]).collect();
    // 3: listed by one authority of three; 5: Running for only one of three.
    assert_eq!(ids, [1, 2, 4]);
    let r2 = &c.routers[1];
    assert!(r2.flags.contains("Exit"));
    assert!(!c.routers[2].flags.contains("Guard"));
    assert!(r2.unmeasured && r2.bandwidth_kb == 200);
    assert!(c.known_flags.contains("NoEdConsensus"));
    assert_eq!(c.params.get("circwindow"), Some(&1000));
    assert_eq!(c.sources.len(), 3);
    assert!(
        c.sources
            .windows(2)
            .all(|w| w[0].v3ident.0 < w[1].v3ident.0)
    );
    // Two of three votes are enough; one is not.
    assert!(Consensus::compute(&votes[..2], 3).is_ok());
    assert!(Consensus::compute(&votes[..1], 3).is_err());
    // Order of the votes does not matter.
    let mut rev = votes.clone();
    rev.reverse();
    assert_eq!(Consensus::compute(&rev, 3).unwrap(), c);
}

#[test]
fn flavors_render_as_c_tor_lays_them_out() {
    let (_, votes) = three_votes();
    let c = Consensus::compute(&votes, 3).unwrap();
    let ns = c.body(Flavor::Ns);
    let md = c.body(Flavor::Microdesc);
    assert!(
        ns.starts_with("network-status-version 3\nvote-status consensus\nconsensus-method 35\n")
    );
    assert!(md.starts_with("network-status-version 3 microdesc\n"));
    assert!(ns.contains("\nknown-flags Authority Exit Fast Guard HSDir NoEdConsensus Running Stable StaleDesc V2Dir Valid\n"));
    assert!(ns.contains("\nparams bwweightscale=10000 circwindow=1000\n"));
    assert!(
        ns.contains("\nclient-versions 0.4.8.1,0.4.9.11\nserver-versions 0.4.9.11\nknown-flags ")
    );
    assert!(md.contains("\nclient-versions 0.4.8.1,0.4.9.11\n"));
    assert_eq!(ns.matches("\nr ").count(), 3);
    // relay 4 has no md: left out of the md flavor.
    assert_eq!(md.matches("\nr ").count(), 2);
    assert!(md.contains(" 2038-01-01 00:00:00 127.0.0.1 5001 0\nm "));
    assert!(!md.contains("\np "));
    assert!(ns.contains("\np reject 1-65535\n"));
    assert!(ns.contains("\nw Bandwidth=100 Unmeasured=1\n"));
    assert!(ns.ends_with("directory-footer\n") || ns.contains("\nbandwidth-weights "));
    for doc in [&ns, &md] {
        assert!(crate::netdoc::tokenize::tokenize(doc).is_ok());
        assert!(!doc.contains('\r') && doc.lines().all(|l| l.trim_end() == l));
    }
}

#[test]
fn signatures_combine_and_detach() {
    let (auths, votes) = three_votes();
    let c = Consensus::compute(&votes, 3).unwrap();
    let mut sigs = Vec::new();
    for a in &auths {
        for f in [Flavor::Ns, Flavor::Microdesc] {
            sigs.push(DocSignature::sign(f, &c.signed_digest(f), &a.cert, &a.signing).unwrap());
        }
    }
    for f in [Flavor::Ns, Flavor::Microdesc] {
        let mine: Vec<DocSignature> = sigs.iter().filter(|s| s.flavor == f).cloned().collect();
        let doc = assemble(&c.body(f), &mine);
        let parsed = SignedConsensus::parse(&doc).unwrap();
        assert_eq!(parsed.flavor, f);
        assert_eq!(parsed.valid_after, VA);
        assert_eq!(parsed.digest, c.signed_digest(f));
        assert_eq!(parsed.signatures.len(), 3);
        for s in &parsed.signatures {
            let cert = &auths
                .iter()
                .find(|a| a.cert.v3ident == s.v3ident)
                .unwrap()
                .cert;
            assert!(s.verifies(&parsed.digest, cert));
        }
    }
    let detached = DetachedSignatures {
        consensus_digest: c.signed_digest(Flavor::Ns).try_into().unwrap(),
        valid_after: c.valid_after,
        fresh_until: c.fresh_until,
        valid_until: c.valid_until,
        md_digest: Some(c.signed_digest(Flavor::Microdesc).try_into().unwrap()),
        signatures: sigs.clone(),
    };
    let back = DetachedSignatures::parse(&detached.to_text()).unwrap();
    assert_eq!(back.consensus_digest, detached.consensus_digest);
    assert_eq!(back.md_digest, detached.md_digest);
    assert_eq!(back.signatures.len(), 6);
    for s in &sigs {
        assert!(back.signatures.contains(s));
    }
}

/// C tor's documents: our digest of the signed part matches the signatures C made.
#[test]
fn c_tor_consensus_signatures_verify() {
    let certs = AuthCert::parse_many(include_str!("../../../tests/data/ctor/keys.all")).unwrap();
    for text in [
        include_str!("../../../tests/data/ctor/consensus.ns"),
        include_str!("../../../tests/data/ctor/consensus.md"),
    ] {
        let c = SignedConsensus::parse(text).unwrap();
        assert_eq!(c.signatures.len(), 3);
        for s in &c.signatures {
            let cert = certs.iter().find(|k| k.v3ident == s.v3ident).unwrap();
            assert!(s.verifies(&c.digest, cert), "{:?}", c.flavor);
        }
    }
    let d = DetachedSignatures::parse(include_str!("../../../tests/data/ctor/sigs.next")).unwrap();
    assert_eq!(d.signatures.len(), 6);
    assert!(d.md_digest.is_some());
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC{0,300}") {
        let _ = Vote::parse(&s);
        let _ = DetachedSignatures::parse(&s);
        let _ = SignedConsensus::parse(&s);
    }
}
