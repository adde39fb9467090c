//! Per-cell hot path and the ntor server handshake, next to the physical limits measured in
//! the same run: raw AES-128-CTR and raw SHA-1 over one 509-byte cell body.
//!
//! Run: `cargo bench -p proto --bench hotpath`. Each cell benchmark reports cells/s
//! (`Throughput::Elements(1)`). The ratio that matters is layer vs. raw AES (+ SHA-1).
#![allow(missing_docs, clippy::unwrap_used)]

use aes::cipher::{KeyIvInit, StreamCipher};
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto::cell::{ChanCell, ChanCmd, ChanCodec};
use proto::crypto::Tor1Keys;
use proto::crypto::tor1::{ClientCircuit, RelayLayer};
use proto::handshake::ntor::{self, NtorClient, NtorOnionKey};
use proto::{CircId, RsaIdentity};
use rand::rngs::OsRng;
use sha1::{Digest, Sha1};
use std::hint::black_box;

fn keys() -> Tor1Keys {
    let seed: Vec<u8> = (0..72u8).collect();
    Tor1Keys::from_kdf_output(&seed).unwrap()
}

fn physical_limits(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Elements(1));
    let mut cipher = ctr::Ctr128BE::<aes::Aes128>::new(&[7u8; 16].into(), &[0u8; 16].into());
    let mut body = [0u8; 509];
    g.bench_function("aes128ctr_509B", |b| {
        b.iter(|| cipher.apply_keystream(black_box(&mut body)))
    });
    let mut digest = Sha1::new();
    g.bench_function("sha1_update_509B", |b| {
        b.iter(|| digest.update(black_box(&body)))
    });
    g.finish();
}

fn tor1_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("tor1");
    g.throughput(Throughput::Elements(1));

    // A cell not for us: AES only, then the recognized field rejects it.
    let mut relay = RelayLayer::new(&keys());
    let mut body = [0x55u8; 509];
    g.bench_function("relay_decrypt_forward_not_for_us", |b| {
        b.iter(|| {
            body[1] = 0x55; // keep `recognized` non-zero after decryption, most of the time
            black_box(relay.decrypt_forward(black_box(&mut body)))
        })
    });

    // A cell for us: AES + digest check. Client and relay advance in step.
    let mut client = ClientCircuit::new();
    client.push_hop(&keys());
    let mut relay = RelayLayer::new(&keys());
    g.bench_function("client_encrypt_plus_relay_decrypt_recognized", |b| {
        b.iter(|| {
            let mut body = [0u8; 509];
            client.encrypt_forward_originate(0, &mut body);
            assert!(relay.decrypt_forward(&mut body));
        })
    });

    let mut relay = RelayLayer::new(&keys());
    let mut body = [0u8; 509];
    g.bench_function("relay_encrypt_backward", |b| {
        b.iter(|| relay.encrypt_backward(black_box(&mut body)))
    });
    g.bench_function("relay_encrypt_backward_originate", |b| {
        b.iter(|| relay.encrypt_backward_originate(black_box(&mut body)))
    });
    g.finish();
}

fn cell_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("cell");
    g.throughput(Throughput::Elements(1));
    let codec = ChanCodec::with_link_version(5);
    let cell = ChanCell {
        circ_id: CircId(0x8000_0001),
        cmd: ChanCmd::Relay,
        payload: Bytes::from(vec![0x42u8; 509]),
    };
    let mut out = BytesMut::with_capacity(64 * 1024);
    g.bench_function("encode_relay_link5", |b| {
        b.iter(|| {
            out.clear();
            codec.encode(black_box(&cell), &mut out).unwrap();
        })
    });
    // Decode from a buffer holding many cells, as a TLS read would deliver them.
    let mut wire = BytesMut::new();
    for _ in 0..128 {
        codec.encode(&cell, &mut wire).unwrap();
    }
    let wire = wire.freeze();
    let mut buf = BytesMut::new();
    g.bench_function("decode_relay_link5", |b| {
        b.iter(|| {
            if buf.is_empty() {
                buf.extend_from_slice(&wire);
            }
            black_box(codec.decode(&mut buf).unwrap().unwrap())
        })
    });
    g.finish();
}

fn ntor_server(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    let onion = NtorOnionKey::generate(&mut OsRng);
    let id = RsaIdentity([9; 20]);
    let (_, onionskin) = NtorClient::start(&mut OsRng, &id, &onion.public_bytes());
    let keys = [onion];
    g.bench_function("ntor_server", |b| {
        b.iter(|| ntor::server_handshake(&mut OsRng, &keys, &id, black_box(&onionskin)).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    physical_limits,
    tor1_layer,
    cell_codec,
    ntor_server
);
criterion_main!(benches);
