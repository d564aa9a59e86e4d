//! Reconcile passes against a mocked Kubernetes API server (tower-test)
//! and a fake data plane (a small HTTP server answering the nodes' admin
//! API): each test asserts the exact requests a pass makes, in order.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use dyno_operator::children::Names;
use dyno_operator::crd::{DynoCluster, DynoClusterSpec};
use dyno_operator::dataplane::Locator;
use dyno_operator::reconcile::{Context, reconcile};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// The fake data plane: node `k` answers under `/n{k}`.
#[derive(Debug, Clone)]
struct FakeNodes {
    base: String,
}

impl Locator for FakeNodes {
    fn node_url(&self, _names: &Names, _namespace: &str, k: u32) -> String {
        format!("{}/n{k}", self.base)
    }
}

#[derive(Debug, Default)]
struct NodesState {
    view: Value,
    hints: Value,
    /// Each node's `/metrics` text.
    metrics: String,
    calls: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<NodesState>>;

async fn fake_nodes(view: Value, hints: Value) -> (FakeNodes, Shared) {
    let state: Shared = Arc::new(Mutex::new(NodesState {
        view,
        hints,
        metrics: String::new(),
        calls: Vec::new(),
    }));
    async fn metrics(State(s): State<Shared>, Path(node): Path<String>) -> String {
        let mut s = s.lock().expect("lock");
        s.calls.push((format!("GET /{node}/metrics"), Value::Null));
        s.metrics.clone()
    }
    async fn cluster(State(s): State<Shared>, Path(node): Path<String>) -> axum::Json<Value> {
        let mut s = s.lock().expect("lock");
        s.calls
            .push((format!("GET /{node}/admin/v1/cluster"), Value::Null));
        axum::Json(s.view.clone())
    }
    async fn hint_list(State(s): State<Shared>, Path(node): Path<String>) -> axum::Json<Value> {
        let mut s = s.lock().expect("lock");
        s.calls
            .push((format!("GET /{node}/admin/v1/hints"), Value::Null));
        axum::Json(json!({ "targets": s.hints }))
    }
    async fn change(
        State(s): State<Shared>,
        Path((node, action)): Path<(String, String)>,
        body: axum::Json<Value>,
    ) -> StatusCode {
        s.lock()
            .expect("lock")
            .calls
            .push((format!("POST /{node}/admin/v1/cluster/{action}"), body.0));
        StatusCode::ACCEPTED
    }
    let app = axum::Router::new()
        .route("/{node}/admin/v1/cluster", get(cluster))
        .route("/{node}/admin/v1/hints", get(hint_list))
        .route("/{node}/metrics", get(metrics))
        .route("/{node}/admin/v1/cluster/{action}", post(change))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        FakeNodes {
            base: format!("http://{addr}"),
        },
        state,
    )
}

fn cluster(replicas: u32) -> DynoCluster {
    let spec: DynoClusterSpec = serde_json::from_value(json!({
        "replicas": replicas,
        "image": "dyno:1",
        "storage": { "size": "1Gi" },
    }))
    .expect("spec");
    let mut dc = DynoCluster::new("prod", spec);
    dc.metadata.namespace = Some("db".into());
    dc.metadata.uid = Some("uid-1".into());
    dc.metadata.generation = Some(2);
    dc
}

fn context(client: kube::Client, locator: FakeNodes) -> Context {
    Context {
        client,
        locator: Arc::new(locator),
        metrics: Arc::default(),
        now: || "2026-12-06T12:00:00Z".parse().expect("time"),
        secret_bytes: || Some("s3cret".to_owned()),
        registrar: None,
        autoscale: Arc::default(),
    }
}

const SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fcomponent%3Dnode%2Capp.kubernetes.io%2Finstance%3Dprod%2Capp.kubernetes.io%2Fname%3Ddyno";

/// Takes the next request, checks its method and path (and query), and
/// answers `reply` with `status`; returns the request's JSON body.
async fn expect(
    handle: &mut Handle,
    method: &str,
    path_and_query: &str,
    status: u16,
    reply: Value,
) -> Value {
    let (req, send) = handle
        .next_request()
        .await
        .unwrap_or_else(|| panic!("no request; expected {method} {path_and_query}"));
    let got = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default()
    );
    assert_eq!(got, format!("{method} {path_and_query}"));
    let bytes = req.into_body().collect().await.expect("body").to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&reply).expect("json")))
        .expect("response");
    send.send_response(resp);
    body
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404 })
}

fn list(kind: &str, items: Value) -> Value {
    json!({ "kind": kind, "apiVersion": "v1", "metadata": {}, "items": items })
}

fn pod(k: u32, image: &str, node: &str) -> Value {
    json!({
        "metadata": { "name": format!("prod-{k}"), "namespace": "db",
                      "creationTimestamp": "2026-12-06T11:00:00Z" },
        "spec": { "nodeName": node, "containers": [ { "name": "dyno", "image": image } ] },
        "status": { "conditions": [ { "type": "Ready", "status": "True",
                                      "lastTransitionTime": "2026-12-06T11:01:00Z" } ] },
    })
}

fn statefulset(replicas: u32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "prod", "namespace": "db" },
        "spec": { "replicas": replicas, "serviceName": "prod-peers", "selector": {},
                  "template": { "spec": { "containers": [ { "name": "dyno", "image": image } ] } } },
    })
}

fn secret() -> Value {
    // base64("tok") = "dG9r"
    json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "prod-admin" },
            "data": { "token": "dG9r" } })
}

fn condition<'a>(status_patch: &'a Value, type_: &str) -> &'a Value {
    status_patch["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .expect("condition")
}

/// The reads a pass makes of an existing four-pod cluster on `dyno:1`:
/// the admin Secret, the StatefulSet, `pods`, no claims, and a budget of
/// `budget`.
async fn observe_existing(h: &mut Handle, pods: Vec<Value>, budget: u32) {
    observe_children(h, 4, pods).await;
    observe_budget(h, budget).await;
}

/// The Kubernetes reads that open a pass on an existing cluster: the admin
/// Secret, a StatefulSet of `replicas` on `dyno:1`, `pods`, no claims.
async fn observe_children(h: &mut Handle, replicas: u32, pods: Vec<Value>) {
    expect(
        h,
        "GET",
        "/api/v1/namespaces/db/secrets/prod-admin",
        200,
        secret(),
    )
    .await;
    expect(
        h,
        "GET",
        "/apis/apps/v1/namespaces/db/statefulsets/prod",
        200,
        statefulset(replicas, "dyno:1"),
    )
    .await;
    expect(
        h,
        "GET",
        &format!("/api/v1/namespaces/db/pods?&{SELECTOR}"),
        200,
        list("PodList", json!(pods)),
    )
    .await;
    expect(
        h,
        "GET",
        &format!("/api/v1/namespaces/db/persistentvolumeclaims?&{SELECTOR}"),
        200,
        list("PersistentVolumeClaimList", json!([])),
    )
    .await;
}

/// The read of the PodDisruptionBudget in place, allowing `budget`.
async fn observe_budget(h: &mut Handle, budget: u32) {
    expect(
        h,
        "GET",
        "/apis/policy/v1/namespaces/db/poddisruptionbudgets/prod",
        200,
        json!({ "metadata": { "name": "prod" }, "spec": { "maxUnavailable": budget } }),
    )
    .await;
}

/// The POSTs the fake data plane received, in order.
fn posts(nodes: &Shared) -> Vec<(String, Value)> {
    nodes
        .lock()
        .expect("lock")
        .calls
        .iter()
        .filter(|(c, _)| c.starts_with("POST"))
        .cloned()
        .collect()
}

/// The end of a pass that acted: its Event, then the status patch.
/// Returns both bodies.
async fn event_and_status(h: &mut Handle) -> (Value, Value) {
    let ev = expect(
        h,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/db/events?",
        201,
        json!({}),
    )
    .await;
    let st = expect(
        h,
        "PATCH",
        "/apis/dyno.dev/v1alpha1/namespaces/db/dynoclusters/prod/status?",
        200,
        serde_json::to_value(cluster(3)).expect("json"),
    )
    .await;
    (ev, st)
}

/// A new resource: the admin Secret is made, then the Services, the
/// budget and the StatefulSet are applied (server-side, as the operator's
/// field manager), an Event is recorded and the status says Creating.
#[tokio::test]
async fn a_new_cluster_gets_its_secret_and_children() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "db");
    let (nodes, calls) = fake_nodes(json!({}), json!([])).await;
    let ctx = context(client, nodes);
    let dc = cluster(3);
    let pass = tokio::spawn(async move { reconcile(&dc, &ctx).await });

    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/db/secrets/prod-admin",
        404,
        not_found("secrets", "prod-admin"),
    )
    .await;
    let created = expect(
        &mut h,
        "POST",
        "/api/v1/namespaces/db/secrets?",
        201,
        secret(),
    )
    .await;
    assert_eq!(created["stringData"]["token"], "s3cret");
    assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    expect(
        &mut h,
        "GET",
        "/apis/apps/v1/namespaces/db/statefulsets/prod",
        404,
        not_found("statefulsets", "prod"),
    )
    .await;
    expect(
        &mut h,
        "GET",
        &format!("/api/v1/namespaces/db/pods?&{SELECTOR}"),
        200,
        list("PodList", json!([])),
    )
    .await;
    expect(
        &mut h,
        "GET",
        &format!("/api/v1/namespaces/db/persistentvolumeclaims?&{SELECTOR}"),
        200,
        list("PersistentVolumeClaimList", json!([])),
    )
    .await;
    let apply = "force=true&fieldManager=dyno-operator";
    let peers = expect(
        &mut h,
        "PATCH",
        &format!("/api/v1/namespaces/db/services/prod-peers?&{apply}"),
        200,
        json!({}),
    )
    .await;
    assert_eq!(peers["spec"]["clusterIP"], "None");
    expect(
        &mut h,
        "PATCH",
        &format!("/api/v1/namespaces/db/services/prod?&{apply}"),
        200,
        json!({}),
    )
    .await;
    let pdb = expect(
        &mut h,
        "PATCH",
        &format!("/apis/policy/v1/namespaces/db/poddisruptionbudgets/prod?&{apply}"),
        200,
        json!({}),
    )
    .await;
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "no tables yet: one at a time"
    );
    let sts = expect(
        &mut h,
        "PATCH",
        &format!("/apis/apps/v1/namespaces/db/statefulsets/prod?&{apply}"),
        200,
        json!({}),
    )
    .await;
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "dyno:1"
    );
    let (ev, st) = event_and_status(&mut h).await;
    assert_eq!(ev["reason"], "Applied");
    assert_eq!(ev["regarding"]["kind"], "DynoCluster");
    assert_eq!(condition(&st, "Available")["reason"], "Creating");
    assert_eq!(condition(&st, "Progressing")["status"], "True");
    assert_eq!(st["status"]["observedGeneration"], 2);
    assert_eq!(
        st["status"]["selector"],
        "app.kubernetes.io/component=node,app.kubernetes.io/instance=prod,app.kubernetes.io/name=dyno"
    );
    let out = pass.await.expect("join").expect("pass");
    assert_eq!(out.requeue, dyno_operator::reconcile::BUSY_REQUEUE);
    assert!(
        calls.lock().expect("lock").calls.is_empty(),
        "no StatefulSet: the data plane is not asked"
    );
}

/// A fourth pod is Ready and in gossip as standby: the pass re-applies the
/// budget the tables need, reads the pod's machine zone and asks the data
/// plane to join it there.
#[tokio::test]
async fn a_ready_standby_pod_is_joined_with_its_zone() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "db");
    let view = json!({
        "ring": { "epoch": 4, "members": ["prod-0", "prod-1", "prod-2"] },
        "nodes": [
            { "id": "prod-0", "status": "up", "zone": "z-a" },
            { "id": "prod-1", "status": "up", "zone": "z-b" },
            { "id": "prod-2", "status": "up", "zone": "z-c" },
            { "id": "prod-3", "status": "standby" },
        ],
        "replication": [ { "n": 3, "r": 2, "w": 2, "tables": 2 } ],
    });
    let (nodes, calls) = fake_nodes(view, json!([])).await;
    let ctx = context(client, nodes);
    let dc = cluster(4);
    let pass = tokio::spawn(async move { reconcile(&dc, &ctx).await });

    let pods: Vec<Value> = (0..4)
        .map(|k| pod(k, "dyno:1", &format!("machine-{k}")))
        .collect();
    // The budget in place allows 2; tables with N=3, R=W=2 allow 1.
    observe_existing(&mut h, pods, 2).await;
    let pdb = expect(&mut h, "PATCH", "/apis/policy/v1/namespaces/db/poddisruptionbudgets/prod?&force=true&fieldManager=dyno-operator", 200, json!({})).await;
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/db/pods/prod-3",
        200,
        pod(3, "dyno:1", "machine-3"),
    )
    .await;
    expect(&mut h, "GET", "/api/v1/nodes/machine-3", 200,
        json!({ "metadata": { "name": "machine-3", "labels": { "topology.kubernetes.io/zone": "z-b" } } })).await;
    let (ev, st) = event_and_status(&mut h).await;
    assert_eq!(ev["reason"], "Joining");
    assert_eq!(st["status"]["replicas"], 3);
    assert_eq!(st["status"]["readyNodes"], 3);
    assert_eq!(st["status"]["ringEpoch"], 4);
    assert_eq!(st["status"]["members"][0]["zone"], "z-a");
    pass.await.expect("join").expect("pass");

    let posts = posts(&calls);
    let calls = calls.lock().expect("lock").calls.clone();
    assert_eq!(posts.len(), 1, "{calls:?}");
    assert_eq!(posts[0].0, "POST /n0/admin/v1/cluster/join");
    assert_eq!(posts[0].1, json!({ "node": "prod-3", "zone": "z-b" }));
    // The view came from node 0; hints were asked of every pod.
    assert_eq!(
        calls
            .iter()
            .filter(|(c, _)| c.ends_with("/cluster"))
            .count(),
        1
    );
    assert_eq!(
        calls.iter().filter(|(c, _)| c.ends_with("/hints")).count(),
        4
    );
}

/// Scaling down: every member up, one too many: the highest is
/// decommissioned through the data plane; the StatefulSet is not touched.
#[tokio::test]
async fn scale_down_decommissions_the_highest_node_first() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "db");
    let view = json!({
        "ring": { "epoch": 5, "members": ["prod-0", "prod-1", "prod-2", "prod-3"] },
        "nodes": (0..4).map(|k| json!({ "id": format!("prod-{k}"), "status": "up" })).collect::<Vec<_>>(),
        "replication": [ { "n": 3, "r": 2, "w": 2, "tables": 1 } ],
    });
    let (nodes, calls) = fake_nodes(view, json!([])).await;
    let ctx = context(client, nodes);
    let dc = cluster(3);
    let pass = tokio::spawn(async move { reconcile(&dc, &ctx).await });

    let pods: Vec<Value> = (0..4).map(|k| pod(k, "dyno:1", "m")).collect();
    observe_existing(&mut h, pods, 1).await;
    let (ev, _) = event_and_status(&mut h).await;
    assert_eq!(ev["reason"], "Decommissioning");
    pass.await.expect("join").expect("pass");
    let posts = posts(&calls);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, "POST /n0/admin/v1/cluster/decommission");
    assert_eq!(posts[0].1, json!({ "node": "prod-3" }));
}

/// The test clock of [`autoscaling_patches_the_replicas_the_load_asks_for`].
static NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1_800_000_000);

fn test_clock() -> dyno_operator::k8s_openapi::jiff::Timestamp {
    dyno_operator::k8s_openapi::jiff::Timestamp::from_second(
        NOW.load(std::sync::atomic::Ordering::SeqCst),
    )
    .expect("time")
}

/// With `autoscale`, a settled cluster's members are asked for their
/// `/metrics`; the first pass only samples, the second has a rate, and the
/// load over the target (window 0) patches `spec.replicas`, clamped to
/// `max`, with an Event; the status shows what the autoscaler saw.
#[tokio::test]
async fn autoscaling_patches_the_replicas_the_load_asks_for() {
    use std::sync::atomic::Ordering;
    let view = json!({
        "ring": { "epoch": 5, "members": ["prod-0", "prod-1", "prod-2", "prod-3"] },
        "nodes": (0..4).map(|k| json!({ "id": format!("prod-{k}"), "status": "up", "bytes": 1000 }))
            .collect::<Vec<_>>(),
        "replication": [ { "n": 3, "r": 2, "w": 2, "tables": 1 } ],
    });
    let (nodes, calls) = fake_nodes(view, json!([])).await;
    let count = |n: u64| {
        format!(
            "dyno_request_duration_seconds_count{{op=\"get\",table=\"t\"}} {n}\n\
             dyno_request_duration_seconds_sum{{op=\"get\",table=\"t\"}} 1.5\n"
        )
    };
    let mut dc = cluster(4);
    dc.spec.autoscale = Some(
        serde_json::from_value(json!({
            "min": 3, "max": 8, "opsPerSecPerNode": 25, "stabilizationSecs": 0
        }))
        .expect("autoscale"),
    );
    let pods = || -> Vec<Value> { (0..4).map(|k| pod(k, "dyno:1", "m")).collect() };

    // Pass 1: one sample, no rate yet.
    calls.lock().expect("lock").metrics = count(1000);
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context {
        now: test_clock,
        ..context(kube::Client::new(svc, "db"), nodes.clone())
    };
    let trackers = Arc::clone(&ctx.autoscale);
    let d = dc.clone();
    let pass = tokio::spawn(async move { reconcile(&d, &ctx).await });
    observe_existing(&mut h, pods(), 1).await;
    let st = expect(
        &mut h,
        "PATCH",
        "/apis/dyno.dev/v1alpha1/namespaces/db/dynoclusters/prod/status?",
        200,
        serde_json::to_value(cluster(4)).expect("json"),
    )
    .await;
    pass.await.expect("join").expect("pass");
    let a = &st["status"]["autoscale"];
    assert_eq!(a["opsPerSec"], Value::Null, "{a}");
    assert_eq!(
        (a["bytes"].as_u64(), a["recommendation"].as_u64()),
        (Some(4000), Some(4)),
        "{a}"
    );
    let scraped = calls
        .lock()
        .expect("lock")
        .calls
        .iter()
        .filter(|(c, _)| c.ends_with("/metrics"))
        .count();
    assert_eq!(scraped, 4, "every member's metrics");

    // Pass 2, ten seconds later: 1,000 more requests on each node is
    // 400 ops/s, four times the 100 four nodes are meant to carry at 25
    // each: 16 nodes, clamped to 8.
    NOW.fetch_add(10, Ordering::SeqCst);
    calls.lock().expect("lock").metrics = count(2000);
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context {
        now: test_clock,
        autoscale: trackers,
        ..context(kube::Client::new(svc, "db"), nodes)
    };
    let pass = tokio::spawn(async move { reconcile(&dc, &ctx).await });
    observe_existing(&mut h, pods(), 1).await;
    let patch = expect(
        &mut h,
        "PATCH",
        "/apis/dyno.dev/v1alpha1/namespaces/db/dynoclusters/prod?",
        200,
        serde_json::to_value(cluster(8)).expect("json"),
    )
    .await;
    assert_eq!(patch, json!({ "spec": { "replicas": 8 } }));
    let (ev, st) = event_and_status(&mut h).await;
    assert_eq!(ev["reason"], "Autoscaled");
    assert!(
        ev["note"]
            .as_str()
            .unwrap_or_default()
            .contains("scaling from 4 to 8"),
        "{ev}"
    );
    let a = &st["status"]["autoscale"];
    assert_eq!(
        (a["opsPerSec"].as_u64(), a["recommendation"].as_u64()),
        (Some(400), Some(8)),
        "{a}"
    );
    pass.await.expect("join").expect("pass");
}

/// Node 0 formed the ring alone and without a zone: before a second node
/// joins, the pass reads its machine's zone label and places it through
/// the data plane.
#[tokio::test]
async fn the_first_nodes_machine_zone_is_placed_on_it() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "db");
    let view = json!({
        "ring": { "epoch": 1, "members": ["prod-0"] },
        "nodes": [
            { "id": "prod-0", "status": "up" },
            { "id": "prod-1", "status": "standby" },
            { "id": "prod-2", "status": "standby" },
        ],
    });
    let (nodes, calls) = fake_nodes(view, json!([])).await;
    let ctx = context(client, nodes);
    let dc = cluster(3);
    let pass = tokio::spawn(async move { reconcile(&dc, &ctx).await });

    let pods: Vec<Value> = (0..3)
        .map(|k| pod(k, "dyno:1", &format!("machine-{k}")))
        .collect();
    observe_children(&mut h, 3, pods).await;
    expect(&mut h, "GET", "/api/v1/nodes/machine-0", 200,
        json!({ "metadata": { "name": "machine-0", "labels": { "topology.kubernetes.io/zone": "z-a" } } })).await;
    observe_budget(&mut h, 1).await;
    let (ev, _) = event_and_status(&mut h).await;
    assert_eq!(ev["reason"], "ZonePlaced");
    pass.await.expect("join").expect("pass");
    let posts = posts(&calls);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, "POST /n0/admin/v1/cluster/zone");
    assert_eq!(posts[0].1, json!({ "node": "prod-0", "zone": "z-a" }));
}

/// A deleted resource under `volumePolicy: delete`: the finalizer deletes
/// every node's volume claim, then lets the resource go.
#[tokio::test]
async fn deletion_deletes_the_claims_only_under_the_delete_policy() {
    for keep in [false, true] {
        let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
        let (nodes, _) = fake_nodes(json!({}), json!([])).await;
        let ctx = Arc::new(context(kube::Client::new(svc, "db"), nodes));
        let mut dc = cluster(3);
        if keep {
            dc.spec.volume_policy = dyno_operator::crd::VolumePolicy::Keep;
        }
        dc.metadata.finalizers = Some(vec!["dyno.dev/volumes".into()]);
        dc.metadata.deletion_timestamp = Some(
            dyno_operator::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-06T12:00:00Z".parse().expect("time"),
            ),
        );
        let pass = tokio::spawn(dyno_operator::controller::pass(Arc::new(dc), ctx));
        if !keep {
            let claims: Vec<Value> = (0..2)
                .map(|k| json!({ "metadata": { "name": format!("data-prod-{k}"), "namespace": "db" } }))
                .collect();
            expect(
                &mut h,
                "GET",
                &format!("/api/v1/namespaces/db/persistentvolumeclaims?&{SELECTOR}"),
                200,
                list("PersistentVolumeClaimList", json!(claims)),
            )
            .await;
            for k in 0..2 {
                expect(
                    &mut h,
                    "DELETE",
                    &format!("/api/v1/namespaces/db/persistentvolumeclaims/data-prod-{k}?"),
                    200,
                    json!({ "metadata": { "name": format!("data-prod-{k}") } }),
                )
                .await;
            }
        }
        let patch = expect(
            &mut h,
            "PATCH",
            "/apis/dyno.dev/v1alpha1/namespaces/db/dynoclusters/prod?",
            200,
            serde_json::to_value(cluster(3)).expect("json"),
        )
        .await;
        assert!(
            patch.to_string().contains("/metadata/finalizers"),
            "the finalizer is removed: {patch}"
        );
        pass.await.expect("join").expect("pass");
    }
}
