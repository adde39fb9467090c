//! What the worker-link tests share: a worker run in-process under a cluster CA of its
//! own, and a hand-driven edge link to it.
// Each test file uses its own part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use circuit_worker::{Config, Listeners, run};
use proto::CircId;
use proto::cell::{CELL_PAYLOAD_LEN, ChanCell, ChanCmd};
use proto::handshake::fast::CreateFastClient;
use proto_io::cluster_tls::{self, Role};
use proto_io::rpc;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// A worker running in this process until dropped (or [`TestWorker::stop`]).
pub struct TestWorker {
    /// Its gRPC port.
    pub addr: SocketAddr,
    /// Its Unix socket (`grpc.unix_listen`).
    pub unix: PathBuf,
    /// Its `/metrics`.
    pub metrics: SocketAddr,
    /// The cluster CA's directory.
    pub ca: tempfile::TempDir,
    dirs: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), proto_io::Error>>>,
}

impl TestWorker {
    /// Starts a worker with `shards` shards, a fresh relay key bundle and a fresh CA.
    pub async fn start(shards: u32) -> TestWorker {
        let dirs = tempfile::tempdir().unwrap();
        let keys = dirs.path().join("keys");
        let bundle =
            proto::keys::RelayKeys::generate(&mut rand::rngs::OsRng, 1_790_000_000, 86400).unwrap();
        proto_io::keydir::write_key_files(&keys, &bundle.to_files().unwrap(), false).unwrap();
        let ca = tempfile::tempdir().unwrap();
        let ca_dir = ca.path().join("ca");
        cluster_tls::create_ca(&ca_dir, proto_io::unix_now()).unwrap();
        let tls = dirs.path().join("tls");
        issue(&ca_dir, Role::Worker, "worker-0", &tls);
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
        let unix_path = dirs.path().join("grpc.sock");
        let unix = proto_io::unix_link::bind(&unix_path, "grpc.unix_listen").unwrap();
        let config = Config {
            keys_dir: keys,
            shards,
            cluster_tls: cluster_tls::Settings {
                dir: tls,
                handshake_timeout_secs: 2,
                ..Default::default()
            },
            ..Config::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let listeners = Listeners {
                metrics,
                grpc,
                unix: Some(unix),
            };
            run(&config, listeners, async {
                let _ = stopped.await;
            })
            .await
        });
        TestWorker {
            addr,
            unix: unix_path,
            metrics: metrics_addr,
            ca,
            dirs,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The CA's directory.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca.path().join("ca")
    }

    /// Client TLS for an edge named `name`, with a certificate of this worker's CA.
    pub fn edge_tls(&self, name: &str) -> tonic::transport::ClientTlsConfig {
        let dir = self.dirs.path().join(format!("edge-{name}"));
        issue(&self.ca_dir(), Role::Edge, name, &dir);
        cluster_tls::Material::load(&dir)
            .unwrap()
            .client_config(Duration::from_secs(5))
    }

    /// The value of the counter line `series` (name and labels) in `/metrics`, 0 when absent.
    pub async fn counter(&self, series: &str) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body))
            .await
            .expect("metrics within 10 s")
            .unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stops the worker and checks it ended cleanly.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Issues a certificate for `role` from the CA in `ca` into `out`.
pub fn issue(ca: &std::path::Path, role: Role, name: &str, out: &std::path::Path) {
    cluster_tls::issue(ca, role, name, 1, out, proto_io::unix_now()).unwrap();
}

/// One edge link: what we send and what comes back.
pub struct Edge {
    pub tx: mpsc::Sender<rpc::EdgeToWorker>,
    pub rx: tonic::Streaming<rpc::WorkerToEdge>,
}

impl Edge {
    /// Opens a link as the edge `name` with `tls`.
    pub async fn connect(
        addr: SocketAddr,
        name: &str,
        tls: tonic::transport::ClientTlsConfig,
    ) -> Edge {
        Edge::try_connect(addr, name, Some(tls)).await.unwrap()
    }

    /// Opens a link as the edge `name`, over TLS with `tls` or in plaintext (`None`).
    ///
    /// # Errors
    /// The connection's or the call's failure, as text.
    pub async fn try_connect(
        addr: SocketAddr,
        name: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Edge, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let chan = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e:?}"))?;
        Edge::open(chan, name).await
    }

    /// Opens a link as the edge `name` on the worker's Unix socket `path` (no TLS).
    ///
    /// # Errors
    /// The connection's or the call's failure, as text.
    pub async fn try_connect_unix(path: &std::path::Path, name: &str) -> Result<Edge, String> {
        let endpoint = tonic::transport::Endpoint::from_static("http://worker")
            .connect_timeout(Duration::from_secs(5));
        let chan = tokio::time::timeout(
            Duration::from_secs(10),
            proto_io::unix_link::connect(path, &endpoint),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e:?}"))?;
        Edge::open(chan, name).await
    }

    async fn open(chan: tonic::transport::Channel, name: &str) -> Result<Edge, String> {
        let mut client = rpc::circuit_worker_client::CircuitWorkerClient::new(chan);
        let (tx, rx) = mpsc::channel(64);
        tx.send(rpc::EdgeToWorker {
            hello: Some(rpc::EdgeHello {
                edge_id: name.into(),
                max_link_protocol: 5,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let rx = tokio::time::timeout(
            Duration::from_secs(10),
            client.link(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| "link call timed out".to_owned())?
        .map_err(|e| format!("link: {e}"))?
        .into_inner();
        Ok(Edge { tx, rx })
    }

    pub async fn send(&self, msg: rpc::EdgeToWorker) {
        self.tx.send(msg).await.unwrap();
    }

    pub async fn cell(&self, channel: u64, cell: ChanCell) {
        self.send(rpc::EdgeToWorker {
            cells: vec![rpc::Cell::from_chan(channel, cell)],
            ..Default::default()
        })
        .await;
    }

    /// DESTROY from the client for circuit `circ` on `channel`.
    pub async fn destroy(&self, channel: u64, circ: u32) {
        self.send(rpc::EdgeToWorker {
            destroys: vec![rpc::Destroy::new(
                channel,
                CircId(circ),
                proto::cell::msg::DestroyReason::Finished,
            )],
            ..Default::default()
        })
        .await;
    }

    /// The next message from the worker (bounded wait).
    pub async fn next(&mut self) -> rpc::WorkerToEdge {
        self.try_next(Duration::from_secs(10))
            .await
            .expect("the worker answers within 10 s on an open link")
    }

    /// The next message within `d`; `None` on timeout, error or end of the link.
    pub async fn try_next(&mut self, d: Duration) -> Option<rpc::WorkerToEdge> {
        tokio::time::timeout(d, self.rx.next()).await.ok()??.ok()
    }

    /// True when nothing comes from the worker for `d`.
    pub async fn silent_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.next()).await.is_err()
    }

    /// Sends CREATE_FAST for `circ` on `channel`; true when CREATED_FAST comes back
    /// within 10 s (false when the link fails or stays silent).
    pub async fn create_fast(&mut self, channel: u64, circ: u32) -> bool {
        let (_, x) = CreateFastClient::start(&mut rand::rngs::OsRng);
        let cell = rpc::Cell::from_chan(
            channel,
            ChanCell {
                circ_id: CircId(circ),
                cmd: ChanCmd::CreateFast,
                payload: payload(&x),
            },
        );
        let sent = self
            .tx
            .send(rpc::EdgeToWorker {
                cells: vec![cell],
                ..Default::default()
            })
            .await;
        if sent.is_err() {
            return false;
        }
        match self.try_next(Duration::from_secs(10)).await {
            Some(m) => m
                .cells
                .first()
                .and_then(|c| c.clone().into_chan().ok())
                .is_some_and(|(_, c)| c.cmd == ChanCmd::CreatedFast),
            None => false,
        }
    }
}

/// A cell payload starting with `body`.
pub fn payload(body: &[u8]) -> Bytes {
    let mut p = vec![0u8; CELL_PAYLOAD_LEN];
    p[..body.len()].copy_from_slice(body);
    Bytes::from(p)
}
