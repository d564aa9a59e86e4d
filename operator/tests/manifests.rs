//! The files in `deploy/` are valid Kubernetes objects: each document
//! deserialises into its k8s-openapi type and serialises back to exactly
//! what was written (so a misspelt or misplaced field, which the types
//! would silently drop, fails the test); the kustomization lists every
//! manifest; the operator's ClusterRole grants what the operator uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read deploy/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Deserialises `v` as `T` and checks it serialises back unchanged.
fn round_trip<T: DeserializeOwned + Serialize>(path: &Path, v: &Value) {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{}: not a valid {}: {e}", path.display(), v["kind"]));
    let back = serde_json::to_value(&typed).expect("serialise");
    assert_eq!(
        &back,
        v,
        "{}: {} loses or changes fields when typed (a misspelt field?)",
        path.display(),
        v["kind"]
    );
}

#[test]
fn every_manifest_is_a_valid_kubernetes_object() {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    let mut kinds = BTreeSet::new();
    for path in &files {
        if path.ends_with("kustomization.yaml") {
            continue;
        }
        for doc in documents(path) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            match kind.as_str() {
                "Namespace" => round_trip::<Namespace>(path, &doc),
                "ServiceAccount" => round_trip::<ServiceAccount>(path, &doc),
                "ClusterRole" => round_trip::<ClusterRole>(path, &doc),
                "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(path, &doc),
                "Deployment" => round_trip::<Deployment>(path, &doc),
                "Service" => round_trip::<Service>(path, &doc),
                "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(path, &doc),
                "DynoCluster" => {
                    let dc: dyno_operator::crd::DynoCluster = serde_json::from_value(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: not a DynoCluster: {e}", path.display()));
                    assert!(dc.spec.replicas >= 1);
                    // Every field written is one the resource has.
                    let back = serde_json::to_value(&dc.spec).expect("serialise");
                    for key in doc["spec"].as_object().expect("spec").keys() {
                        assert!(
                            back.get(key).is_some(),
                            "{}: unknown field spec.{key}",
                            path.display()
                        );
                    }
                }
                other => panic!("{}: no check for kind {other:?}; add one", path.display()),
            }
            kinds.insert(kind);
        }
    }
    println!("checked {} files, kinds {kinds:?}", files.len());
    for k in [
        "Deployment",
        "ClusterRole",
        "CustomResourceDefinition",
        "DynoCluster",
        "Service",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/");
    }
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_examples() {
    let dir = deploy_dir();
    let k = &documents(&dir.join("kustomization.yaml"))[0];
    let listed: BTreeSet<PathBuf> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| dir.join(r.as_str().expect("path")))
        .collect();
    for r in &listed {
        assert!(
            r.exists(),
            "kustomization lists {} which does not exist",
            r.display()
        );
    }
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    for f in files {
        let rel = f.strip_prefix(&dir).expect("under deploy/");
        if rel.starts_with("examples") || rel == Path::new("kustomization.yaml") {
            continue;
        }
        assert!(
            listed.contains(&f),
            "{} is not in the kustomization",
            rel.display()
        );
    }
}

#[test]
fn the_operator_role_grants_what_the_operator_uses() {
    let role: ClusterRole =
        serde_json::from_value(documents(&deploy_dir().join("operator/rbac.yaml"))[0].clone())
            .expect("ClusterRole");
    let rules = role.rules.unwrap_or_default();
    let granted = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|x| x == group))
                && r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for &(group, resource, verb) in dyno_operator::PERMISSIONS {
        assert!(
            granted(group, resource, verb),
            "the ClusterRole does not grant {verb} on {group}/{resource}"
        );
    }
    // And nothing more: every rule's verbs are used.
    for r in &rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    assert!(
                        dyno_operator::PERMISSIONS.contains(&(
                            g.as_str(),
                            res.as_str(),
                            v.as_str()
                        )),
                        "the ClusterRole grants {v} on {g}/{res}, which the operator does not use"
                    );
                }
            }
        }
    }
}
