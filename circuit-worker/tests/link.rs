//! The worker's gRPC link as edges use it, driven by hand: extend results count only on
//! the link that asked and only while the circuit waits, and an outbound circuit nobody
//! waits for is DESTROYed at once (no orphan left at the edge). Issue #10, "other hangs
//! and leaks" and "request ids bound to the link that issued them".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Edge, TestWorker, payload};
use proto::cell::{CELL_PAYLOAD_LEN, ChanCell, ChanCmd};
use proto::crypto::tor1::ClientCircuit;
use proto::handshake::fast::CreateFastClient;
use proto::ids::RsaIdentity;
use proto::linkspec::LinkSpec;
use proto::relay_cell::msg::{Extend2, RelayMsg};
use proto::relay_cell::{RelayBody, RelayCell, RelayCmd};
use proto::{CircId, StreamId};
use proto_io::rpc;

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
    let worker = TestWorker::start(2).await;
    let mut a = Edge::connect(worker.addr, "edge-a", worker.edge_tls("edge-a")).await;
    // Link b is a legitimate edge of the same cluster (a valid certificate) that replays
    // another link's request ids.
    let mut b = Edge::connect(worker.addr, "edge-b", worker.edge_tls("edge-b")).await;
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
            stamp: 0,
        }],
        ..Default::default()
    })
    .await;
    let _ = circuit_asking_to_extend(&mut a, 1, 0x8000_0008).await;

    // A cell's stamp comes back on the cells its handling produced for the same link (the
    // edge reads the cluster's added latency from it).
    let (_, x) = CreateFastClient::start(&mut rand::rngs::OsRng);
    let mut create = rpc::Cell::from_chan(
        1,
        ChanCell {
            circ_id: CircId(0x8000_0009),
            cmd: ChanCmd::CreateFast,
            payload: payload(&x),
        },
    );
    create.stamp = 4242;
    a.send(rpc::EdgeToWorker {
        cells: vec![create],
        ..Default::default()
    })
    .await;
    let reply = a.next().await;
    assert_eq!(reply.cells[0].stamp, 4242, "{reply:?}");

    worker.stop().await;
}
