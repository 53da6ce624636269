//! The shapes the controller manager caches.
//!
//! A typed `k8s_openapi` Pod costs about 18 KiB of memory once decoded (every optional field of
//! the spec, its containers and volumes is laid out inline), and the pod informer holds every pod
//! in the cluster. The controllers read only a few of those fields, so the pod informer decodes
//! the watch stream straight into [`Pod`]: the same field names and nesting as the API object,
//! limited to what the controllers read. Serde skips every other field without allocating it, so
//! this saves decode time as well as memory (about 3.5 KiB a pod). Upstream keeps full objects;
//! only the footprint differs, not what a controller sees of the fields it reads.
//!
//! Writes never go through these types: controllers create pods from templates and change them
//! with patches of the fields they own.
//!
//! A controller that needs a field the cache lacks adds it here, with the same name and type as
//! `k8s_openapi::api::core::v1`.

use k8s_openapi::api::core::v1::{ContainerState, PodCondition, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// A pod, as the controller manager caches it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, deserialize_with = "exact")]
    pub containers: Vec<Container>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub init_containers: Option<Vec<Container>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Read by the taint-eviction controller. Shared: admission gives every pod the same two
    /// default tolerations, and the pods of one template carry identical lists.
    #[serde(
        default,
        deserialize_with = "shared_tolerations",
        skip_serializing_if = "Option::is_none"
    )]
    pub tolerations: Option<Arc<[Toleration]>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    /// `Always` on an init container makes it a sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    /// Boxed, and absent when the API sends an empty state (`lastState: {}` before a restart):
    /// a `ContainerState` is 200 bytes inline, mostly empty.
    #[serde(
        default,
        deserialize_with = "state",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<Box<ContainerState>>,
    #[serde(
        default,
        deserialize_with = "state",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_state: Option<Box<ContainerState>>,
}

/// A JSON array decodes into a `Vec` that grew in steps (room for at least four elements), so a
/// pod's single container status would hold room for four; cached lists keep only their length.
fn exact<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let mut v = Vec::<T>::deserialize(d)?;
    v.shrink_to_fit();
    Ok(v)
}

fn exact_opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let mut v = Option::<Vec<T>>::deserialize(d)?;
    if let Some(v) = v.as_mut() {
        v.shrink_to_fit();
    }
    Ok(v)
}

/// One copy of each distinct value among the cached pods. Entries are weak, so a value no pod
/// holds any more is dropped at the next sweep; a sweep runs whenever the table has doubled
/// since the last one, which keeps it proportional to the distinct values in use.
struct Interner<T: ?Sized> {
    table: Mutex<(HashMap<String, Weak<T>>, usize)>,
}

impl<T: ?Sized> Interner<T> {
    fn new() -> Self {
        Interner {
            table: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The shared copy of the value whose canonical JSON is `key`, made by `make` if none is held.
    fn get(&self, key: String, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let mut guard = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (table, swept_at) = &mut *guard;
        if let Some(shared) = table.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        let value = make();
        table.insert(key, Arc::downgrade(&value));
        if table.len() > 2 * *swept_at + 64 {
            table.retain(|_, w| w.strong_count() > 0);
            *swept_at = table.len();
        }
        value
    }
}

static TOLERATIONS: LazyLock<Interner<[Toleration]>> = LazyLock::new(Interner::new);

fn shared_tolerations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Arc<[Toleration]>>, D::Error> {
    let Some(list) = Option::<Vec<Toleration>>::deserialize(d)? else {
        return Ok(None);
    };
    // Serialising a decoded list cannot fail; the fallback only skips the sharing.
    let Ok(key) = serde_json::to_string(&list) else {
        return Ok(Some(list.into()));
    };
    Ok(Some(TOLERATIONS.get(key, || list.into())))
}

fn state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<ContainerState>>, D::Error> {
    Ok(Option::<ContainerState>::deserialize(d)?
        .filter(|s| s.running.is_some() || s.terminated.is_some() || s.waiting.is_some())
        .map(Box::new))
}

impl k8s_openapi::Resource for Pod {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for Pod {
    const LIST_KIND: &'static str = "PodList";
}

impl k8s_openapi::Metadata for Pod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Pod {
    /// The cached shape of a full pod (e.g. one the API returned to a create).
    pub fn from_full(pod: &k8s_openapi::api::core::v1::Pod) -> Pod {
        // Both are serde views of the same JSON; the conversion cannot fail short of a bug.
        serde_json::to_value(pod)
            .and_then(serde_json::from_value)
            .unwrap_or_else(|_| Pod {
                metadata: pod.metadata.clone(),
                ..Pod::default()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "ns", "uid": "u1",
                "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                    "uid": "rs1", "controller": true}]},
            "spec": {
                "nodeName": "n1",
                "restartPolicy": "Never",
                "containers": [{"name": "app", "image": "img", "env": [{"name": "A", "value": "1"}],
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "initContainers": [{"name": "sidecar", "image": "img", "restartPolicy": "Always"}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {
                "phase": "Failed", "reason": "Evicted", "podIP": "10.0.0.1",
                "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "False",
                    "lastTransitionTime": "2026-01-01T00:00:01Z"}],
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 2,
                    "image": "img", "imageID": "",
                    "state": {"terminated": {"exitCode": 42, "reason": "Error"}}}]
            }
        })
    }

    #[test]
    fn the_watch_json_decodes_into_the_fields_the_controllers_read_and_drops_the_rest() {
        let pod: Pod = serde_json::from_value(full_pod()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-1"));
        assert_eq!(
            pod.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.containers[0].name, "app");
        assert_eq!(
            spec.tolerations
                .as_deref()
                .and_then(|t| t[0].key.as_deref()),
            Some("k")
        );
        assert_eq!(
            spec.init_containers.as_ref().unwrap()[0]
                .restart_policy
                .as_deref(),
            Some("Always")
        );
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 2);
        assert_eq!(
            cs.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(42)
        );
        let back = serde_json::to_value(&pod).unwrap();
        assert!(back["spec"].get("volumes").is_none());
        assert!(back["spec"]["containers"][0].get("env").is_none());
    }

    #[test]
    fn a_full_pod_converts_to_the_same_cached_shape_as_its_json() {
        let full: k8s_openapi::api::core::v1::Pod = serde_json::from_value(full_pod()).unwrap();
        let direct: Pod = serde_json::from_value(full_pod()).unwrap();
        assert_eq!(Pod::from_full(&full), direct);
    }

    #[test]
    fn pods_with_the_same_tolerations_share_one_copy_and_different_ones_do_not() {
        let a: Pod = serde_json::from_value(full_pod()).unwrap();
        let b: Pod = serde_json::from_value(full_pod()).unwrap();
        let mut other = full_pod();
        other["spec"]["tolerations"] = json!([{"key": "other", "operator": "Exists"}]);
        let c: Pod = serde_json::from_value(other).unwrap();
        let tolerations = |p: &Pod| p.spec.as_ref().unwrap().tolerations.clone().unwrap();
        assert!(Arc::ptr_eq(&tolerations(&a), &tolerations(&b)));
        assert!(!Arc::ptr_eq(&tolerations(&a), &tolerations(&c)));
        assert_eq!(tolerations(&c)[0].key.as_deref(), Some("other"));
    }

    #[test]
    fn the_interner_forgets_values_nobody_holds() {
        let interner: Interner<str> = Interner::new();
        let kept = interner.get("kept".into(), || Arc::from("kept"));
        for i in 0..1000 {
            let key = format!("gone-{i}");
            drop(interner.get(key.clone(), || Arc::from(key.as_str())));
        }
        let table = interner.table.lock().unwrap();
        assert!(table.0.len() < 200, "{} entries kept", table.0.len());
        assert!(table.0.contains_key("kept"));
        drop(table);
        assert!(Arc::ptr_eq(
            &kept,
            &interner.get("kept".into(), || Arc::from("again"))
        ));
    }

    #[test]
    fn the_cached_pod_is_the_pods_resource() {
        use kube::Resource;
        assert_eq!(Pod::kind(&()), "Pod");
        assert_eq!(Pod::plural(&()), "pods");
        assert_eq!(Pod::api_version(&()), "v1");
    }
}
