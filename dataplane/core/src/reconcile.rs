//! Reconciling the answers of several replicas (a read's replies).
//!
//! [`reconcile`] merges every replica's state into one, and names the
//! replicas whose state differs from the merge: the read-repair targets. A
//! replica that answered "not found" while others hold the key — or a
//! tombstone — is stale too: it must receive the tombstone, or the delete
//! could be undone by anti-entropy later.

use crate::object::{ConflictMode, Object};

/// The outcome of reconciling replica replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled<R> {
    /// The merged state; `None` when no replica knows the key at all.
    pub merged: Option<Object>,
    /// Replicas whose state differs from `merged`: send them `merged`.
    pub stale: Vec<R>,
}

/// Merges replica replies: `(replica, its state or None)`.
pub fn reconcile<R: Clone>(replies: &[(R, Option<Object>)], mode: ConflictMode) -> Reconciled<R> {
    let merged = replies
        .iter()
        .filter_map(|(_, o)| o.as_ref())
        .fold(None::<Object>, |acc, o| {
            Some(match acc {
                None => o.clone(),
                Some(m) => m.merged(o, mode),
            })
        });
    let stale = match &merged {
        None => Vec::new(),
        Some(m) => {
            let digest = m.digest();
            replies
                .iter()
                .filter(|(_, o)| o.as_ref().is_none_or(|o| o.digest() != digest))
                .map(|(r, _)| r.clone())
                .collect()
        }
    };
    Reconciled { merged, stale }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::object::{SiblingLimits, Write};
    use crate::version::{ActorId, VersionVector};
    use bytes::Bytes;

    fn write(o: &mut Object, ctx: &VersionVector, actor: u64, v: Option<&'static str>) {
        let w = Write {
            context: ctx,
            actor: ActorId(actor),
            value: v.map(|s| Bytes::from_static(s.as_bytes())),
            timestamp: Hlc(actor),
        };
        o.update(w, ConflictMode::Siblings, SiblingLimits::default())
            .expect("ok");
    }

    #[test]
    fn newer_version_wins_and_old_replicas_are_stale() {
        let mut old = Object::new();
        write(&mut old, &VersionVector::new(), 1, Some("old"));
        let mut new = old.clone();
        write(&mut new, &old.client_context(usize::MAX), 1, Some("new"));
        let r = reconcile(
            &[
                ("a", Some(old.clone())),
                ("b", Some(new.clone())),
                ("c", None),
            ],
            ConflictMode::Siblings,
        );
        assert_eq!(r.merged.as_ref(), Some(&new));
        assert_eq!(r.stale, vec!["a", "c"]);
    }

    #[test]
    fn concurrent_versions_become_siblings_and_everyone_is_stale() {
        let mut x = Object::new();
        write(&mut x, &VersionVector::new(), 1, Some("x"));
        let mut y = Object::new();
        write(&mut y, &VersionVector::new(), 2, Some("y"));
        let r = reconcile(&[("a", Some(x)), ("b", Some(y))], ConflictMode::Siblings);
        let merged = r.merged.expect("merged");
        assert_eq!(merged.live_values().count(), 2);
        assert_eq!(merged.version_vector().len(), 2);
        assert_eq!(r.stale, vec!["a", "b"]);
    }

    #[test]
    fn tombstones_are_repaired_to_replicas_that_lack_the_key() {
        let mut t = Object::new();
        write(&mut t, &VersionVector::new(), 1, Some("v"));
        let ctx = t.client_context(usize::MAX);
        write(&mut t, &ctx, 1, None);
        let r = reconcile(
            &[("a", Some(t.clone())), ("b", None)],
            ConflictMode::Siblings,
        );
        assert!(r.merged.as_ref().is_some_and(Object::is_tombstone));
        assert_eq!(r.stale, vec!["b"]);
    }

    #[test]
    fn nobody_knows_the_key() {
        let r = reconcile::<&str>(&[("a", None), ("b", None)], ConflictMode::Siblings);
        assert_eq!(
            r,
            Reconciled {
                merged: None,
                stale: vec![]
            }
        );
    }

    #[test]
    fn agreeing_replicas_are_not_stale() {
        let mut o = Object::new();
        write(&mut o, &VersionVector::new(), 1, Some("v"));
        let r = reconcile(
            &[("a", Some(o.clone())), ("b", Some(o))],
            ConflictMode::Siblings,
        );
        assert!(r.stale.is_empty());
    }
}
