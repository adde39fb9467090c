//! Issue #5: a private network whose only directory authorities are three of ours, with
//! C tor 0.4.9 relays and our relay cluster, used by an unmodified C tor client.
//!
//! One network, in order: it bootstraps and the client fetches a file (criterion 1);
//! stem parses and validates everything the authorities publish (3); hostile uploads get
//! 400-class answers while the authority keeps serving (4); one authority stops, the
//! other two go on publishing, and it rejoins with its data directory (2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tornet::ours::{ClusterSpec, relay_keygen, start_cluster};
use tornet::traffic::{body, fetch_via_socks, start_http_server};
use tornet::{Consensus, NetConfig, TorNet, wait_for};

/// The consensus a given authority serves, with its valid-after and signer count.
fn served(net: &TorNet, i: usize, flavor: &str) -> Option<(String, String, usize)> {
    let (status, b) = tornet::http::get(
        net.ours[i].dir_addr(),
        &format!("/tor/status-vote/current/{flavor}"),
        Duration::from_secs(5),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    let text = String::from_utf8(b).ok()?;
    let va = text
        .lines()
        .find_map(|l| l.strip_prefix("valid-after "))?
        .to_owned();
    let sigs = text.matches("\ndirectory-signature ").count();
    Some((text, va, sigs))
}

/// The v3 identities that signed a consensus, sorted (upper-case hex).
fn signers(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("directory-signature "))
        .filter_map(|rest| {
            let f: Vec<&str> = rest.split(' ').collect();
            // `[algorithm] identity signing-key-digest`
            let id = if f.len() == 3 { f[1] } else { *f.first()? };
            Some(id.to_ascii_uppercase())
        })
        .collect();
    ids.sort();
    ids
}

fn get_text(net: &TorNet, i: usize, path: &str) -> String {
    let (status, b) =
        tornet::http::get(net.ours[i].dir_addr(), path, Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200, "{path}");
    String::from_utf8(b).unwrap()
}

/// Warnings a C tor client prints about its own configuration in every test network.
const EXPECTED_WARNINGS: &[&str] = &[
    "ControlPort is open, but no authentication",
    "used DirAuthority or AlternateDirAuthority",
    "TestingTorNetwork is set",
    "disabled SafeLogging",
    "running Tor as root",
    "Fixing permissions on directory",
    // Our SOCKS client sends an IP address, not a name.
    "is giving Tor only an IP address",
];

#[test]
fn our_authorities_run_a_network_c_tor_uses() {
    let http = start_http_server().unwrap();
    let started = Instant::now();
    let mut net = TorNet::start(&NetConfig {
        our_authorities: 3,
        relays: 2,
        exits: 1,
        reachability_testing: true,
        voting_interval_secs: 10,
        ..NetConfig::default()
    })
    .unwrap();
    let keys = net.scratch_dir("ours-keys").unwrap();
    let fp = relay_keygen(&keys).unwrap();
    let mut spec = ClusterSpec::new("ours", &keys, net.authority_dir_addrs());
    spec.exit_policy = vec!["accept *:*".into()];
    spec.dir_backend = Some(net.ours[0].dir_addr());
    spec.extra_env = vec![("EDGE__DIRECTORY__REPUBLISH_SECS".into(), "60".into())];
    let root = net.scratch_dir("clusters").unwrap();
    let cluster = start_cluster(&root, &spec).unwrap();

    // 1. A consensus of our authorities listing every relay, all Running.
    let mut fps: Vec<String> = net.relays.iter().map(|r| r.fingerprint.clone()).collect();
    fps.extend(net.ours.iter().map(|a| a.fingerprint.clone()));
    fps.push(fp.clone());
    let all_running = |c: &Consensus| {
        fps.iter().all(|f| {
            c.router(f)
                .is_some_and(|r| r.has("Running") && r.has("Valid"))
        })
    };
    let consensus = net.wait_for_consensus(Duration::from_secs(180), all_running);
    if consensus.is_err() {
        eprintln!("{}\n{}", net.log_tails(40), cluster.logs(30));
    }
    let consensus = consensus.unwrap();
    eprintln!(
        "consensus with all {} relays Running after {:?}",
        consensus.routers.len(),
        started.elapsed()
    );
    for a in &net.ours {
        assert!(consensus.router(&a.fingerprint).unwrap().has("Authority"));
    }
    // A majority listed it; auth0 itself may take a moment longer to have it.
    let first_desc = wait_for(
        "auth0 to serve our descriptor",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let (status, b) = tornet::http::get(
                net.ours[0].dir_addr(),
                &format!("/tor/server/fp/{fp}"),
                Duration::from_secs(10),
            )
            .ok()?;
            (status == 200).then(|| String::from_utf8(b).ok()).flatten()
        },
    )
    .unwrap();
    assert!(first_desc.starts_with("router ours "));

    // A C client bootstraps from our authorities alone and fetches through the network.
    let client = net.add_client(&[]).unwrap();
    let boot = wait_for(
        "the client to bootstrap to 100%",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let mut c = net.clients[client].control().ok()?;
            let phase = c.getinfo("status/bootstrap-phase").ok()?;
            phase.contains("PROGRESS=100").then_some(())
        },
    );
    if boot.is_err() {
        eprintln!("{}", net.log_tails(40));
    }
    boot.unwrap();
    let socks = net.socks_addr(client).unwrap();
    let got = wait_for(
        "a fetch through the network",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || fetch_via_socks(socks, http, 300_000, Duration::from_secs(30)).ok(),
    )
    .unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(body(300_000)));
    let log = std::fs::read_to_string(net.clients[client].data_dir.join("notice.log")).unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[warn]"))
        .filter(|l| !EXPECTED_WARNINGS.iter().any(|w| l.contains(w)))
        .collect();
    assert!(
        warnings.is_empty(),
        "client warnings:\n{}",
        warnings.join("\n")
    );

    // The C relays see themselves listed (their own ControlPort).
    for r in &net.relays {
        let mut c = r.control().unwrap();
        let ns = wait_for(
            &format!("{} to see itself in the consensus", r.nickname),
            Duration::from_secs(60),
            Duration::from_secs(1),
            || {
                c.getinfo(&format!("ns/id/{}", r.fingerprint))
                    .ok()
                    .filter(|s| s.contains("\ns "))
            },
        )
        .unwrap();
        assert!(ns.contains("Running"), "{ns}");
    }

    // 3. stem parses and validates the consensus, votes, microdescriptors and certificates.
    let docs = net.scratch_dir("stem").unwrap();
    let md = get_text(&net, 0, "/tor/status-vote/current/consensus-microdesc");
    let digests: Vec<&str> = md.lines().filter_map(|l| l.strip_prefix("m ")).collect();
    // The md consensus written is the one the microdescriptor digests came from (a new
    // round could otherwise change them in between).
    std::fs::write(docs.join("consensus-microdesc"), &md).unwrap();
    for (name, path) in [
        ("consensus", "/tor/status-vote/current/consensus".to_owned()),
        ("vote", "/tor/status-vote/current/authority".to_owned()),
        ("microdescs", format!("/tor/micro/d/{}", digests.join("-"))),
        ("keys", "/tor/keys/all".to_owned()),
    ] {
        std::fs::write(docs.join(name), get_text(&net, 0, &path)).unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stem_check.py");
    let out = Command::new(tornet::stem_python())
        .arg(script)
        .arg(&docs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stem:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));

    // 4. Hostile uploads: 400-class answers, and the authority keeps serving.
    let dir = net.ours[0].dir_addr();
    let post = |b: &[u8]| {
        tornet::http::post(dir, "/tor/", b, Duration::from_secs(10))
            .unwrap()
            .0
    };
    let tampered = first_desc.replacen("bandwidth ", "bandwidth 9", 1);
    let oversized = format!("{first_desc}{}", "family x\n".repeat(3000));
    let cases: [(&str, &[u8]); 5] = [
        ("bad signature", tampered.as_bytes()),
        ("oversized", oversized.as_bytes()),
        ("malformed", b"router this is not a descriptor\n"),
        ("truncated", &first_desc.as_bytes()[..first_desc.len() / 2]),
        ("not UTF-8", b"router \xff\xfe\n"),
    ];
    for (what, b) in cases {
        let s = post(b);
        assert!((400..500).contains(&s), "{what}: {s}");
    }
    // A replayed older descriptor, once the relay has published a newer one.
    wait_for(
        "our relay to republish",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || {
            let (status, b) = tornet::http::get(
                dir,
                &format!("/tor/server/fp/{fp}"),
                Duration::from_secs(10),
            )
            .ok()?;
            (status == 200 && b != first_desc.as_bytes()).then_some(())
        },
    )
    .unwrap();
    let s = post(first_desc.as_bytes());
    assert!((400..500).contains(&s), "replayed descriptor: {s}");
    assert_eq!(
        tornet::http::get(dir, "/tor/keys/authority", Duration::from_secs(5))
            .unwrap()
            .0,
        200
    );

    // 2. One authority stops: the other two still publish, then it rejoins. The stopped
    // authority may already have signed the round in progress when it stopped, so the
    // assertion is on the first consensus whose signers are exactly the running two.
    let (_, before, _) = served(&net, 0, "consensus").unwrap();
    net.ours[2].stop_dirauth();
    let idents = |auths: &[tornet::ours::OurAuthority]| {
        let mut v: Vec<String> = auths
            .iter()
            .map(|a| a.v3ident.to_ascii_uppercase())
            .collect();
        v.sort();
        v
    };
    let running = idents(&net.ours[..2]);
    let mut last_signers = Vec::new();
    // Every consensus seen while one authority is down must still list the C relays Running.
    let mut dropped: Vec<String> = Vec::new();
    let two = wait_for(
        "a consensus signed by exactly the two running authorities",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || {
            let (text, va, _) = served(&net, 0, "consensus").filter(|(_, va, _)| *va > before)?;
            let parsed = Consensus::parse(&text)?;
            for r in &net.relays {
                if !parsed
                    .router(&r.fingerprint)
                    .is_some_and(|x| x.has("Running"))
                {
                    dropped.push(format!("{} at {va}", r.nickname));
                }
            }
            last_signers = signers(&text);
            (last_signers == running).then_some((text, va))
        },
    );
    assert!(dropped.is_empty(), "C relays not Running: {dropped:?}");
    two.as_ref()
        .unwrap_or_else(|e| panic!("{e}; last signers {last_signers:?}, running {running:?}"));
    let (_, two_va) = two.unwrap();
    net.ours[2].start_dirauth().unwrap();
    let all = idents(&net.ours);
    let rejoined = wait_for(
        "the restarted authority to rejoin",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || {
            served(&net, 2, "consensus-microdesc")
                .filter(|(text, va, _)| *va > two_va && signers(text) == all)
        },
    );
    if rejoined.is_err() {
        eprintln!("{}", net.ours[2].logs(60));
    }
    rejoined.unwrap();
    // The C relays stayed Running throughout.
    let last = net
        .wait_for_consensus(Duration::from_secs(30), |c| {
            c.routers.len() == consensus.routers.len()
        })
        .unwrap();
    for r in &net.relays {
        assert!(
            last.router(&r.fingerprint).unwrap().has("Running"),
            "{}",
            r.nickname
        );
    }
    drop(cluster);
}
