//! The operator end to end, with the test playing Kubernetes.
//!
//! There is no API server on these machines, so the test plays two parts:
//!
//! * **the API server**: an in-memory object store behind kube's client
//!   (GET, list by label selector, create, server-side apply, status merge
//!   patch, delete), holding the `DynoCluster` and every child;
//! * **the kubelet**: it reads the StatefulSet the operator applied and
//!   starts or stops real `dyno node` processes for its pods (with the
//!   partition count and durability from the pod template's start script,
//!   and the credential from the operator's Secret), reports each pod
//!   Ready when its node answers its health check, makes a volume claim per
//!   pod and wipes a node's data when its claim is deleted.
//!
//! Then a new image rolls out, one pod restart at a time, with no ring
//! change and the writer still writing.
//!
//! The operator runs as `reconcile` passes. Every machine is in one zone,
//! which node 0 gets from the operator and the others with their joins. The cluster is scaled 3 → 5 → 3
//! by changing `spec.replicas` while a writer keeps writing; afterwards
//! every acknowledged write must read back, and each ring change must have
//! moved exactly the planner's minimum of partition replicas (what a
//! joiner ends up holding, what a leaver held).
//!
//! A stand-in control plane checks that the operator registers the
//! cluster once it serves, and only once.
//!
//! After each pass that begins a ring change, the test waits for the data
//! plane to commit it before the next pass, so that it sees the ring
//! before and after every change and can count what moved.

#[allow(dead_code)] // shared with the other system tests
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use dyno_operator::children::Names;
use dyno_operator::crd::{DynoCluster, DynoClusterSpec};
use dyno_operator::dataplane::Locator;
use dyno_operator::decide::Action;
use dyno_operator::k8s_openapi::jiff::Timestamp;
use dyno_operator::kube;
use dyno_operator::reconcile::{Context, reconcile};
use dyno_operator::register::{ControlPlane, Registrar};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use support::{Listeners, spawn_dyno};

const NAME: &str = "dyno";
/// Every machine's zone.
const ZONE: &str = "zone-a";
/// More pods than the test ever runs.
const MAX_PODS: u32 = 8;
const NAMESPACE: &str = "db";

// ------------------------------------------------------------ API server

/// The fake API server's objects, by (resource plural, name). One
/// namespace, so the namespace is not part of the key.
#[derive(Debug, Default)]
struct Objects {
    by_key: BTreeMap<(String, String), Value>,
    version: u64,
}

type Store = Arc<Mutex<Objects>>;

impl Objects {
    fn get(&self, plural: &str, name: &str) -> Option<&Value> {
        self.by_key.get(&(plural.to_owned(), name.to_owned()))
    }

    fn put(&mut self, plural: &str, name: &str, mut obj: Value) -> Value {
        // As the API server does: a Secret's stringData joins its data.
        if let Some(Value::Object(strings)) =
            obj.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            for (k, v) in strings {
                obj["data"][k] = json!(B64.encode(v.as_str().unwrap_or_default()));
            }
        }
        self.version += 1;
        obj["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.by_key
            .insert((plural.to_owned(), name.to_owned()), obj.clone());
        obj
    }

    fn remove(&mut self, plural: &str, name: &str) -> Option<Value> {
        self.by_key.remove(&(plural.to_owned(), name.to_owned()))
    }

    fn list(&self, plural: &str) -> impl Iterator<Item = &Value> {
        self.by_key
            .iter()
            .filter(move |((p, _), _)| p == plural)
            .map(|(_, v)| v)
    }
}

fn now_rfc3339() -> String {
    Timestamp::now().to_string()
}

/// `%XX` escapes of a query string value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `obj`'s labels match every `k=v` of `selector`.
fn selected(obj: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    target.as_object_mut().map(|t| t.remove(k));
                } else {
                    merge(&mut target[k], v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn status_reply(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    reply(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

/// Serves one request from the store. Paths are
/// `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` or the same under
/// `/apis/GROUP/VERSION`.
async fn serve(store: Store, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest: &[&str] = match segs.first() {
        Some(&"api") if segs.len() > 2 => &segs[2..],
        Some(&"apis") if segs.len() > 3 => &segs[3..],
        _ => return status_reply(StatusCode::NOT_FOUND, "NotFound", path),
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (plural, name, sub) = (rest[0], rest.get(1).copied(), rest.get(2).copied());
    let selector = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
        .map(percent_decode);
    let mut s = store.lock().expect("store");
    match (&method, name, sub) {
        (&Method::GET, Some(n), None) => match s.get(plural, n) {
            Some(o) => reply(StatusCode::OK, o),
            None => status_reply(StatusCode::NOT_FOUND, "NotFound", format!("{plural} {n}")),
        },
        (&Method::GET, None, _) => {
            let items: Vec<Value> = s
                .list(plural)
                .filter(|o| selected(o, selector.as_deref()))
                .cloned()
                .collect();
            reply(
                StatusCode::OK,
                &json!({ "apiVersion": "v1", "kind": "List",
                         "metadata": { "resourceVersion": s.version.to_string() },
                         "items": items }),
            )
        }
        (&Method::POST, None, _) => {
            let mut obj = body;
            let n = match obj["metadata"]["name"].as_str() {
                Some(n) => n.to_owned(),
                None => format!(
                    "{}{}",
                    obj["metadata"]["generateName"].as_str().unwrap_or("x-"),
                    s.version + 1
                ),
            };
            if s.get(plural, &n).is_some() {
                return status_reply(StatusCode::CONFLICT, "AlreadyExists", n);
            }
            obj["metadata"]["name"] = json!(n);
            obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
            let obj = s.put(plural, &n, obj);
            reply(StatusCode::CREATED, &obj)
        }
        // Server-side apply of a whole object: the applied fields replace
        // the old ones; status and creation time stay.
        (&Method::PATCH, Some(n), None) => {
            let mut obj = body;
            let old = s.get(plural, n).cloned();
            obj["metadata"]["creationTimestamp"] = old.as_ref().map_or(json!(now_rfc3339()), |o| {
                o["metadata"]["creationTimestamp"].clone()
            });
            if let Some(status) = old.as_ref().map(|o| o["status"].clone())
                && !status.is_null()
            {
                obj["status"] = status;
            }
            let obj = s.put(plural, n, obj);
            reply(StatusCode::OK, &obj)
        }
        (&Method::PATCH, Some(n), Some("status")) => {
            let Some(mut obj) = s.get(plural, n).cloned() else {
                return status_reply(StatusCode::NOT_FOUND, "NotFound", n.to_owned());
            };
            merge(&mut obj["status"], &body["status"]);
            let obj = s.put(plural, n, obj);
            reply(StatusCode::OK, &obj)
        }
        (&Method::DELETE, Some(n), None) => match s.remove(plural, n) {
            Some(o) => reply(StatusCode::OK, &o),
            None => status_reply(StatusCode::NOT_FOUND, "NotFound", n.to_owned()),
        },
        _ => status_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path}"),
        ),
    }
}

fn kube_client(store: Store) -> kube::Client {
    let svc = tower::service_fn(move |req: Request<Body>| {
        let store = Arc::clone(&store);
        async move { Ok::<_, Infallible>(serve(store, req).await) }
    });
    kube::Client::new(svc, NAMESPACE)
}

// --------------------------------------------------------- control plane

/// Registrations the stand-in control plane received: (cluster, body).
type Registrations = Arc<Mutex<Vec<(String, Value)>>>;

const CP_EMAIL: &str = "operator@example.com";
const CP_PASSWORD: &str = "operator-password-1";

/// A stand-in for the control plane's sign-in and cluster registration.
async fn fake_control_plane() -> (String, Registrations) {
    use axum::extract::{Path, State};
    use axum::routing::{post, put};
    let seen: Registrations = Arc::default();
    async fn login(axum::Json(b): axum::Json<Value>) -> (StatusCode, axum::Json<Value>) {
        if b == json!({"email": CP_EMAIL, "password": CP_PASSWORD}) {
            (StatusCode::OK, axum::Json(json!({"token": "session-1"})))
        } else {
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {"message": "no"}})),
            )
        }
    }
    async fn register(
        State(seen): State<Registrations>,
        Path(name): Path<String>,
        headers: http::HeaderMap,
        axum::Json(b): axum::Json<Value>,
    ) -> StatusCode {
        if headers.get("authorization").and_then(|h| h.to_str().ok()) != Some("Bearer session-1") {
            return StatusCode::UNAUTHORIZED;
        }
        seen.lock().expect("seen").push((name, b));
        StatusCode::CREATED
    }
    let app = axum::Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/clusters/{name}", put(register))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

// --------------------------------------------------------------- kubelet

/// Each pod's ports, fixed for the pod's life and kept across restarts
/// (a pod keeps its identity); shared with the operator's [`Locator`].
type Ports = Arc<Mutex<BTreeMap<u32, (u16, u16)>>>;

#[derive(Debug)]
struct Loopback(Ports);

impl Locator for Loopback {
    fn node_url(&self, _names: &Names, _namespace: &str, k: u32) -> String {
        match self.0.lock().expect("ports").get(&k) {
            Some((h, _)) => format!("http://127.0.0.1:{h}"),
            // Nothing listens on the discard port: the call fails at once.
            None => "http://127.0.0.1:9".to_owned(),
        }
    }
}

struct Kubelet {
    store: Store,
    names: Names,
    dir: tempfile::TempDir,
    ports: Ports,
    procs: BTreeMap<u32, Child>,
    http: reqwest::Client,
    /// Node processes started so far.
    starts: u32,
}

/// The token after `flag` in the start script.
fn flag<'a>(script: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = script.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next()
}

impl Kubelet {
    fn new(store: Store, ports: Ports) -> Kubelet {
        Kubelet {
            store,
            names: Names {
                cluster: NAME.into(),
                peers: format!("{NAME}-peers"),
                secret: format!("{NAME}-admin"),
            },
            dir: tempfile::tempdir().expect("tempdir"),
            ports,
            procs: BTreeMap::new(),
            starts: 0,
            http: dyno_tls::http_client_builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client"),
        }
    }

    fn data_dir(&self, k: u32) -> PathBuf {
        self.dir.path().join(self.names.pod(k))
    }

    /// Mounts the operator's Secret: its keys become files.
    fn mount_secret(&self) -> Option<PathBuf> {
        let s = self.store.lock().expect("store");
        let secret = s.get("secrets", &self.names.secret)?;
        let dir = self.dir.path().join("secret");
        std::fs::create_dir_all(&dir).expect("secret dir");
        for (k, v) in secret["data"].as_object()? {
            let bytes = B64.decode(v.as_str()?).ok()?;
            std::fs::write(dir.join(k), bytes).expect("secret file");
        }
        Some(dir)
    }

    /// The admin token from the mounted Secret, once mounted.
    fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("secret/token")).ok()
    }

    fn start(&mut self, k: u32, template: &Value, secret: &std::path::Path) {
        let container = &template["spec"]["containers"][0];
        let script = container["command"][2].as_str().unwrap_or_default();
        let bits = flag(script, "--partition-bits").expect("--partition-bits in the script");
        let durability = flag(script, "--durability").expect("--durability in the script");
        let listeners = {
            let mut ports = self.ports.lock().expect("ports");
            match ports.get(&k) {
                Some(&(h, r)) => Listeners::on(h, r),
                None => {
                    let l = Listeners::fresh();
                    ports.insert(k, l.ports());
                    l
                }
            }
        };
        let pod = self.names.pod(k);
        let mut argv: Vec<String> = [
            "node",
            "--id",
            &pod,
            "--data-dir",
            &self.data_dir(k).display().to_string(),
            "--partition-bits",
            bits,
            "--durability",
            durability,
            "--admin-token-file",
            &secret.join("token").display().to_string(),
            "--key-master-file",
            &secret.join("key-master").display().to_string(),
            "--replica-timeout-ms",
            "1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // As the script does: node 0 forms the cluster, the others seed
        // from it.
        if k > 0 {
            let rpc0 = self.ports.lock().expect("ports")[&0].1;
            argv.extend(["--seed".into(), format!("127.0.0.1:{rpc0}")]);
        }
        let log = self.dir.path().join(format!("{pod}.log"));
        self.procs.insert(k, spawn_dyno(&argv, &log, listeners));
        self.starts += 1;
        let mut s = self.store.lock().expect("store");
        let now = now_rfc3339();
        let labels = template["metadata"]["labels"].clone();
        // Each pod on its own machine, all in one zone: the ring takes the
        // zone (node 0's placed by the operator, the others' with their
        // joins) while placement stays what it is without zones, so the
        // movement below is the plain minimum.
        let machine = format!("machine-{k}");
        s.put(
            "nodes",
            &machine,
            json!({ "apiVersion": "v1", "kind": "Node",
                    "metadata": { "name": machine, "labels": { "topology.kubernetes.io/zone": ZONE } } }),
        );
        s.put(
            "pods",
            &pod,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": pod, "namespace": NAMESPACE, "labels": labels.clone(),
                              "creationTimestamp": now },
                "spec": { "nodeName": machine, "containers": [{ "name": "dyno", "image": container["image"] }] },
                "status": { "conditions": [{ "type": "Ready", "status": "False",
                                             "lastTransitionTime": now }] },
            }),
        );
        let claim = self.names.claim(k);
        if s.get("persistentvolumeclaims", &claim).is_none() {
            s.put(
                "persistentvolumeclaims",
                &claim,
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": { "name": claim, "namespace": NAMESPACE, "labels": labels,
                                  "creationTimestamp": now },
                    "spec": {},
                }),
            );
        }
    }

    fn stop(&mut self, k: u32) {
        if let Some(mut child) = self.procs.remove(&k) {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }

    /// One round: make the processes and pods match the StatefulSet, and
    /// report readiness.
    async fn sync(&mut self) {
        let sts = {
            let s = self.store.lock().expect("store");
            s.get("statefulsets", NAME).cloned()
        };
        let Some(sts) = sts else { return };
        let Some(secret) = self.mount_secret() else {
            return;
        };
        let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
        let template = &sts["spec"]["template"];
        // Pods above the StatefulSet's size go; a deleted pod's process
        // stops (it restarts below, with the same identity and data).
        let running: Vec<u32> = self.procs.keys().copied().collect();
        for k in running {
            let deleted = {
                let s = self.store.lock().expect("store");
                s.get("pods", &self.names.pod(k)).is_none()
            };
            if k >= replicas || deleted {
                self.stop(k);
                self.store
                    .lock()
                    .expect("store")
                    .remove("pods", &self.names.pod(k));
            }
        }
        // Like a StatefulSet with Parallel pod management: every missing
        // pod starts at once; node 0 first, so that the others' seed has
        // a port.
        for k in 0..replicas {
            if !self.procs.contains_key(&k) {
                self.start(k, template, &secret);
            }
        }
        // Readiness, from the node's health check.
        for k in 0..replicas {
            let url = format!(
                "http://127.0.0.1:{}/admin/v1/health",
                self.ports.lock().expect("ports")[&k].0
            );
            let ready = self
                .http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let mut s = self.store.lock().expect("store");
            let pod = self.names.pod(k);
            if let Some(mut p) = s.get("pods", &pod).cloned() {
                let want = if ready { "True" } else { "False" };
                if p["status"]["conditions"][0]["status"] != want {
                    p["status"]["conditions"][0] = json!({
                        "type": "Ready", "status": want,
                        "lastTransitionTime": now_rfc3339(),
                    });
                    s.put("pods", &pod, p);
                }
            }
        }
        // A deleted claim takes its volume with it.
        for k in 0..MAX_PODS {
            let claimed = {
                let s = self.store.lock().expect("store");
                s.get("persistentvolumeclaims", &self.names.claim(k))
                    .is_some()
            };
            let dir = self.data_dir(k);
            if !claimed && !self.procs.contains_key(&k) && dir.exists() {
                std::fs::remove_dir_all(&dir).expect("remove the volume");
            }
        }
    }

    fn dump_logs(&self) {
        for k in 0..MAX_PODS {
            let log = self.dir.path().join(format!("{}.log", self.names.pod(k)));
            if log.exists() {
                support::print_log_tail(&self.names.pod(k), &log);
            }
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let ks: Vec<u32> = self.procs.keys().copied().collect();
        for k in ks {
            self.stop(k);
        }
    }
}

// ------------------------------------------------------------------ test

/// The ring as node 0 sees it when no change is under way: each
/// partition's owner, and what each node holds and has received.
#[derive(Debug, Clone, PartialEq)]
struct Ring {
    epoch: u64,
    /// Partition -> its owner (the first node of its preference list).
    owners: BTreeMap<u64, String>,
    /// Node -> (bytes stored, the epoch of its last handoff, bytes it
    /// received in that handoff), as gossiped.
    nodes: BTreeMap<String, (u64, u64, u64)>,
}

/// The replication factor of the test's table.
const N: usize = 3;

impl Ring {
    /// Each partition's replicas: the first `N` distinct owners walking
    /// clockwise from it (the ring's definition, without zones).
    fn replicas(&self) -> BTreeMap<u64, BTreeSet<&str>> {
        let owners: Vec<&str> = self.owners.values().map(String::as_str).collect();
        let count = owners.len();
        (0..count)
            .map(|p| {
                let mut set = BTreeSet::new();
                for o in owners.iter().cycle().skip(p).take(count) {
                    if set.len() == N {
                        break;
                    }
                    set.insert(*o);
                }
                (p as u64, set)
            })
            .collect()
    }
}

/// Why [`World::ring`] has no ring.
#[derive(Debug)]
enum NoRing {
    /// A change is under way.
    Changing,
    /// Node 0 did not answer (or not yet).
    NoAnswer,
}

struct World {
    store: Store,
    ctx: Context,
    kubelet: Kubelet,
    /// A client with the admin credential, once the operator made it.
    admin: Option<reqwest::Client>,
    /// Every ring change: (what, replicas moved, the minimum).
    moves: Vec<(String, usize, usize)>,
}

impl World {
    fn url(&self, k: u32) -> String {
        Loopback(Arc::clone(&self.kubelet.ports)).node_url(&self.kubelet.names, NAMESPACE, k)
    }

    fn cluster(&self) -> DynoCluster {
        let s = self.store.lock().expect("store");
        serde_json::from_value(s.get("dynoclusters", NAME).expect("the resource").clone())
            .expect("a DynoCluster")
    }

    /// Sets a field of the resource's spec, as `kubectl patch` would.
    fn set_spec(&self, field: &str, value: Value) {
        let mut s = self.store.lock().expect("store");
        let mut dc = s.get("dynoclusters", NAME).expect("the resource").clone();
        dc["spec"][field] = value;
        s.put("dynoclusters", NAME, dc);
    }

    fn scale(&self, replicas: u32) {
        self.set_spec("replicas", json!(replicas));
    }

    /// Each pod's image and the pods' restart count so far.
    fn pod_images(&self) -> Vec<String> {
        let s = self.store.lock().expect("store");
        s.list("pods")
            .map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// The settled ring, or why there is none.
    async fn ring(&mut self) -> Result<Ring, NoRing> {
        self.view().await.ok_or(NoRing::NoAnswer).and_then(|v| {
            if v["change"].is_null() {
                Self::parse_ring(&v).ok_or(NoRing::NoAnswer)
            } else {
                Err(NoRing::Changing)
            }
        })
    }

    /// The client with the admin credential from the operator's Secret.
    fn admin(&mut self) -> Option<reqwest::Client> {
        if self.admin.is_none() {
            let token = self.kubelet.token()?;
            self.admin = Some(support::client_with_token(Some(&token)));
        }
        self.admin.clone()
    }

    async fn view(&mut self) -> Option<Value> {
        self.admin()?
            .get(format!("{}/admin/v1/cluster", self.url(0)))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    fn parse_ring(v: &Value) -> Option<Ring> {
        let members: BTreeSet<&str> = v["ring"]["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        let mut owners = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for n in v["nodes"].as_array()? {
            let id = n["id"].as_str().unwrap_or_default();
            let h = &n["handoff"];
            nodes.insert(
                id.to_owned(),
                (
                    n["bytes"].as_u64().unwrap_or(0),
                    h["epoch"].as_u64().unwrap_or(0),
                    h["bytes"].as_u64().unwrap_or(0),
                ),
            );
            if members.contains(id) {
                for p in n["partition_ids"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_u64)
                {
                    owners.insert(p, id.to_owned());
                }
            }
        }
        (owners.len() as u64 == v["ring"]["partitions"].as_u64()?).then_some(Ring {
            epoch: v["ring"]["epoch"].as_u64()?,
            owners,
            nodes,
        })
    }

    /// Runs passes (each followed by a kubelet round) until the cluster
    /// has `want` nodes in its ring and nothing is left to do. After a
    /// pass that begins a ring change, waits for the change to commit and
    /// counts the partition replicas it moved.
    async fn settle(&mut self, want: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut passes = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "not settled at {want} nodes within {limit:?} ({passes} passes); objects {:?}; status: {}",
                self.store
                    .lock()
                    .expect("store")
                    .by_key
                    .keys()
                    .collect::<Vec<_>>(),
                serde_json::to_string_pretty(&self.cluster().status).unwrap_or_default()
            );
            let before = self.ring().await;
            let dc = self.cluster();
            passes += 1;
            let outcome = match reconcile(&dc, &self.ctx).await {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("pass {passes}: {e}");
                    self.kubelet.sync().await;
                    continue;
                }
            };
            let d = &outcome.decision;
            if let Some(a) = &d.action {
                println!("pass {passes}: {a:?} ({})", d.progressing.message);
            }
            if let Some(Action::Join(k) | Action::Decommission(k)) = &d.action {
                match before {
                    Ok(before) => {
                        let after = self.wait_commit(before.epoch).await;
                        let node = self.kubelet.names.pod(*k);
                        self.count_moves(&d.action, &node, &before, &after);
                    }
                    Err(NoRing::Changing) => {
                        panic!("a ring change began while another was under way")
                    }
                    Err(NoRing::NoAnswer) => panic!("node 0 did not answer before a ring change"),
                }
            }
            self.kubelet.sync().await;
            let members = self
                .cluster()
                .status
                .map(|s| s.members.iter().filter(|m| m.state == "up").count());
            if d.action.is_none() && !d.progressing.status && members == Some(want) {
                println!("settled at {want} nodes after {passes} passes");
                return;
            }
            // The operator's requeue, shortened: a control loop's pace,
            // not a wait for a condition.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the change begun after `epoch` has committed.
    async fn wait_commit(&mut self, epoch: u64) -> Ring {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self.ring().await
                && r.epoch > epoch
            {
                return r;
            }
            assert!(Instant::now() < deadline, "the change did not commit");
            // Keep the pods' readiness current meanwhile.
            self.kubelet.sync().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Counts the partition replicas a change moved: every (partition,
    /// node) pair in the new preference lists that was not in the old.
    /// The minimum: a joiner must receive every replica it holds after;
    /// a leaver's every replica must go somewhere.
    fn count_moves(&mut self, action: &Option<Action>, node: &str, before: &Ring, after: &Ring) {
        let (old, new) = (before.replicas(), after.replicas());
        let moved: usize = new
            .iter()
            .map(|(p, set)| set.difference(&old[p]).count())
            .sum();
        let holds =
            |r: &BTreeMap<u64, BTreeSet<&str>>| r.values().filter(|s| s.contains(node)).count();
        let (what, minimum) = match action {
            Some(Action::Join(_)) => (format!("join {node}"), holds(&new)),
            _ => (format!("decommission {node}"), holds(&old)),
        };
        // Bytes the nodes received in this change's handoff.
        let streamed: u64 = after
            .nodes
            .values()
            .filter(|(_, epoch, _)| *epoch > before.epoch && *epoch <= after.epoch)
            .map(|(_, _, b)| b)
            .sum();
        println!(
            "{what}: epoch {} -> {}, moved {moved} partition replicas for a minimum of {minimum} (ratio {:.3}), streaming {streamed} bytes",
            before.epoch,
            after.epoch,
            moved as f64 / minimum.max(1) as f64,
        );
        self.moves.push((what, moved, minimum));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_scales_3_5_3_with_real_nodes_and_loses_no_write() {
    let store: Store = Arc::default();
    let ports: Ports = Arc::default();
    let spec: DynoClusterSpec = serde_json::from_value(json!({
        "replicas": 3,
        "image": "dyno:test",
        "partitionBits": 8,
        "storage": { "size": "1Gi" },
    }))
    .expect("spec");
    let mut dc = DynoCluster::new(NAME, spec);
    dc.metadata.namespace = Some(NAMESPACE.into());
    dc.metadata.uid = Some("uid-e2e".into());
    dc.metadata.generation = Some(1);
    store.lock().expect("store").put(
        "dynoclusters",
        NAME,
        serde_json::to_value(&dc).expect("json"),
    );
    let (cp_url, registrations) = fake_control_plane().await;
    let ctx = Context {
        registrar: Some(Arc::new(Registrar::new(ControlPlane {
            url: cp_url,
            email: CP_EMAIL.into(),
            password: CP_PASSWORD.into(),
        }))),
        autoscale: Arc::default(),
        client: kube_client(Arc::clone(&store)),
        locator: Arc::new(Loopback(Arc::clone(&ports))),
        metrics: Arc::default(),
        now: Timestamp::now,
        secret_bytes: || {
            let mut b = [0u8; 16];
            getrandom::fill(&mut b).ok()?;
            Some(b.iter().map(|x| format!("{x:02x}")).collect())
        },
    };
    let mut w = World {
        store: Arc::clone(&store),
        ctx,
        kubelet: Kubelet::new(Arc::clone(&store), Arc::clone(&ports)),
        admin: None,
        moves: Vec::new(),
    };

    // 1. A new cluster of three.
    w.settle(3, Duration::from_secs(120)).await;
    let admin = w.admin().expect("the admin Secret");
    let token = w.kubelet.token().expect("token");
    let registered = registrations.lock().expect("seen").clone();
    assert_eq!(
        registered,
        [(
            "dyno.db".to_owned(),
            json!({"admin_urls": [w.url(0)], "admin_token": token})
        )],
        "registered once the cluster served"
    );
    let resp = admin
        .put(format!("{}/admin/v1/tables/t", w.url(0)))
        .json(&json!({"n": 3, "r": 2, "w": 2}))
        .send()
        .await
        .expect("create table");
    assert_eq!(resp.status(), StatusCode::OK);

    // 2. A writer through nodes 0..3 (never removed) for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = (0..3).map(|k| w.url(k)).collect();
    let writer = {
        let (stop, http) = (Arc::clone(&stop), admin.clone());
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut failed = 0u64;
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let (key, val) = (format!("k{i}"), format!("v{i}"));
                let url = &urls[i as usize % urls.len()];
                match http
                    .put(format!("{url}/v1/tables/t/items/{key}"))
                    .body(val.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        acked.insert(key, val);
                    }
                    Ok(r) => {
                        failed += 1;
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        eprintln!("writer: {key} not acknowledged: {status} {body}");
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("writer: {key} not acknowledged: {e}");
                    }
                }
                i += 1;
            }
            (acked, failed)
        })
    };

    // 3. Scale up to five, then back to three.
    w.scale(5);
    w.settle(5, Duration::from_secs(240)).await;
    w.scale(3);
    w.settle(3, Duration::from_secs(240)).await;

    // 4. A new image: the pods restart one at a time (the operator deletes
    //    each; the kubelet starts it again on its volume), with no ring
    //    change.
    let epoch = w.ring().await.expect("settled").epoch;
    let restarts = w.kubelet.starts;
    w.set_spec("image", json!("dyno:test-2"));
    w.settle(3, Duration::from_secs(240)).await;
    assert_eq!(w.pod_images(), ["dyno:test-2"; 3]);
    assert_eq!(w.kubelet.starts - restarts, 3, "each pod restarted once");
    assert_eq!(
        w.ring().await.expect("settled").epoch,
        epoch,
        "an upgrade changes no ring"
    );
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.await.expect("writer");

    // The StatefulSet shrank, the removed nodes' claims and data are gone.
    let (sts_replicas, claims) = {
        let s = store.lock().expect("store");
        let sts = s.get("statefulsets", NAME).expect("sts")["spec"]["replicas"].clone();
        let claims: Vec<String> = s
            .list("persistentvolumeclaims")
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        (sts, claims)
    };
    assert_eq!(sts_replicas, json!(3));
    w.kubelet.sync().await;
    assert_eq!(claims, ["data-dyno-0", "data-dyno-1", "data-dyno-2"]);
    assert!(!w.kubelet.data_dir(3).exists() && !w.kubelet.data_dir(4).exists());

    // Every member has its machine's zone.
    let members = w.cluster().status.map(|s| s.members).unwrap_or_default();
    let zones: Vec<(String, Option<String>)> = members
        .iter()
        .filter(|m| m.state == "up")
        .map(|m| (m.name.clone(), m.zone.clone()))
        .collect();
    assert_eq!(
        zones,
        (0..3)
            .map(|k| (format!("{NAME}-{k}"), Some(ZONE.to_owned())))
            .collect::<Vec<_>>()
    );

    // Every acknowledged write reads back.
    // A read that cannot gather R replies says nothing of loss: it is
    // retried (a node restarted last by the upgrade fails the reads it
    // coordinates for about a second after it reports Ready).
    let mut lost = Vec::new();
    let mut unavailable = 0u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, val) in &acked {
        let body = loop {
            let body: Value = admin
                .get(format!("{}/v1/tables/t/items/{key}?r=2", w.url(0)))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .unwrap_or(Value::Null);
            if body["error"]["code"] != "QuorumNotMet" || Instant::now() > deadline {
                break body;
            }
            unavailable += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if support::values(&body) != [val.clone()] {
            lost.push((key.clone(), body));
        }
    }
    println!(
        "{} writes acknowledged during 3 -> 5 -> 3 and a rolling upgrade ({failed} failed and were not acknowledged), {} lost; {unavailable} reads retried on QuorumNotMet",
        acked.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost acknowledged writes (first 10): {:?}",
        &lost[..lost.len().min(10)]
    );
    assert!(acked.len() > 100, "the writer barely ran");

    assert_eq!(
        registrations.lock().expect("seen").len(),
        1,
        "registered once, not on every pass"
    );

    // Movement: the joins of 1..5 and the decommissions of 4 and 3, each
    // exactly the minimum.
    let changes: Vec<&str> = w.moves.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        changes,
        [
            "join dyno-1",
            "join dyno-2",
            "join dyno-3",
            "join dyno-4",
            "decommission dyno-4",
            "decommission dyno-3"
        ]
    );
    let (moved, minimum) = w.moves.iter().fold((0, 0), |(a, b), m| (a + m.1, b + m.2));
    println!(
        "3 -> 5 -> 3 moved {moved} partition replicas for a minimum of {minimum}: ratio {:.3}",
        moved as f64 / minimum as f64
    );
    for (what, moved, minimum) in &w.moves {
        assert_eq!(moved, minimum, "{what} moved more than the minimum");
    }
}
