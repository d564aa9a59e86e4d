//! `dyno operator run`: watches every `DynoCluster` (and the objects it
//! owns), runs [`crate::reconcile::reconcile`] for each, and serves its
//! metrics and health on `--metrics-addr`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::children::Names;
use crate::crd::{DynoCluster, VolumePolicy};
use crate::metrics::Metrics;
use crate::reconcile::{Context, Error, reconcile};

/// The finalizer that applies the volume policy when a cluster is deleted.
pub const FINALIZER: &str = "dyno.dev/volumes";

/// Options of `dyno operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Where to serve `/metrics` and `/healthz`.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// The control plane to register clusters with (its base URL); none:
    /// clusters are not registered.
    #[arg(long, env = "DYNO_CONTROLPLANE_URL", requires_all = ["controlplane_email", "controlplane_password_file"])]
    pub controlplane_url: Option<String>,
    /// The platform admin the operator signs in to the control plane as.
    #[arg(long, env = "DYNO_CONTROLPLANE_EMAIL")]
    pub controlplane_email: Option<String>,
    /// A file holding that admin's password.
    #[arg(long, env = "DYNO_CONTROLPLANE_PASSWORD_FILE")]
    pub controlplane_password_file: Option<std::path::PathBuf>,
}

impl RunArgs {
    /// The control plane to register with, if one is configured.
    pub fn control_plane(&self) -> anyhow::Result<Option<crate::register::ControlPlane>> {
        let (Some(url), Some(email), Some(file)) = (
            &self.controlplane_url,
            &self.controlplane_email,
            &self.controlplane_password_file,
        ) else {
            return Ok(None);
        };
        let password = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        anyhow::ensure!(!password.is_empty(), "{} is empty", file.display());
        Ok(Some(crate::register::ControlPlane {
            url: url.clone(),
            email: email.clone(),
            password,
        }))
    }
}

/// Why a pass through the finalizer failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pass itself.
    #[error(transparent)]
    Reconcile(#[from] Error),
    /// Adding or removing the finalizer.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// One pass, with the finalizer around it.
pub async fn pass(dc: Arc<DynoCluster>, ctx: Arc<Context>) -> Result<Requeue, PassError> {
    let started = Instant::now();
    let ns = dc.namespace().unwrap_or_default();
    let api: Api<DynoCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, dc, |event| async {
        match event {
            Finalize::Apply(dc) => reconcile(&dc, &ctx)
                .await
                .map(|o| Requeue::requeue(o.requeue)),
            Finalize::Cleanup(dc) => cleanup(&dc, &ctx).await.map(|()| Requeue::await_change()),
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => PassError::Reconcile(e),
        other => PassError::Finalizer(other.to_string()),
    });
    ctx.metrics.pass(result.is_ok(), started.elapsed());
    result
}

/// On deletion: the owned objects go with the resource (owner references);
/// the volume claims stay unless the volume policy is `delete`.
async fn cleanup(dc: &DynoCluster, ctx: &Context) -> Result<(), Error> {
    if dc.spec.volume_policy != VolumePolicy::Delete {
        tracing::info!(cluster = %dc.name_any(), "deleted; its volume claims are kept (volumePolicy: keep)");
        return Ok(());
    }
    let ns = dc.namespace().ok_or(Error::NoNamespace)?;
    let names = Names::of(dc);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = kube::api::ListParams::default().labels(&crate::children::selector_string(dc));
    for c in claims.list(&lp).await?.items {
        let name = c.name_any();
        if names.claim_ordinal(&name).is_some() {
            claims.delete(&name, &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

fn error_policy(_dc: Arc<DynoCluster>, e: &PassError, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(error = %e, "reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(10))
}

/// Runs the operator with the cluster's own credentials (in a pod: its
/// service account; outside: the kubeconfig), reaching nodes by their
/// in-cluster DNS names.
pub async fn run_default(
    args: RunArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    run(args, client, Arc::new(crate::dataplane::InCluster), stop).await
}

/// Runs the operator until `stop` resolves.
pub async fn run(
    args: RunArgs,
    client: kube::Client,
    locator: Arc<dyn crate::dataplane::Locator>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let registrar = args
        .control_plane()?
        .map(|cp| Arc::new(crate::register::Registrar::new(cp)));
    if registrar.is_none() {
        tracing::info!("no --controlplane-url: clusters are not registered with a control plane");
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        locator,
        metrics: Arc::clone(&metrics),
        now: k8s_openapi::jiff::Timestamp::now,
        secret_bytes: random_secret,
        registrar,
        autoscale: Arc::default(),
    });
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let m = Arc::clone(&metrics);
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = Arc::clone(&m);
                async move { m.encode() }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    // The controller wants a Sync trigger; relay `stop` through a channel.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        stop.await;
        let _ = stopping.send(());
    });
    let clusters: Api<DynoCluster> = Api::all(client.clone());
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=dyno-operator");
    tracing::info!(metrics = %args.metrics_addr, "operator running");
    Controller::new(clusters, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        // Pods are the StatefulSet's, not the resource's: map them back by
        // their instance label.
        .watches(Api::<Pod>::all(client), owned, |pod: Pod| {
            let name = pod.labels().get("app.kubernetes.io/instance")?.clone();
            let ns = pod.namespace()?;
            Some(ObjectRef::<DynoCluster>::new(&name).within(&ns))
        })
        .graceful_shutdown_on(async move {
            let _ = stopped.await;
        })
        .run(pass, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    Ok(())
}

/// 32 random bytes as hex: an admin token or a key master. None when the
/// system has no random source (the pass fails rather than make a
/// guessable secret).
pub fn random_secret() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}
