//! Micro-benchmarks of the core's hot paths: ring lookup, version vector
//! and DVV compare/merge, and a Merkle update.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dyno_core::hash::key_position;
use dyno_core::merkle::item_hash;
use dyno_core::{
    ActorId, ConflictMode, Hlc, Member, MerkleShape, MerkleTree, NodeId, Object, Ring,
    SiblingLimits, VersionVector, Write,
};

fn ring_lookup(c: &mut Criterion) {
    for nodes in [3usize, 64] {
        let members = (0..nodes)
            .map(|i| Member::new(NodeId::new(format!("n{i}")).expect("valid")))
            .collect();
        let ring = Ring::new(10, 3, members).expect("ring");
        let keys: Vec<Vec<u8>> = (0..1024).map(|i| format!("user{i}").into_bytes()).collect();
        let mut i = 0;
        c.bench_function(&format!("ring_lookup/{nodes}_nodes"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                let pos = key_position("demo", &keys[i]);
                black_box(ring.preference_list_for(pos, 3).primaries().len())
            })
        });
    }
}

fn vv(actors: u64, offset: u64) -> VersionVector {
    VersionVector::from_entries((0..actors).map(|a| (ActorId(a * 7919), a + offset)))
}

fn versions(c: &mut Criterion) {
    let (a, b) = (vv(5, 1), vv(5, 2));
    c.bench_function("vv_compare/5_actors", |bch| {
        bch.iter(|| black_box(a.compare(black_box(&b))))
    });
    c.bench_function("vv_merge/5_actors", |bch| {
        bch.iter(|| black_box(a.merged(black_box(&b))))
    });

    // Two replicas with concurrent siblings of 1 KiB each.
    let blind = VersionVector::new();
    let value = Bytes::from(vec![0u8; 1024]);
    let mut x = Object::new();
    let mut y = Object::new();
    for (o, actor) in [(&mut x, 1), (&mut y, 2)] {
        let w = Write {
            context: &blind,
            actor: ActorId(actor),
            value: Some(value.clone()),
            timestamp: Hlc(1),
        };
        o.update(w, ConflictMode::Siblings, SiblingLimits::default())
            .expect("ok");
    }
    c.bench_function("dvv_merge/2_siblings", |bch| {
        bch.iter(|| black_box(x.merged(black_box(&y), ConflictMode::Siblings)))
    });
    let ctx = x.merged(&y, ConflictMode::Siblings).client_context(128);
    c.bench_function("dvv_update/with_context", |bch| {
        bch.iter(|| {
            let mut o = x.merged(&y, ConflictMode::Siblings);
            let w = Write {
                context: &ctx,
                actor: ActorId(1),
                value: Some(value.clone()),
                timestamp: Hlc(2),
            };
            black_box(
                o.update(w, ConflictMode::Siblings, SiblingLimits::default())
                    .expect("ok"),
            )
        })
    });
}

fn merkle(c: &mut Criterion) {
    let mut tree = MerkleTree::new(MerkleShape::default(), 10);
    let mut i = 0u64;
    c.bench_function("merkle_update", |b| {
        b.iter(|| {
            i += 1;
            let key = i.to_le_bytes();
            let pos = key_position("demo", &key);
            let old = item_hash("demo", &key, i);
            let new = item_hash("demo", &key, i + 1);
            tree.update(pos, Some(old), Some(new));
        })
    });
    black_box(tree.root());
}

criterion_group! {
    name = core;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2));
    targets = ring_lookup, versions, merkle
}
criterion_main!(core);
