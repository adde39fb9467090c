//! Building and publishing this relay's server descriptor (dir-spec §2.1.1, §4.2;
//! INTEROP D.1, D.4): at start, then every `republish_secs`; an authority that did not
//! accept it is retried with the same descriptor every `retry_secs`.
//!
//! Invariant: one descriptor text is current at a time; the copy written to
//! `descriptor_path` (when set) is exactly the bytes uploaded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::keys::EdgeKeys;
use proto::netdoc::routerdesc::{self, DescriptorParams};

use crate::config::Config;
use crate::publish;

/// Our `platform` line: not "Tor …", which authorities would parse as a C tor version.
pub fn platform() -> String {
    format!("onion-relay {} on {}", crate::VERSION, std::env::consts::OS)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the descriptor for `advertised` at time `now`.
///
/// # Errors
/// A message when the address is not IPv4 or a parameter is invalid.
pub fn build(
    config: &Config,
    keys: &EdgeKeys,
    advertised: SocketAddr,
    started: SystemTime,
    now: SystemTime,
) -> Result<(String, [u8; 20]), String> {
    let IpAddr::V4(address) = advertised.ip() else {
        return Err("the advertised ORPort address must be IPv4".into());
    };
    let dir = &config.directory;
    let policy =
        proto::netdoc::policy::ExitPolicy::parse(&dir.exit_policy, dir.exit_policy_reject_private)
            .map_err(|e| format!("exit_policy: {e}"))?;
    let params = DescriptorParams {
        nickname: config.nickname.clone(),
        address,
        or_port: advertised.port(),
        ipv6: None,
        platform: platform(),
        protocols: routerdesc::OUR_PROTOCOLS.to_owned(),
        published: secs(now),
        uptime: secs(now).saturating_sub(secs(started)),
        // We do not measure our throughput yet: report the configured rate as observed,
        // so authorities do not weight us at zero (INTEROP trap 27).
        bandwidth: (dir.bandwidth_rate, dir.bandwidth_burst, dir.bandwidth_rate),
        policy: if policy.rejects_all() {
            vec!["reject *:*".to_owned()]
        } else {
            policy.to_lines()
        },
        contact: (!dir.contact.is_empty()).then(|| dir.contact.clone()),
        include_tap: dir.publish_tap_key,
        tunnelled_dir_server: dir.tunnelled_dir_server,
    };
    routerdesc::build(&params, keys).map_err(|e| e.to_string())
}

/// Resolves `host:port` authority entries.
async fn resolve(entries: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for e in entries {
        match tokio::net::lookup_host(e.as_str()).await {
            Ok(mut addrs) => {
                if let Some(a) = addrs.next() {
                    out.push(a);
                }
            }
            Err(err) => tracing::warn!("cannot resolve authority {e}: {err}"),
        }
    }
    out
}

/// Publishes until cancelled. Returns at once when publication is off.
pub async fn publish_loop(
    config: Arc<Config>,
    keys: Arc<EdgeKeys>,
    advertised: SocketAddr,
    started: SystemTime,
) {
    let dir = &config.directory;
    if !dir.publish || dir.authorities.is_empty() {
        tracing::info!("descriptor publication is off");
        return std::future::pending().await;
    }
    let republish = Duration::from_secs(dir.republish_secs.max(60));
    let retry = Duration::from_secs(dir.retry_secs.max(1));
    loop {
        let built_at = tokio::time::Instant::now();
        let (text, digest) = match build(&config, &keys, advertised, started, SystemTime::now()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("cannot build the descriptor: {e}");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        if let Some(path) = &dir.descriptor_path {
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path)) {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
        }
        tracing::info!(digest = %hex::encode_upper(digest), "publishing descriptor");
        let mut pending = resolve(&dir.authorities).await;
        while !pending.is_empty() && built_at.elapsed() < republish {
            let results = futures_join(&pending, &text).await;
            let mut failed = Vec::new();
            for (addr, r) in pending.iter().zip(results) {
                match r {
                    Ok(res) if res.accepted() => {
                        metrics::counter!("edge_descriptor_uploads_total", "result" => "accepted")
                            .increment(1);
                        tracing::info!(authority = %addr, "descriptor accepted");
                    }
                    Ok(res) => {
                        metrics::counter!("edge_descriptor_uploads_total", "result" => "rejected")
                            .increment(1);
                        tracing::warn!(authority = %addr, status = res.status, reason = %res.reason, "descriptor rejected");
                        failed.push(*addr);
                    }
                    Err(e) => {
                        metrics::counter!("edge_descriptor_uploads_total", "result" => "error")
                            .increment(1);
                        tracing::warn!(authority = %addr, "descriptor upload failed: {e}");
                        failed.push(*addr);
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                tokio::time::sleep(retry).await;
            }
        }
        metrics::gauge!("edge_descriptor_published_timestamp_seconds")
            .set(secs(SystemTime::now()) as f64);
        tokio::time::sleep(republish.saturating_sub(built_at.elapsed())).await;
    }
}

async fn futures_join(
    addrs: &[SocketAddr],
    text: &str,
) -> Vec<Result<publish::UploadResult, publish::UploadError>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in addrs.iter().enumerate() {
        let (a, t) = (*a, text.to_owned());
        set.spawn(async move {
            (
                i,
                publish::upload(a, &t, "edge start or schedule", Duration::from_secs(30)).await,
            )
        });
    }
    let mut out: Vec<Option<Result<_, _>>> = (0..addrs.len()).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        if let Ok((i, res)) = r {
            out[i] = Some(res);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Err(publish::UploadError::Timeout)))
        .collect()
}
