//! The committed CRD is the one the Rust types generate, and a resource
//! written by hand parses into them.

use dyno_operator::crd::{Durability, DynoCluster, VolumePolicy, crd_yaml};

#[test]
fn the_committed_crd_is_generated_from_the_types() {
    let generated = crd_yaml().expect("yaml");
    let committed = include_str!("../../deploy/crds/dynocluster.yaml");
    assert!(
        generated == committed,
        "deploy/crds/dynocluster.yaml is stale: run `cargo run -- operator crd > deploy/crds/dynocluster.yaml`"
    );
    // A valid Kubernetes object of its kind.
    let typed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml::from_str(committed).expect("a CustomResourceDefinition");
    assert_eq!(
        typed.metadata.name.as_deref(),
        Some("dynoclusters.dyno.dev")
    );
    let crd: serde_json::Value = serde_yaml::from_str(committed).expect("the CRD parses");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["group"], "dyno.dev");
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(
        v["subresources"]["scale"]["specReplicasPath"], ".spec.replicas",
        "kubectl scale works"
    );
    assert!(v["subresources"]["status"].is_object());
}

#[test]
fn a_minimal_resource_takes_the_defaults() {
    let c: DynoCluster = serde_yaml::from_str(
        "apiVersion: dyno.dev/v1alpha1
kind: DynoCluster
metadata: {name: main, namespace: dyno}
spec:
  replicas: 3
  image: dyno:0.1.0
  storage: {size: 10Gi}
",
    )
    .expect("parses");
    assert_eq!(c.spec.replicas, 3);
    assert_eq!(c.spec.partition_bits, 10);
    assert_eq!(c.spec.durability, Durability::Periodic);
    assert_eq!(c.spec.volume_policy, VolumePolicy::Delete);
    assert_eq!(c.spec.zone_label, "topology.kubernetes.io/zone");
    assert_eq!(c.spec.abort_after_secs, 300);
    let bad = serde_yaml::from_str::<DynoCluster>(
        "apiVersion: dyno.dev/v1alpha1
kind: DynoCluster
metadata: {name: main}
spec: {replicas: three, image: x, storage: {size: 1Gi}}
",
    );
    assert!(bad.is_err(), "replicas is a number");
}
