//! The `DynoCluster` custom resource (`dyno.dev/v1alpha1`), from which the
//! CRD is generated (`dyno operator crd > deploy/crds/dynocluster.yaml`;
//! a test fails when the committed file differs).

// Each `printcolumn(...)` repeats the same keys, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Dyno cluster: its size, image, storage and policies.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "dyno.dev",
    version = "v1alpha1",
    kind = "DynoCluster",
    namespaced,
    status = "DynoClusterStatus",
    shortname = "dyno",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyNodes"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.ringEpoch"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DynoClusterSpec {
    /// Nodes wanted. Never below the largest table's N (the operator
    /// refuses, with a condition).
    pub replicas: u32,
    /// Partitions as a power of two (10 gives 1,024). Fixed at creation.
    #[serde(default = "default_partition_bits")]
    pub partition_bits: u8,
    /// The container image (the one `dyno` image for every role).
    pub image: String,
    /// CPU and memory of each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Each node's volume.
    pub storage: StorageSpec,
    /// The node label whose value is a node's zone (the data plane places
    /// each key's replicas in distinct zones when there are enough).
    #[serde(default = "default_zone_label")]
    pub zone_label: String,
    /// `periodic` (fsync every few milliseconds) or `sync` (fsync before
    /// every acknowledgement).
    #[serde(default)]
    pub durability: Durability,
    /// The Secret holding the admin credential (key `token`); made by the
    /// operator when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<String>,
    /// How image changes roll out.
    #[serde(default)]
    pub upgrade: UpgradeSpec,
    /// What happens to a removed node's volume.
    #[serde(default)]
    pub volume_policy: VolumePolicy,
    /// Seconds a pod may stay not-Ready during a ring change before the
    /// change is aborted.
    #[serde(default = "default_abort_after_secs")]
    pub abort_after_secs: u64,
    /// Scale by load, between bounds. When set, the operator owns
    /// `replicas`: it patches it as the load asks (as a
    /// HorizontalPodAutoscaler would through the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSpec>,
}

fn default_partition_bits() -> u8 {
    10
}

fn default_zone_label() -> String {
    "topology.kubernetes.io/zone".to_owned()
}

fn default_abort_after_secs() -> u64 {
    300
}

/// A node's volume.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// The StorageClass (the cluster's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// The size, as a Kubernetes quantity (`100Gi`).
    pub size: String,
}

/// How writes reach the disk.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Group commit, fsync every few milliseconds.
    #[default]
    Periodic,
    /// fsync before every acknowledgement.
    Sync,
}

/// How image changes roll out: one pod at a time, highest ordinal first,
/// each after every node is up, no change is under way and the restarted
/// node's hints have drained.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// Stop restarting pods (the template is still updated).
    #[serde(default)]
    pub paused: bool,
}

/// What happens to a removed node's volume claim.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumePolicy {
    /// Delete it once the node has left (its data lives on the others).
    #[default]
    Delete,
    /// Keep it.
    Keep,
}

/// Scale by load: grow when a load passes 110% of its per-node target,
/// shrink when every load would stay under 90% of it on fewer nodes, each
/// only after the recommendation held for the stabilisation window, and
/// never twice within a window.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleSpec {
    /// Fewest nodes.
    pub min: u32,
    /// Most nodes.
    pub max: u32,
    /// Operations per second per node to aim for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sec_per_node: Option<u64>,
    /// Stored bytes per node to aim for, as a quantity (`200Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_node: Option<String>,
    /// Seconds the load must stay past a threshold before a decision, and
    /// between two decisions.
    #[serde(default = "default_stabilization_secs")]
    pub stabilization_secs: u64,
}

fn default_stabilization_secs() -> u64 {
    600
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DynoClusterStatus {
    /// The generation these figures describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes in the ring (the scale subresource's replicas).
    #[serde(default)]
    pub replicas: u32,
    /// Nodes up and Ready.
    #[serde(default)]
    pub ready_nodes: u32,
    /// The pods' label selector, for the scale subresource.
    #[serde(default)]
    pub selector: String,
    /// The ring's epoch.
    #[serde(default)]
    pub ring_epoch: u64,
    /// Every node and its data-plane status.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// The ring change under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeStatus>,
    /// `Available`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The autoscaler's view, when `autoscale` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleStatus>,
}

/// What the autoscaler measured and recommends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleStatus {
    /// Client operations per second over the nodes (absent until two
    /// samples were taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sec: Option<u64>,
    /// Bytes stored over the nodes.
    pub bytes: u64,
    /// The node count the load asks for.
    pub recommendation: u32,
    /// Why, and what it waits for.
    pub reason: String,
}

/// One node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Its node id (the pod's name).
    pub name: String,
    /// `standby`, `up`, `down`, `joining`, `leaving` or `left`.
    pub state: String,
    /// Its zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// A ring change under way.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeStatus {
    /// Nodes joining.
    pub joining: Vec<String>,
    /// Nodes leaving.
    pub leaving: Vec<String>,
    /// Partitions received so far.
    pub partitions_done: u64,
    /// Partitions to receive.
    pub partitions_total: u64,
}

/// The CRD as YAML, as committed in `deploy/crds/dynocluster.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let header = "# Generated by `dyno operator crd` from operator/src/crd.rs; do not edit.\n";
    Ok(format!(
        "{header}{}",
        serde_yaml::to_string(&DynoCluster::crd())?
    ))
}
