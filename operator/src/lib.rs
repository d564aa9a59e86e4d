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

pub mod budget;
pub mod crd;
pub mod decide;
