//! The ORPort server: accepts TCP, runs TLS and the responder link handshake, then serves
//! the open channel (DESIGN.md "edge").
//!
//! Invariants:
//! - At most `max_channels` connections exist at once; beyond that new connections are
//!   closed at once (counted as `edge_channels_rejected_total`).
//! - TLS and the link handshake must finish within `handshake_timeout`, so a slowloris
//!   peer holds a slot for a bounded time only.
//! - One task per connection; a failure closes that connection and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use proto_io::channel::{ChanError, Channel, LinkContext, Peer};
use proto_io::tls::LinkState;

/// Limits and timeouts of the ORPort.
#[derive(Clone, Debug)]
pub struct OrPortLimits {
    /// TLS + link handshake must complete within this.
    pub handshake_timeout: Duration,
    /// How open channels are kept and bounded.
    pub channel: proto_io::channel::ChannelPolicy,
    /// Concurrent connections.
    pub max_channels: usize,
}

/// Serves the ORPort on `listener` until `shutdown` turns true. Each connection uses the
/// [`LinkState`] current when it was accepted.
pub async fn serve(
    listener: TcpListener,
    state: watch::Receiver<Arc<LinkState>>,
    limits: OrPortLimits,
    channels: Arc<crate::chanmgr::ChannelManager>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_channels));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("ORPort accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("edge_channels_rejected_total", "reason" => "max_channels")
                .increment(1);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let current = state.borrow().clone();
        let (tls, ctx) = (current.tls.clone(), current.ctx.clone());
        let (limits, shutdown, channels) = (limits.clone(), shutdown.clone(), channels.clone());
        tasks.spawn(async move {
            metrics::gauge!("edge_channels_open").increment(1.0);
            let r = handle(tcp, peer, tls, &ctx, &limits, &channels, shutdown).await;
            metrics::gauge!("edge_channels_open").decrement(1.0);
            match r {
                Ok(()) => {
                    metrics::counter!("edge_channels_closed_total", "reason" => "done")
                        .increment(1);
                }
                Err(e) => {
                    // Never log the peer's address (SafeLogging).
                    tracing::debug!("inbound channel closed: {e}");
                    metrics::counter!("edge_channels_closed_total", "reason" => e.reason())
                        .increment(1);
                }
            }
            drop(permit);
        });
    }
    tasks.shutdown().await;
}

async fn handle(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    ctx: &LinkContext,
    limits: &OrPortLimits,
    channels: &crate::chanmgr::ChannelManager,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ChanError> {
    let start = tokio::time::Instant::now();
    let stream = tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp))
        .await
        .map_err(|_| ChanError::Timeout("TLS handshake"))??;
    let left = limits.handshake_timeout.saturating_sub(start.elapsed());
    let peer_ip: IpAddr = peer.ip().to_canonical();
    let ch = Channel::accept(stream, ctx, peer_ip, left).await?;
    let kind = match &ch.peer {
        Peer::Client => "client",
        Peer::Relay(p) => {
            tracing::debug!(rsa = %p.rsa, ed = %p.ed, link = ch.link_version, "authenticated relay channel");
            "relay"
        }
    };
    metrics::counter!("edge_channels_opened_total", "direction" => "inbound", "peer" => kind)
        .increment(1);
    let (handle, task) = ch.spawn(&limits.channel, channels.handler(), shutdown);
    // An authenticated relay's link is reused for our own extends to it.
    channels.register(&handle);
    task.await.unwrap_or(Ok(()))
}
