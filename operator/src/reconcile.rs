//! One reconciliation pass for one `DynoCluster`: observe, [`decide`],
//! act, report. The I/O is here; the rules are in `decide.rs`.
//!
//! A pass makes its requests one after another, in a fixed order, so that
//! a test against a mocked API server can assert the exact requests:
//!
//! 1. the admin Secret (created once when the spec names none);
//! 2. the StatefulSet, the pods and the volume claims;
//! 3. the data plane: the cluster view of the first node that answers
//!    (lowest ordinal first) and the hint backlog of every pod; when node
//!    0 is alone in the ring without a zone, its machine (for the zone);
//! 4. the PodDisruptionBudget, re-applied when the tables' quorums change
//!    what it must be;
//! 5. at most one action, and an Event for it;
//! 6. with `autoscale`, on a settled cluster: every member's `/metrics`,
//!    and, when the load has asked for another size long enough, a patch
//!    of `spec.replicas` and an Event (see `autoscale.rs`);
//! 7. the status, with the conditions;
//! 8. when the cluster is available and a control plane is configured,
//!    its registration there (see `register.rs`), once per change of URL
//!    or credential.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::budget;
use crate::children::{self, FIELD_MANAGER, Names, TOKEN_KEY};
use crate::crd::{ChangeStatus, DynoCluster, DynoClusterStatus, MemberStatus, VolumePolicy};
use crate::dataplane::{DataPlane, DataPlaneError, Locator};
use crate::decide::{self, Action, Decision, Observed};
use crate::observe::{self, ClusterView, HintBacklog};

/// Why a pass failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A data-plane call made for an action failed.
    #[error("data plane: {0}")]
    DataPlane(#[from] DataPlaneError),
    /// The children could not be rendered.
    #[error(transparent)]
    Render(#[from] children::RenderError),
    /// The admin Secret lacks its token.
    #[error("the admin Secret {0} has no key {TOKEN_KEY:?}")]
    NoToken(String),
    /// The system has no random source to make the admin Secret with.
    #[error("no random source to make the admin Secret with")]
    NoEntropy,
    /// The resource is not namespaced (never true of a real one).
    #[error("the DynoCluster has no namespace")]
    NoNamespace,
}

/// What a pass needs.
#[derive(Clone)]
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// Where nodes answer.
    pub locator: Arc<dyn Locator>,
    /// The operator's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The clock (tests pin it).
    pub now: fn() -> Timestamp,
    /// Makes the admin Secret's token and key master (None: no random
    /// source).
    pub secret_bytes: fn() -> Option<String>,
    /// Registers available clusters with the control plane, when set.
    pub registrar: Option<Arc<crate::register::Registrar>>,
    /// The autoscaler's memory of each cluster.
    pub autoscale: Arc<crate::autoscale::Trackers>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("locator", &self.locator)
            .finish_non_exhaustive()
    }
}

/// What a pass did, for the caller's requeue.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// When to look again.
    pub requeue: Duration,
}

/// Seconds between passes while something is in progress.
pub const BUSY_REQUEUE: Duration = Duration::from_secs(5);
/// Seconds between passes when settled (drift and load are checked).
pub const IDLE_REQUEUE: Duration = Duration::from_secs(60);

/// One pass.
pub async fn reconcile(dc: &DynoCluster, ctx: &Context) -> Result<Outcome, Error> {
    let ns = dc.namespace().ok_or(Error::NoNamespace)?;
    let names = Names::of(dc);
    let client = ctx.client.clone();

    // 1. The admin Secret.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let token = match secrets.get_opt(&names.secret).await? {
        Some(s) => secret_token(&s).ok_or_else(|| Error::NoToken(names.secret.clone()))?,
        None if dc.spec.admin_secret.is_none() => {
            let token = (ctx.secret_bytes)().ok_or(Error::NoEntropy)?;
            let master = (ctx.secret_bytes)().ok_or(Error::NoEntropy)?;
            let secret = children::admin_secret(dc, &token, &master)?;
            secrets.create(&PostParams::default(), &secret).await?;
            token
        }
        None => return Err(Error::NoToken(names.secret.clone())),
    };

    // 2. Kubernetes.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels(&children::selector_string(dc));
    let sts = sts_api.get_opt(&names.cluster).await?;
    let pods = pods_api.list(&selector).await?.items;
    let claims = claims_api.list(&selector).await?.items;

    // 3. The data plane.
    let dp = DataPlane::new(token.clone());
    let pod_list = observe::pods(&names, &pods, (ctx.now)());
    let mut view: Option<(u32, ClusterView)> = None;
    let mut hints: Vec<HintBacklog> = Vec::new();
    if sts.is_some() {
        for p in &pod_list {
            let url = ctx.locator.node_url(&names, &ns, p.ordinal);
            if view.is_none()
                && let Ok(v) = dp.cluster(&url).await
            {
                view = Some((p.ordinal, v));
            }
            if let Ok(h) = dp.hints(&url).await {
                hints.extend(h);
            }
        }
    }
    let mut data_plane = view
        .as_ref()
        .map(|(_, v)| observe::data_plane(&names, v, &hints));
    // Node 0 alone in the ring without a zone: its machine's, if any.
    if let (Some(d), Some((_, v))) = (data_plane.as_mut(), &view)
        && let [only] = v.ring.members.as_slice()
        && names.ordinal(only) == Some(0)
        && v.nodes.iter().any(|n| &n.id == only && n.zone.is_none())
        && let Some(machine) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(only.as_str()))
            .and_then(|p| p.spec.as_ref()?.node_name.clone())
    {
        d.zone_to_place = machine_zone(&client, &machine, &dc.spec.zone_label).await?;
    }
    let observed = Observed {
        statefulset: sts.as_ref().map(observe::statefulset),
        pods: pod_list,
        claims: observe::claims(&names, &claims),
        data_plane,
    };
    let spec = decide::Spec {
        replicas: dc.spec.replicas,
        image: dc.spec.image.clone(),
        keep_claims: dc.spec.volume_policy == VolumePolicy::Keep,
        abort_after_secs: dc.spec.abort_after_secs,
        upgrade_paused: dc.spec.upgrade.paused,
    };
    let decision = decide::decide(&spec, &observed);
    let quorums: Vec<budget::Quorum> = view
        .as_ref()
        .map(|(_, v)| v.replication.iter().map(|r| (r.n, r.r, r.w)).collect())
        .unwrap_or_default();
    let max_unavailable = budget::max_unavailable(&quorums);

    // 4. The budget follows the tables.
    let pdb_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    if observed.statefulset.is_some() && !matches!(decision.action, Some(Action::Apply { .. })) {
        let current = pdb_api.get_opt(&names.cluster).await?;
        let budget_now = current
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.max_unavailable.clone());
        let wanted = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
            i32::try_from(max_unavailable).unwrap_or(1),
        );
        if budget_now.as_ref() != Some(&wanted) {
            apply(
                &pdb_api,
                &names.cluster,
                &children::pdb(dc, max_unavailable)?,
            )
            .await?;
        }
    }

    // 5. The action.
    let leader = view
        .as_ref()
        .map(|(k, _)| ctx.locator.node_url(&names, &ns, *k));
    if let Some(action) = &decision.action {
        let (reason, note) = act(
            dc,
            ctx,
            &names,
            &ns,
            action,
            &dp,
            leader.as_deref(),
            max_unavailable,
        )
        .await?;
        ctx.metrics.action(reason);
        event(dc, ctx, &ns, reason, &note).await?;
    }

    // 6. The autoscaler, on a settled cluster; it changes spec.replicas,
    //    which the next pass acts on.
    let settled = decision.action.is_none() && !decision.progressing.status;
    let autoscale = match (&dc.spec.autoscale, &view) {
        (Some(spec), Some((_, v))) if settled => {
            Some(autoscale(dc, ctx, &ns, &names, spec, v, &dp).await?)
        }
        _ => None,
    };

    // 7. The status.
    let mut status = status(
        dc,
        &observed,
        view.as_ref().map(|(_, v)| v),
        &decision,
        (ctx.now)(),
    );
    status.autoscale = autoscale.or_else(|| dc.status.as_ref().and_then(|s| s.autoscale.clone()));
    let api: Api<DynoCluster> = Api::namespaced(client, &ns);
    api.patch_status(
        &dc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;

    // 8. The control plane learns of the cluster once it serves.
    let mut registered = true;
    if let Some(r) = &ctx.registrar
        && decision.available.status
    {
        let name = crate::register::cluster_name(&dc.name_any(), &ns);
        let url = ctx.locator.service_url(&names, &ns);
        match r.ensure(&name, std::slice::from_ref(&url), &token).await {
            Ok(true) => {
                ctx.metrics.action("Registered");
                let note = format!("registered with the control plane as {name} at {url}");
                event(dc, ctx, &ns, "Registered", &note).await?;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(cluster = name, error = %e, "registration with the control plane failed");
                ctx.metrics.action("RegistrationFailed");
                registered = false;
            }
        }
    }
    let busy = !settled || !registered;
    Ok(Outcome {
        decision,
        requeue: if busy { BUSY_REQUEUE } else { IDLE_REQUEUE },
    })
}

/// One autoscaler step: measures the load, and patches `spec.replicas`
/// when the autoscaler decides.
async fn autoscale(
    dc: &DynoCluster,
    ctx: &Context,
    ns: &str,
    names: &Names,
    spec: &crate::crd::AutoscaleSpec,
    view: &ClusterView,
    dp: &DataPlane,
) -> Result<crate::crd::AutoscaleStatus, Error> {
    use crate::autoscale::{Load, Policy, parse_bytes, requests_served, step};
    let now = (ctx.now)();
    let mut samples = Vec::new();
    for id in &view.ring.members {
        let Some(k) = names.ordinal(id) else { continue };
        let url = ctx.locator.node_url(names, ns, k);
        if let Ok(text) = dp.metrics(&url).await {
            samples.push((id.clone(), requests_served(&text)));
        }
    }
    let bytes: u64 = view
        .nodes
        .iter()
        .filter(|n| view.ring.members.contains(&n.id))
        .filter_map(|n| n.bytes)
        .sum();
    let bytes_target = spec.bytes_per_node.as_deref().map(parse_bytes);
    let policy = Policy {
        min: spec.min,
        max: spec.max,
        ops_per_sec_per_node: spec.ops_per_sec_per_node.map(|x| x as f64),
        bytes_per_node: bytes_target.flatten(),
        window_secs: spec.stabilization_secs,
    };
    let key = format!("{ns}/{}", dc.name_any());
    let (ops, verdict) = ctx.autoscale.with(&key, |memory, rate| {
        let ops = rate.sample(&samples, now);
        let load = Load {
            ops_per_sec: ops,
            bytes: bytes as f64,
        };
        (ops, step(&policy, dc.spec.replicas, &load, memory, now))
    });
    let mut reason = verdict.reason.clone();
    if let Some(None) = bytes_target {
        reason = format!("bytesPerNode is not a quantity (such as 200Gi), ignored; {reason}");
    }
    if let Some(n) = verdict.decision
        && n != dc.spec.replicas
    {
        let api: Api<DynoCluster> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(
            &dc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": n } })),
        )
        .await?;
        ctx.metrics.action("Autoscaled");
        event(dc, ctx, ns, "Autoscaled", &verdict.reason).await?;
    }
    Ok(crate::crd::AutoscaleStatus {
        ops_per_sec: ops.map(|x| x.round() as u64),
        bytes,
        recommendation: verdict.recommendation,
        reason,
    })
}

fn secret_token(s: &Secret) -> Option<String> {
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(TOKEN_KEY)) {
        return String::from_utf8(v.0.clone())
            .ok()
            .map(|t| t.trim().to_owned());
    }
    s.string_data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .map(|t| t.trim().to_owned())
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(drop)
}

/// Takes `action`; returns the Event's reason and note.
#[allow(clippy::too_many_arguments)]
async fn act(
    dc: &DynoCluster,
    ctx: &Context,
    names: &Names,
    ns: &str,
    action: &Action,
    dp: &DataPlane,
    leader: Option<&str>,
    max_unavailable: u32,
) -> Result<(&'static str, String), Error> {
    let client = ctx.client.clone();
    let leader = || {
        leader.ok_or(DataPlaneError::Refused {
            url: String::new(),
            status: 503,
            body: "no node of the cluster answers".into(),
        })
    };
    Ok(match action {
        Action::Apply { replicas, image } => {
            let c = children::render(dc, *replicas, image, max_unavailable)?;
            let svc: Api<Service> = Api::namespaced(client.clone(), ns);
            apply(&svc, &names.peers, &c.peers).await?;
            apply(&svc, &names.cluster, &c.client).await?;
            let pdb: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
            apply(&pdb, &names.cluster, &c.pdb).await?;
            let sts: Api<StatefulSet> = Api::namespaced(client, ns);
            apply(&sts, &names.cluster, &c.statefulset).await?;
            (
                "Applied",
                format!(
                    "StatefulSet {} at {replicas} replicas of {image}",
                    names.cluster
                ),
            )
        }
        Action::Join(k) => {
            let zone = zone_of(&client, ns, &names.pod(*k), &dc.spec.zone_label).await?;
            dp.join(leader()?, &names.pod(*k), zone.as_deref()).await?;
            (
                "Joining",
                format!(
                    "joining node {} (zone {})",
                    names.pod(*k),
                    zone.as_deref().unwrap_or("none")
                ),
            )
        }
        Action::SetZone(k, zone) => {
            dp.set_zone(leader()?, &names.pod(*k), zone).await?;
            (
                "ZonePlaced",
                format!("placed zone {zone} on node {}", names.pod(*k)),
            )
        }
        Action::Decommission(k) => {
            dp.decommission(leader()?, &names.pod(*k)).await?;
            (
                "Decommissioning",
                format!("decommissioning node {}", names.pod(*k)),
            )
        }
        Action::Abort { reason } => {
            dp.abort(leader()?).await?;
            ("Aborted", format!("aborted the ring change: {reason}"))
        }
        Action::Restart(k) => {
            let pods: Api<Pod> = Api::namespaced(client, ns);
            pods.delete(&names.pod(*k), &DeleteParams::default())
                .await?;
            (
                "Restarting",
                format!("restarting pod {} on {}", names.pod(*k), dc.spec.image),
            )
        }
        Action::DeleteClaim(k) => {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, ns);
            claims
                .delete(&names.claim(*k), &DeleteParams::default())
                .await?;
            (
                "ClaimDeleted",
                format!("deleted volume claim {}", names.claim(*k)),
            )
        }
    })
}

/// The zone of the machine pod `pod` runs on, from its `label`.
async fn zone_of(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    label: &str,
) -> Result<Option<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Some(node_name) = pods
        .get_opt(pod)
        .await?
        .and_then(|p| p.spec)
        .and_then(|s| s.node_name)
    else {
        return Ok(None);
    };
    machine_zone(client, &node_name, label).await
}

/// The zone of machine `node_name`, from its `label`.
async fn machine_zone(
    client: &kube::Client,
    node_name: &str,
    label: &str,
) -> Result<Option<String>, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .get_opt(node_name)
        .await?
        .and_then(|n| n.metadata.labels)
        .and_then(|mut l| l.remove(label)))
}

async fn event(
    dc: &DynoCluster,
    ctx: &Context,
    ns: &str,
    reason: &str,
    note: &str,
) -> Result<(), kube::Error> {
    let now = (ctx.now)();
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", dc.name_any())),
            namespace: Some(ns.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(reason.to_owned()),
        reason: Some(reason.to_owned()),
        note: Some(note.chars().take(1000).collect()),
        type_: Some("Normal".into()),
        reporting_controller: Some("dyno.dev/operator".into()),
        reporting_instance: Some(FIELD_MANAGER.into()),
        regarding: Some(ObjectReference {
            api_version: Some(DynoCluster::api_version(&()).into_owned()),
            kind: Some(DynoCluster::kind(&()).into_owned()),
            name: Some(dc.name_any()),
            namespace: Some(ns.to_owned()),
            uid: dc.uid(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), ns);
    api.create(&PostParams::default(), &ev).await.map(drop)
}

/// The status a pass reports.
pub fn status(
    dc: &DynoCluster,
    o: &Observed,
    view: Option<&ClusterView>,
    d: &Decision,
    now: Timestamp,
) -> DynoClusterStatus {
    let names = Names::of(dc);
    let previous = dc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, c: &decide::Condition| {
        let status = if c.status { "True" } else { "False" };
        // The transition time moves only when the status does.
        let since = previous
            .iter()
            .find(|p| p.type_ == type_ && p.status == status)
            .map_or(Time(now), |p| p.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: c.reason.to_owned(),
            message: c.message.clone(),
            observed_generation: dc.metadata.generation,
            last_transition_time: since,
        }
    };
    let dp = o.data_plane.as_ref();
    let ready: BTreeSet<u32> = o
        .pods
        .iter()
        .filter(|p| p.ready)
        .map(|p| p.ordinal)
        .collect();
    let up = |k: &u32| dp.is_some_and(|d| d.nodes.get(k) == Some(&decide::NodeState::Up));
    DynoClusterStatus {
        observed_generation: dc.metadata.generation,
        replicas: dp.map_or(0, |d| d.members.len() as u32),
        ready_nodes: ready.iter().filter(|k| up(k)).count() as u32,
        selector: children::selector_string(dc),
        ring_epoch: view.map_or(0, |v| v.ring.epoch),
        members: view
            .map(|v| {
                v.nodes
                    .iter()
                    .filter(|n| names.ordinal(&n.id).is_some())
                    .map(|n| MemberStatus {
                        name: n.id.clone(),
                        state: n.status.clone(),
                        zone: n.zone.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        change: dp.and_then(|d| d.change.as_ref()).map(|c| ChangeStatus {
            joining: c.joining.iter().map(|k| names.pod(*k)).collect(),
            leaving: c.leaving.iter().map(|k| names.pod(*k)).collect(),
            partitions_done: c.progress.0,
            partitions_total: c.progress.1,
        }),
        conditions: vec![
            condition("Available", &d.available),
            condition("Progressing", &d.progressing),
            condition("Degraded", &d.degraded),
        ],
        autoscale: None,
    }
}
