//! The Kubernetes operator of Dyno.
//!
//! Its heart is [`decide`]: a pure function from what the `DynoCluster`
//! asks for ([`decide::Spec`]) and what the operator observes (the
//! StatefulSet, its pods and claims, and the data plane's cluster view:
//! [`decide::Observed`]) to at most one action ([`decide::Action`]) and
//! the conditions to report. Reconciliation is level-triggered: every
//! pass observes afresh and decides again, so a crash or a repeated pass
//! never does a step twice, and every rule (decommission before shrink,
//! one change at a time, never below the largest table's N, upgrades one
//! pod at a time) lives in one tested place. The Kubernetes and data-plane
//! I/O around it is a thin driver.

// The Kubernetes crates at the versions the operator is built with, for
// tests that drive it.
pub use k8s_openapi;
pub use kube;

pub mod autoscale;
pub mod budget;
pub mod children;
pub mod controller;
pub mod crd;
pub mod dataplane;
pub mod decide;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod register;

/// Every API permission the operator uses, as (group, resource, verb):
/// the ClusterRole in `deploy/operator/rbac.yaml` grants exactly these (a
/// test checks it).
pub const PERMISSIONS: &[(&str, &str, &str)] = &[
    ("dyno.dev", "dynoclusters", "get"),
    ("dyno.dev", "dynoclusters", "list"),
    ("dyno.dev", "dynoclusters", "watch"),
    ("dyno.dev", "dynoclusters", "patch"),
    ("dyno.dev", "dynoclusters/status", "get"),
    ("dyno.dev", "dynoclusters/status", "patch"),
    ("dyno.dev", "dynoclusters/finalizers", "update"),
    ("apps", "statefulsets", "get"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    ("apps", "statefulsets", "create"),
    ("apps", "statefulsets", "patch"),
    ("", "services", "get"),
    ("", "services", "list"),
    ("", "services", "watch"),
    ("", "services", "create"),
    ("", "services", "patch"),
    ("policy", "poddisruptionbudgets", "get"),
    ("policy", "poddisruptionbudgets", "list"),
    ("policy", "poddisruptionbudgets", "watch"),
    ("policy", "poddisruptionbudgets", "create"),
    ("policy", "poddisruptionbudgets", "patch"),
    ("", "secrets", "get"),
    ("", "secrets", "create"),
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "delete"),
    ("", "persistentvolumeclaims", "get"),
    ("", "persistentvolumeclaims", "list"),
    ("", "persistentvolumeclaims", "delete"),
    ("", "nodes", "get"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];
