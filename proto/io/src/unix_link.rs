//! Edge↔worker links over a Unix socket, for an edge and a worker on one host (or in one
//! pod): the same gRPC service as the TCP link, without loopback TCP and TLS on every
//! cell.
//!
//! Invariants: the socket file is mode `0600`, so only its owner (and root) can connect,
//! and [`incoming`] also refuses any peer whose uid (`SO_PEERCRED`) is not the owner's,
//! counted in `worker_link_handshakes_total{result="refused"}`; a stale socket file from
//! an earlier run is replaced, anything else at the path is an error.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::cluster_tls::{count, next_connection};
use crate::{Error, Result};

/// Prefix of a worker URL that names a Unix socket: `unix:/run/relay/worker.sock`.
pub const URL_PREFIX: &str = "unix:";

/// The socket path of a `unix:PATH` worker URL, or `None` for any other URL.
pub fn socket_path(url: &str) -> Option<&Path> {
    url.strip_prefix(URL_PREFIX)
        .filter(|p| !p.is_empty())
        .map(Path::new)
}

/// A bound Unix socket and the uid allowed to connect to it (the socket file's owner).
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    owner: u32,
    path: PathBuf,
}

impl Listener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds a Unix socket at `path` (replacing a stale socket file) and makes it `0600`;
/// `option` names the setting in errors.
///
/// # Errors
/// [`Error::Io`] when something other than a socket is at `path` or binding fails.
pub fn bind(path: &Path, option: &str) -> Result<Listener> {
    let what = |e: std::io::Error| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot bind {option} {}: {e}", path.display()),
        ))
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(what)?,
        Ok(_) => {
            return Err(what(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(what)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(what)?;
    let owner = std::fs::metadata(path).map_err(what)?.uid();
    Ok(Listener {
        listener,
        owner,
        path: path.to_owned(),
    })
}

/// Accepts connections on `listener` and yields those from a peer with the owner's uid.
pub fn incoming(
    listener: Listener,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<UnixStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let socket = &listener.listener;
        loop {
            let accept = move || async move { socket.accept().await.map(|(s, _)| s) };
            let Some(sock) = next_connection(accept, tx.closed()).await else {
                return;
            };
            match sock.peer_cred() {
                Ok(c) if c.uid() == listener.owner => {
                    count("accepted");
                    if tx.send(Ok(sock)).await.is_err() {
                        return;
                    }
                }
                Ok(c) => {
                    count("refused");
                    tracing::debug!(uid = c.uid(), "gRPC unix link refused: not the owner");
                }
                Err(e) => {
                    count("refused");
                    tracing::debug!("gRPC unix link refused: no peer credentials: {e}");
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Opens a gRPC channel to the worker on the Unix socket `path`, with `endpoint`'s
/// settings (windows, timeouts; its URI is not used).
///
/// # Errors
/// When the socket cannot be reached or the HTTP/2 connection fails.
pub async fn connect(
    path: &Path,
    endpoint: &tonic::transport::Endpoint,
) -> std::result::Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_owned();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn unix_urls_name_their_socket() {
        assert_eq!(
            socket_path("unix:/run/w.sock"),
            Some(Path::new("/run/w.sock"))
        );
        assert_eq!(socket_path("unix:"), None);
        assert_eq!(socket_path("https://w0:9201"), None);
    }

    #[tokio::test]
    async fn socket_is_private_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sock");
        let first = bind(&path, "grpc.unix_listen").unwrap();
        drop(first);
        // The file of a socket nobody serves any more is replaced.
        let l = bind(&path, "grpc.unix_listen").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut s = incoming(l);
        let _c = UnixStream::connect(&path).await.unwrap();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_stream::StreamExt::next(&mut s),
        )
        .await
        .unwrap();
        assert!(matches!(got, Some(Ok(_))), "our own uid is let in");
        // A regular file is not clobbered.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"keep").unwrap();
        let err = bind(&file, "grpc.unix_listen").unwrap_err();
        assert!(err.to_string().contains("grpc.unix_listen"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }
}
