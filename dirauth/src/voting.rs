//! The voting schedule (dir-spec §1.4, C: `dirvote_act`), run against the peers' DirPorts:
//! for each valid-after VA, with vote delay V and distribution delay D,
//! - VA−D−V: build and sign our vote, POST it to every peer's `/tor/post/vote`;
//! - VA−D−V/2: fetch the votes still missing (`/tor/status-vote/next/authority`);
//! - VA−D: compute the consensus, POST our detached signatures to every peer;
//! - VA−D/2: fetch missing signatures (`/tor/status-vote/next/consensus-signatures`);
//! - VA: publish each flavor with signatures from more than half the authorities.
//!
//! An authority that starts late in a round skips to the next one. On start, and whenever
//! it has no live consensus, it asks its peers for theirs (a restarted authority catching
//! up) and adopts one a majority signed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto::netdoc::consensus::Flavor;

use crate::authority::Authority;
use crate::config::AuthorityLine;
use crate::http;
use crate::store::Store;

const PEER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FETCH: usize = 16 << 20;

fn lock(a: &Mutex<Authority>) -> std::sync::MutexGuard<'_, Authority> {
    a.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn sleep_until(t: u64) {
    let now = crate::unix_now();
    if t > now {
        tokio::time::sleep(Duration::from_secs(t - now)).await;
    }
}

fn peer_addr(p: &AuthorityLine) -> SocketAddr {
    SocketAddr::V4(p.dir_addr)
}

/// `GET path` from a peer's DirPort: the body of a 200 answer, as text.
async fn fetch_text(p: &AuthorityLine, path: &str) -> Option<String> {
    let r = http::get(peer_addr(p), path, PEER_TIMEOUT, MAX_FETCH)
        .await
        .ok()?;
    if r.status != 200 {
        return None;
    }
    String::from_utf8(r.body).ok()
}

async fn post_all(peers: &[AuthorityLine], path: &str, body: String, what: &str) {
    let body = Arc::new(body);
    let mut tasks = Vec::new();
    for p in peers {
        let (p, body, path) = (p.clone(), body.clone(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            (
                p.nickname.clone(),
                http::post(peer_addr(&p), &path, body.as_bytes(), PEER_TIMEOUT).await,
            )
        }));
    }
    for t in tasks {
        if let Ok((nick, r)) = t.await {
            match r {
                Ok(r) if r.status == 200 => tracing::debug!("{what} to {nick}: {}", r.reason),
                Ok(r) => tracing::warn!("{what} to {nick} refused: {} {}", r.status, r.reason),
                Err(e) => tracing::info!("{what} to {nick} failed: {e}"),
            }
        }
    }
}

/// Saves the state if it changed.
pub async fn persist(auth: &Arc<Mutex<Authority>>, store: &Store) {
    let snap = {
        let mut a = lock(auth);
        if !a.dirty {
            return;
        }
        a.dirty = false;
        a.snapshot()
    };
    let store = store.clone();
    let r = tokio::task::spawn_blocking(move || {
        for (name, data) in snap {
            store.save(name, data.as_bytes())?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if !matches!(r, Ok(Ok(()))) {
        tracing::warn!("could not save state: {r:?}");
        lock(auth).dirty = true;
    }
}

/// Fetches the peers' current consensuses and adopts newer ones a majority signed.
pub async fn catch_up(auth: &Arc<Mutex<Authority>>) {
    let peers = lock(auth).settings.peers.clone();
    for p in &peers {
        // Their certificates first, so signatures can be checked.
        if let Some(text) = fetch_text(p, "/tor/keys/all").await
            && let Ok(certs) = proto::netdoc::authcert::AuthCert::parse_many(&text)
        {
            let mut a = lock(auth);
            for c in certs {
                if a.is_configured(&c.v3ident) && c.v3ident != a.keys.cert.v3ident {
                    a.certs.insert(c);
                }
            }
        }
        for (flavor, path) in [
            (Flavor::Ns, "/tor/status-vote/current/consensus"),
            (
                Flavor::Microdesc,
                "/tor/status-vote/current/consensus-microdesc",
            ),
        ] {
            if let Some(text) = fetch_text(p, path).await {
                match lock(auth).adopt(&text, crate::unix_now()) {
                    Ok(f) => {
                        tracing::info!("adopted the {} consensus from {}", f.name(), p.nickname)
                    }
                    Err(e) => {
                        tracing::debug!("{} consensus from {}: {e}", flavor.name(), p.nickname)
                    }
                }
            }
        }
    }
}

/// Runs rounds forever.
pub async fn run(auth: Arc<Mutex<Authority>>, store: Store) {
    catch_up(&auth).await;
    persist(&auth, &store).await;
    loop {
        let now = crate::unix_now();
        let (settings, peers) = {
            let a = lock(&auth);
            (a.settings.clone(), a.settings.peers.clone())
        };
        let va = settings.next_valid_after(now);
        let [t_vote, t_fetch, t_compute, t_sigs] = settings.schedule(va);
        if now > t_fetch {
            // Too late to take part in this round; wait for the next one.
            sleep_until(va).await;
            catch_up_if_stale(&auth).await;
            continue;
        }
        sleep_until(t_vote).await;
        let vote = lock(&auth).vote(crate::unix_now(), va);
        match vote {
            Ok(text) => {
                tracing::info!(valid_after = %proto::netdoc::format_time(va), "voted");
                post_all(&peers, "/tor/post/vote", text, "vote").await;
            }
            Err(e) => {
                tracing::warn!("could not vote: {e}");
                sleep_until(va).await;
                continue;
            }
        }
        sleep_until(t_fetch).await;
        let missing = lock(&auth).missing_votes();
        for p in missing {
            if let Some(text) = fetch_text(&p, "/tor/status-vote/next/authority").await {
                match lock(&auth).add_vote(&text, crate::unix_now(), false) {
                    Ok(_) => tracing::info!("fetched the vote of {}", p.nickname),
                    Err(e) => tracing::info!("vote fetched from {}: {e}", p.nickname),
                }
            }
        }
        sleep_until(t_compute).await;
        let sigs = lock(&auth).compute();
        match sigs {
            Ok(doc) => {
                post_all(&peers, "/tor/post/consensus-signature", doc, "signatures").await;
            }
            Err(e) => {
                tracing::warn!("no consensus this round: {e}");
                sleep_until(va).await;
                continue;
            }
        }
        sleep_until(t_sigs).await;
        let needs = lock(&auth).needs_signatures();
        if needs {
            for p in &peers {
                if let Some(text) =
                    fetch_text(p, "/tor/status-vote/next/consensus-signatures").await
                {
                    let _ = lock(&auth).add_signatures(&text);
                }
            }
        }
        sleep_until(va).await;
        let published = lock(&auth).publish();
        if published.is_empty() {
            tracing::warn!(
                "consensus for {} not published: too few signatures",
                proto::netdoc::format_time(va)
            );
        }
        for (f, n) in published {
            tracing::info!(flavor = f.name(), signatures = n, valid_after = %proto::netdoc::format_time(va), "published a consensus");
            metrics::gauge!("dirauth_consensus_valid_after_timestamp_seconds", "flavor" => f.name()).set(va as f64);
            metrics::gauge!("dirauth_consensus_signatures", "flavor" => f.name()).set(n as f64);
        }
        persist(&auth, &store).await;
    }
}

async fn catch_up_if_stale(auth: &Arc<Mutex<Authority>>) {
    let stale = {
        let a = lock(auth);
        let now = crate::unix_now();
        a.published
            .get(&Flavor::Microdesc)
            .is_none_or(|p| p.fresh_until <= now)
    };
    if stale {
        catch_up(auth).await;
    }
}
