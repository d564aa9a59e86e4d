//! Reads the committed fixture database in today's format, so that a change
//! to the storage layout, the value framing or the object encoding cannot
//! silently break existing data. If this fails, the change needs a migration
//! (or a new format version that still reads v1), not a new fixture.
//!
//! The fixture was made by `generate_fixture` below
//! (`cargo test -p dyno-storage --test fixture -- --ignored generate_fixture`).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use dyno_core::codec::{decode_object, encode_object};
use dyno_core::keys::{decode_item_key, encode_item_key};
use dyno_core::{ActorId, ConflictMode, Hlc, Object, SiblingLimits, VersionVector, Write};
use dyno_storage::{Keyspace, RocksConfig, RocksStore, Store};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// The objects the fixture holds: one plain value, two siblings, one
/// tombstone.
fn expected() -> Vec<(&'static str, Object)> {
    let blind = VersionVector::new();
    let mode = ConflictMode::Siblings;
    let lim = SiblingLimits::default();
    let w = |actor, value: Option<&'static str>, ts| Write {
        context: &blind,
        actor: ActorId(actor),
        value: value.map(|v| Bytes::from_static(v.as_bytes())),
        timestamp: Hlc(ts),
    };
    let mut plain = Object::new();
    plain
        .update(w(0xA1, Some("hello"), 1_000 << 16), mode, lim)
        .expect("ok");
    let mut siblings = plain.clone();
    siblings
        .update(w(0xB2, Some("concurrent"), 2_000 << 16), mode, lim)
        .expect("ok");
    let mut deleted = plain.clone();
    let ctx = deleted.client_context(usize::MAX);
    let del = Write {
        context: &ctx,
        actor: ActorId(0xA1),
        value: None,
        timestamp: Hlc(3_000 << 16),
    };
    deleted.update(del, mode, lim).expect("ok");
    vec![
        ("plain", plain),
        ("siblings", siblings),
        ("deleted", deleted),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("fixture directory exists") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn reads_the_v1_fixture() {
    // RocksDB writes to a directory it opens, so work on a copy.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), dir.path());
    let store = RocksStore::open(&RocksConfig::new(dir.path())).expect("open fixture");
    for (key, object) in expected() {
        let raw = store
            .get(Keyspace::Items, &encode_item_key("fixture", key.as_bytes()))
            .expect("read");
        let raw = raw.unwrap_or_else(|| panic!("fixture key {key} missing"));
        assert_eq!(
            decode_object(&raw).expect("decodes"),
            object,
            "fixture key {key}"
        );
    }
    let items = store.scan(Keyspace::Items, &[], None, 100).expect("scan");
    assert_eq!(items.len(), 3);
    for (k, _) in &items {
        assert_eq!(decode_item_key(k).expect("item key").table, "fixture");
    }
    assert_eq!(
        store.get(Keyspace::Meta, b"format").expect("read"),
        Some(b"dyno-storage v1".to_vec())
    );
    assert_eq!(
        store.get(Keyspace::Hints, b"hint").expect("read"),
        Some(b"a hint".to_vec())
    );
}

#[test]
#[ignore = "writes the committed fixture; run by hand only when adding a new format version"]
fn generate_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let store = RocksStore::open(&RocksConfig::new(&dir)).expect("open");
    for (key, object) in expected() {
        store
            .put(
                Keyspace::Items,
                &encode_item_key("fixture", key.as_bytes()),
                &encode_object(&object),
            )
            .expect("put");
    }
    store
        .put(Keyspace::Meta, b"format", b"dyno-storage v1")
        .expect("put");
    store.put(Keyspace::Hints, b"hint", b"a hint").expect("put");
    store.flush().expect("flush");
    drop(store);
    // Logs are not part of the format.
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let p = entry.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with("LOG") {
            std::fs::remove_file(p).expect("rm log");
        }
    }
}
