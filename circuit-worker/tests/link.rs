//! The worker's gRPC link as edges use it, driven by hand: extend results count only on
//! the link that asked and only while the circuit waits, and an outbound circuit nobody
//! waits for is DESTROYed at once (no orphan left at the edge). Issue #10, "other hangs
//! and leaks" and "request ids bound to the link that issued them".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use circuit_worker::{Config, Listeners, run};
use proto::cell::{CELL_PAYLOAD_LEN, ChanCell, ChanCmd};
use proto::crypto::tor1::ClientCircuit;
use proto::handshake::fast::CreateFastClient;
use proto::ids::RsaIdentity;
use proto::linkspec::LinkSpec;
use proto::relay_cell::msg::{Extend2, RelayMsg};
use proto::relay_cell::{RelayBody, RelayCell, RelayCmd};
use proto::{CircId, StreamId};
use proto_io::rpc;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// One edge link: what we send and what comes back.
struct Edge {
    tx: mpsc::Sender<rpc::EdgeToWorker>,
    rx: tonic::Streaming<rpc::WorkerToEdge>,
}

impl Edge {
    async fn connect(addr: std::net::SocketAddr, name: &str) -> Edge {
        let mut client =
            rpc::circuit_worker_client::CircuitWorkerClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
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
        let rx = client
            .link(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Edge { tx, rx }
    }

    async fn send(&self, msg: rpc::EdgeToWorker) {
        self.tx.send(msg).await.unwrap();
    }

    async fn cell(&self, channel: u64, cell: ChanCell) {
        self.send(rpc::EdgeToWorker {
            cells: vec![rpc::Cell::from_chan(channel, cell)],
            ..Default::default()
        })
        .await;
    }

    /// DESTROY from the client for circuit `circ` on `channel`.
    async fn destroy(&self, channel: u64, circ: u32) {
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
    async fn next(&mut self) -> rpc::WorkerToEdge {
        tokio::time::timeout(Duration::from_secs(10), self.rx.next())
            .await
            .expect("the worker answers within 10 s")
            .expect("the link is open")
            .unwrap()
    }

    /// True when nothing comes from the worker for `d`.
    async fn silent_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.next()).await.is_err()
    }
}

fn payload(body: &[u8]) -> Bytes {
    let mut p = vec![0u8; CELL_PAYLOAD_LEN];
    p[..body.len()].copy_from_slice(body);
    Bytes::from(p)
}

/// Opens a one-hop circuit `circ` on `channel` with CREATE_FAST and asks it to extend;
/// returns the client's layers and the worker's extend request.
async fn circuit_asking_to_extend(
    edge: &mut Edge,
    channel: u64,
    circ: u32,
) -> (ClientCircuit, rpc::ExtendRequest) {
    let mut rng = rand::rngs::OsRng;
    let (fast, x) = CreateFastClient::start(&mut rng);
    edge.cell(
        channel,
        ChanCell {
            circ_id: CircId(circ),
            cmd: ChanCmd::CreateFast,
            payload: payload(&x),
        },
    )
    .await;
    let reply = edge.next().await;
    let (_, created) = reply.cells[0].clone().into_chan().unwrap();
    assert_eq!(created.cmd, ChanCmd::CreatedFast);
    let keys = fast.finish(&created.payload[..40]).unwrap();
    let mut layers = ClientCircuit::new();
    layers.push_hop(&keys);
    let extend = RelayMsg::Extend2(Extend2 {
        linkspecs: vec![LinkSpec::RsaId(RsaIdentity([3; 20]))],
        htype: 2,
        hdata: Bytes::from_static(&[1; 84]),
    });
    let mut body: RelayBody = [0; CELL_PAYLOAD_LEN];
    extend
        .encode_to_body(StreamId(0), &mut body, &mut rng)
        .unwrap();
    layers.encrypt_forward_originate(0, &mut body);
    edge.cell(
        channel,
        ChanCell {
            circ_id: CircId(circ),
            cmd: ChanCmd::RelayEarly,
            payload: Bytes::copy_from_slice(&body),
        },
    )
    .await;
    let msg = edge.next().await;
    assert_eq!(msg.extend_requests.len(), 1, "{msg:?}");
    (layers, msg.extend_requests[0].clone())
}

fn outbound(request_id: u64, channel: u64, circ: u32) -> rpc::EdgeToWorker {
    rpc::EdgeToWorker {
        extend_results: vec![rpc::ExtendResult {
            request_id,
            outcome: Some(rpc::extend_result::Outcome::Outbound(rpc::CircKey::new(
                channel,
                CircId(circ),
            ))),
        }],
        ..Default::default()
    }
}

fn destroyed(msg: &rpc::WorkerToEdge) -> Vec<(u64, u32)> {
    msg.destroys
        .iter()
        .filter_map(|d| d.circ.map(|k| (k.channel, k.circ_id)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_results_count_only_on_their_link_and_orphans_are_destroyed() {
    let keys = tempfile::tempdir().unwrap();
    let bundle =
        proto::keys::RelayKeys::generate(&mut rand::rngs::OsRng, 1_790_000_000, 86400).unwrap();
    proto_io::keydir::write_key_files(keys.path(), &bundle.to_files().unwrap(), false).unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let config = Config {
        keys_dir: keys.path().to_owned(),
        shards: 2,
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        run(&config, Listeners { metrics, grpc }, async {
            let _ = stopped.await;
        })
        .await
    });

    let mut a = Edge::connect(addr, "edge-a").await;
    let mut b = Edge::connect(addr, "edge-b").await;
    let (mut layers, req) = circuit_asking_to_extend(&mut a, 1, 0x8000_0005).await;

    // Link b replays link a's request id: its outbound circuit is DESTROYed on b, and
    // the circuit on a still waits for its own result.
    b.send(outbound(req.request_id, 9, 77)).await;
    assert_eq!(destroyed(&b.next().await), [(9, 77)]);
    assert!(a.silent_for(Duration::from_millis(300)).await);

    // Link a's own result counts: CREATED2 on the outbound circuit comes back to the
    // client as EXTENDED2, so the cell was routed to the circuit's shard.
    a.send(outbound(req.request_id, 2, 33)).await;
    let mut created = vec![0u8, 64];
    created.extend_from_slice(&[5; 64]);
    a.cell(
        2,
        ChanCell {
            circ_id: CircId(33),
            cmd: ChanCmd::Created2,
            payload: payload(&created),
        },
    )
    .await;
    let msg = a.next().await;
    let (key, cell) = msg.cells[0].clone().into_chan().unwrap();
    assert_eq!((key.channel, cell.circ_id.0), (1, 0x8000_0005));
    let mut body: RelayBody = cell.payload[..].try_into().unwrap();
    assert_eq!(layers.decrypt_backward(&mut body), Some(0));
    assert_eq!(RelayCell::parse(&body).unwrap().cmd, RelayCmd::Extended2);

    // The same result again (a duplicate) is nobody's: that outbound circuit goes.
    a.send(outbound(req.request_id, 2, 34)).await;
    assert_eq!(destroyed(&a.next().await), [(2, 34)]);

    // A circuit that ends before its extend result: the result's outbound circuit goes.
    let (_, req2) = circuit_asking_to_extend(&mut a, 1, 0x8000_0006).await;
    a.destroy(1, 0x8000_0006).await;
    a.send(outbound(req2.request_id, 2, 35)).await;
    assert_eq!(destroyed(&a.next().await), [(2, 35)]);

    // The first circuit's DESTROY from the client goes on to its outbound circuit.
    a.destroy(1, 0x8000_0005).await;
    assert_eq!(destroyed(&a.next().await), [(2, 33)]);
    // ... and its route is gone: a late cell on the old outbound circuit reaches no one.
    a.cell(
        2,
        ChanCell {
            circ_id: CircId(33),
            cmd: ChanCmd::Relay,
            payload: payload(&[9; 509]),
        },
    )
    .await;
    assert!(a.silent_for(Duration::from_millis(300)).await);

    // Cells that do not belong on the link are dropped, and the link keeps working.
    a.send(rpc::EdgeToWorker {
        cells: vec![rpc::Cell {
            circ: Some(rpc::CircKey::new(1, CircId(0x8000_0007))),
            command: 7, // VERSIONS
            payload: payload(&[]),
        }],
        ..Default::default()
    })
    .await;
    let _ = circuit_asking_to_extend(&mut a, 1, 0x8000_0008).await;

    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}
