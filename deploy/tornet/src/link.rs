//! A Tor link to a relay as an unauthenticated client, for tests that drive cells by hand
//! (hostile peers, idle channels).

use std::time::Duration;

use anyhow::{Context, Result};
use proto_io::channel::{Channel, LinkContext};

/// A client's TLS stream to an ORPort.
pub type ClientTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Opens TLS to `127.0.0.1:orport` and runs the link handshake as a client (no CERTS of
/// ours), within 30 s.
///
/// # Errors
/// Connection, TLS or handshake failure.
pub async fn client_channel(orport: u16) -> Result<Channel<ClientTls>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (_, ctx) = LinkContext::ephemeral(&mut rand::rngs::OsRng, now)
        .map_err(|e| anyhow::anyhow!("link context: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", orport))
        .await
        .context("connecting to the ORPort")?;
    let connector = tokio_rustls::TlsConnector::from(
        proto_io::tls::client_config().map_err(|e| anyhow::anyhow!("TLS config: {e}"))?,
    );
    let tls = connector
        .connect(proto_io::tls::random_server_name(), tcp)
        .await
        .context("TLS")?;
    Channel::connect(
        tls,
        &ctx,
        None,
        None,
        false,
        [127, 0, 0, 1].into(),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| anyhow::anyhow!("link handshake: {e}"))
}
