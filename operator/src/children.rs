//! The objects a `DynoCluster` owns, rendered from its spec: a pure
//! function, so that what the operator applies is tested without an API
//! server.
//!
//! | Object | Name | Why |
//! |---|---|---|
//! | StatefulSet | `NAME` | node `k` is pod `NAME-k` with its own volume claim `data-NAME-k`; `OnDelete` updates, so that the operator restarts pods one at a time |
//! | Service (headless) | `NAME-peers` | stable DNS names for node-to-node RPC and gossip seeds, published before pods are Ready |
//! | Service | `NAME` | the client endpoint (HTTP API, DynamoDB API, admin API) |
//! | PodDisruptionBudget | `NAME` | voluntary disruptions never take a quorum away ([`crate::budget`]) |
//! | Secret | `NAME-admin` | the admin token and key master, made once when `adminSecret` is not given |
//!
//! Node 0 forms the cluster: it starts without a seed, so with an empty
//! volume it makes a one-node ring; with its volume it reloads the ring.
//! Every other node starts with node 0 as its seed and waits, as
//! `standby`, to be joined by the operator. A pod's zone reaches the data
//! plane with its join (from its machine's zone label), because the
//! downward API cannot expose a node's labels to the pod.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde_json::{Value, json};

use crate::crd::{Durability, DynoCluster};

/// Public HTTP port of a node (client, admin and DynamoDB APIs).
pub const HTTP_PORT: u16 = 7000;
/// Internal RPC port of a node (replicas, gossip).
pub const RPC_PORT: u16 = 7100;
/// Where the admin Secret is mounted in a node.
pub const SECRET_DIR: &str = "/etc/dyno/admin";
/// The admin Secret's key holding the admin bearer token.
pub const TOKEN_KEY: &str = "token";
/// The admin Secret's key holding the API key master (shared with the
/// control plane).
pub const KEY_MASTER_KEY: &str = "key-master";
/// The field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "dyno-operator";

/// Names of a cluster's children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The StatefulSet, the client Service and the PodDisruptionBudget.
    pub cluster: String,
    /// The headless Service.
    pub peers: String,
    /// The admin Secret.
    pub secret: String,
}

impl Names {
    /// The names for the cluster `name` (the admin Secret as the spec says).
    pub fn of(dc: &DynoCluster) -> Names {
        let cluster = dc.metadata.name.clone().unwrap_or_default();
        Names {
            peers: format!("{cluster}-peers"),
            secret: dc
                .spec
                .admin_secret
                .clone()
                .unwrap_or_else(|| format!("{cluster}-admin")),
            cluster,
        }
    }

    /// Pod `k`'s name, which is also its node id.
    pub fn pod(&self, k: u32) -> String {
        format!("{}-{k}", self.cluster)
    }

    /// Pod `k`'s volume claim.
    pub fn claim(&self, k: u32) -> String {
        format!("data-{}-{k}", self.cluster)
    }

    /// The ordinal of a volume claim name of this cluster.
    pub fn claim_ordinal(&self, claim: &str) -> Option<u32> {
        self.ordinal(claim.strip_prefix("data-")?)
    }

    /// The ordinal of a pod (or node) name of this cluster.
    pub fn ordinal(&self, pod: &str) -> Option<u32> {
        pod.strip_prefix(&self.cluster)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }
}

/// The labels every child carries; the first three select the pods.
pub fn labels(dc: &DynoCluster) -> BTreeMap<String, String> {
    let mut l = selector(dc);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        FIELD_MANAGER.to_owned(),
    );
    l
}

/// The pods' selector.
pub fn selector(dc: &DynoCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "dyno".to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            dc.metadata.name.clone().unwrap_or_default(),
        ),
        ("app.kubernetes.io/component".to_owned(), "node".to_owned()),
    ])
}

/// The pods' selector as a label query (`a=b,c=d`), for listing pods and
/// for the scale subresource.
pub fn selector_string(dc: &DynoCluster) -> String {
    selector(dc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The children applied on every pass (the Secret is separate: it is
/// created once, never overwritten).
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The nodes.
    pub statefulset: StatefulSet,
    /// Node-to-node DNS.
    pub peers: Service,
    /// The client endpoint.
    pub client: Service,
    /// The disruption budget.
    pub pdb: PodDisruptionBudget,
}

/// Why the children could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The resource has no name or namespace (never true of one read from
    /// the API server).
    #[error("the DynoCluster has no {0}")]
    Missing(&'static str),
    /// An object did not take its typed form (a bug; the tests render
    /// every shape).
    #[error("rendering {what}: {source}")]
    Shape {
        /// Which object.
        what: &'static str,
        /// The mismatch.
        source: serde_json::Error,
    },
}

/// An object of kind `T` named `name`, owned by `dc`: `body` (its `spec`
/// and the like) with `apiVersion` and `kind` from the type and metadata
/// carrying the namespace, labels and owner reference.
fn owned<T>(dc: &DynoCluster, name: &str, mut body: Value) -> Result<T, RenderError>
where
    T: k8s_openapi::Resource + serde::de::DeserializeOwned,
{
    body["apiVersion"] = json!(T::API_VERSION);
    body["kind"] = json!(T::KIND);
    body["metadata"] = meta(dc, name)?;
    serde_json::from_value(body).map_err(|source| RenderError::Shape {
        what: T::KIND,
        source,
    })
}

fn owner(dc: &DynoCluster) -> Result<OwnerReference, RenderError> {
    dc.controller_owner_ref(&())
        .ok_or(RenderError::Missing("uid"))
}

fn meta(dc: &DynoCluster, name: &str) -> Result<Value, RenderError> {
    Ok(json!({
        "name": name,
        "namespace": dc.metadata.namespace.clone().ok_or(RenderError::Missing("namespace"))?,
        "labels": labels(dc),
        "ownerReferences": [owner(dc)?],
    }))
}

/// The shell line that starts a node: node 0 without a seed (it forms the
/// cluster), the others with node 0 as their seed.
fn start_script(
    names: &Names,
    namespace: &str,
    partition_bits: u8,
    durability: Durability,
) -> String {
    let seed = format!(
        "{}.{}.{namespace}.svc:{RPC_PORT}",
        names.pod(0),
        names.peers
    );
    let durability = match durability {
        Durability::Periodic => "periodic",
        Durability::Sync => "sync",
    };
    format!(
        "set -e\n\
         if [ \"${{POD_NAME##*-}}\" != 0 ]; then set -- --seed {seed}; fi\n\
         exec dyno node --id \"$POD_NAME\" --data-dir /data \\\n  \
         --http-addr 0.0.0.0:{HTTP_PORT} --rpc-addr 0.0.0.0:{RPC_PORT} \\\n  \
         --advertise-http-addr \"$POD_IP:{HTTP_PORT}\" --advertise-rpc-addr \"$POD_IP:{RPC_PORT}\" \\\n  \
         --partition-bits {partition_bits} --durability {durability} \\\n  \
         --admin-token-file {SECRET_DIR}/{TOKEN_KEY} --key-master-file {SECRET_DIR}/{KEY_MASTER_KEY} \"$@\"\n"
    )
}

/// Renders the children for `replicas` nodes on `image`, with a budget of
/// `max_unavailable` pods.
pub fn render(
    dc: &DynoCluster,
    replicas: u32,
    image: &str,
    max_unavailable: u32,
) -> Result<Children, RenderError> {
    let names = Names::of(dc);
    let namespace = dc
        .metadata
        .namespace
        .clone()
        .ok_or(RenderError::Missing("namespace"))?;
    let spec = &dc.spec;
    let ports = json!([
        { "name": "http", "port": HTTP_PORT, "targetPort": "http" },
        { "name": "rpc", "port": RPC_PORT, "targetPort": "rpc" },
    ]);
    let mut claim_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": spec.storage.size } },
    });
    if let Some(class) = &spec.storage.class_name {
        claim_spec["storageClassName"] = json!(class);
    }
    let health = json!({ "httpGet": { "path": "/admin/v1/health", "port": "http" } });
    let mut readiness = health.clone();
    readiness["periodSeconds"] = json!(5);
    readiness["failureThreshold"] = json!(2);
    let mut liveness = health;
    liveness["periodSeconds"] = json!(10);
    liveness["failureThreshold"] = json!(6);
    let field = |path: &str| json!({ "valueFrom": { "fieldRef": { "fieldPath": path } } });
    let mut container = json!({
        "name": "dyno",
        "image": image,
        "command": ["/bin/sh", "-c", start_script(&names, &namespace, spec.partition_bits, spec.durability)],
        "env": [
            { "name": "POD_NAME", "valueFrom": field("metadata.name")["valueFrom"] },
            { "name": "POD_IP", "valueFrom": field("status.podIP")["valueFrom"] },
            { "name": "RUST_LOG", "value": "info" },
        ],
        "ports": [
            { "name": "http", "containerPort": HTTP_PORT },
            { "name": "rpc", "containerPort": RPC_PORT },
        ],
        "readinessProbe": readiness,
        "livenessProbe": liveness,
        "volumeMounts": [
            { "name": "data", "mountPath": "/data" },
            { "name": "admin", "mountPath": SECRET_DIR, "readOnly": true },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
        "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true },
    });
    if let Some(r) = &spec.resources {
        container["resources"] = serde_json::to_value(r).map_err(|source| RenderError::Shape {
            what: "resources",
            source,
        })?;
    }
    let statefulset = owned(
        dc,
        &names.cluster,
        json!({
            "spec": {
                "replicas": replicas,
                "serviceName": names.peers,
                "selector": { "matchLabels": selector(dc) },
                // Pods start together after an outage; the operator, not
                // the StatefulSet, orders joins.
                "podManagementPolicy": "Parallel",
                // The operator restarts pods one at a time, when it is safe.
                "updateStrategy": { "type": "OnDelete" },
                // Volumes outlive pods; the operator deletes a claim only
                // after its node has left, as the volume policy says.
                "persistentVolumeClaimRetentionPolicy": { "whenScaled": "Retain", "whenDeleted": "Retain" },
                "template": {
                    "metadata": { "labels": labels(dc) },
                    "spec": {
                        "terminationGracePeriodSeconds": 60,
                        "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001 },
                        "containers": [container],
                        "volumes": [
                            { "name": "admin", "secret": { "secretName": names.secret, "defaultMode": 0o400 } },
                            { "name": "tmp", "emptyDir": {} },
                        ],
                        // Spread nodes over zones, so that the data plane
                        // can place replicas in distinct zones.
                        "topologySpreadConstraints": [{
                            "maxSkew": 1,
                            "topologyKey": spec.zone_label,
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": { "matchLabels": selector(dc) },
                        }],
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": { "name": "data", "labels": labels(dc) },
                    "spec": claim_spec,
                }],
            },
        }),
    )?;
    let peers = owned(
        dc,
        &names.peers,
        json!({
            "spec": {
                "clusterIP": "None",
                // Gossip must find a pod before it is Ready: a standby node
                // is Ready only once it answers, and joins need it found.
                "publishNotReadyAddresses": true,
                "selector": selector(dc),
                "ports": ports,
            },
        }),
    )?;
    let client = owned(
        dc,
        &names.cluster,
        json!({ "spec": { "selector": selector(dc), "ports": [ports[0].clone()] } }),
    )?;
    Ok(Children {
        statefulset,
        peers,
        client,
        pdb: pdb(dc, max_unavailable)?,
    })
}

/// The PodDisruptionBudget allowing `max_unavailable` pods down at once.
pub fn pdb(dc: &DynoCluster, max_unavailable: u32) -> Result<PodDisruptionBudget, RenderError> {
    owned(
        dc,
        &Names::of(dc).cluster,
        json!({
            "spec": {
                // The smallest N - max(R, W) over the tables, at least 1:
                // with that many nodes drained, every key still has R and
                // W of its replicas (see budget.rs).
                "maxUnavailable": max_unavailable,
                "selector": { "matchLabels": selector(dc) },
            },
        }),
    )
}

/// The admin Secret, made once when the spec names none: `token` is the
/// admin credential, `key-master` the API key master.
pub fn admin_secret(
    dc: &DynoCluster,
    token: &str,
    key_master: &str,
) -> Result<Secret, RenderError> {
    owned(
        dc,
        &Names::of(dc).secret,
        json!({
            "type": "Opaque",
            "stringData": { TOKEN_KEY: token, KEY_MASTER_KEY: key_master },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DynoClusterSpec;

    fn cluster() -> DynoCluster {
        let spec: DynoClusterSpec = serde_json::from_value(json!({
            "replicas": 3,
            "image": "dyno:1",
            "storage": { "size": "10Gi", "className": "fast" },
            "durability": "sync",
        }))
        .expect("spec");
        let mut dc = DynoCluster::new("prod", spec);
        dc.metadata.namespace = Some("db".into());
        dc.metadata.uid = Some("uid-1".into());
        dc
    }

    #[test]
    fn children_are_owned_named_and_selected_consistently() {
        let dc = cluster();
        let c = render(&dc, 4, "dyno:2", 1).expect("render");
        let sts = &c.statefulset.spec;
        assert_eq!(sts.replicas, Some(4));
        assert_eq!(sts.service_name.as_deref(), Some("prod-peers"));
        assert_eq!(
            sts.update_strategy
                .as_ref()
                .and_then(|u| u.type_.as_deref()),
            Some("OnDelete")
        );
        let pod = sts.template.spec.as_ref().expect("pod spec");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("dyno:2"));
        let script = &container.command.as_ref().expect("command")[2];
        assert!(
            script.contains("--seed prod-0.prod-peers.db.svc:7100"),
            "{script}"
        );
        assert!(script.contains("--durability sync"), "{script}");
        assert!(
            script.contains("--admin-token-file /etc/dyno/admin/token"),
            "{script}"
        );
        let claim = &sts.volume_claim_templates.as_ref().expect("claims")[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref()),
            Some("fast")
        );
        // Every child is controlled by the resource; the pods match every
        // selector.
        let template_labels = sts
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("labels");
        for (sel, meta) in [
            (sts.selector.match_labels.clone(), &c.statefulset.metadata),
            (
                c.peers.spec.as_ref().and_then(|s| s.selector.clone()),
                &c.peers.metadata,
            ),
            (
                c.client.spec.as_ref().and_then(|s| s.selector.clone()),
                &c.client.metadata,
            ),
            (
                c.pdb
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| s.match_labels.clone()),
                &c.pdb.metadata,
            ),
        ] {
            let sel = sel.expect("selector");
            assert!(sel.iter().all(|(k, v)| template_labels.get(k) == Some(v)));
            let owner = &meta.owner_references.as_ref().expect("owner")[0];
            assert_eq!(
                (owner.uid.as_str(), owner.controller),
                ("uid-1", Some(true))
            );
            assert_eq!(meta.namespace.as_deref(), Some("db"));
        }
        assert_eq!(
            c.peers.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
            Some("None")
        );
        assert_eq!(
            c.pdb.spec.as_ref().and_then(|s| s.max_unavailable.clone()),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        assert_eq!(
            selector_string(&dc),
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=prod,app.kubernetes.io/name=dyno"
        );
    }

    #[test]
    fn names_and_ordinals_round_trip() {
        let n = Names::of(&cluster());
        assert_eq!(n.pod(3), "prod-3");
        assert_eq!(n.claim(3), "data-prod-3");
        assert_eq!(n.ordinal("prod-12"), Some(12));
        assert_eq!(n.ordinal("prodx-1"), None);
        assert_eq!(n.ordinal("prod-"), None);
        assert_eq!(n.ordinal("other-1"), None);
        assert_eq!(n.secret, "prod-admin");
    }

    #[test]
    fn a_resource_without_namespace_or_uid_is_an_error_not_a_panic() {
        let mut dc = cluster();
        dc.metadata.uid = None;
        assert!(matches!(
            render(&dc, 3, "x", 1),
            Err(RenderError::Missing("uid"))
        ));
        dc.metadata.namespace = None;
        assert!(render(&dc, 3, "x", 1).is_err());
        let dc = cluster();
        let s = admin_secret(&dc, "t", "m").expect("secret");
        assert_eq!(s.metadata.name.as_deref(), Some("prod-admin"));
        assert_eq!(
            s.string_data
                .as_ref()
                .and_then(|d| d.get("token"))
                .map(String::as_str),
            Some("t")
        );
    }
}
