//! The root CA certificate publisher: keeps ConfigMap `kube-root-ca.crt` in every namespace, with
//! key `ca.crt` holding the `--root-ca-file` bundle and the upstream description annotation;
//! edits and deletions are repaired.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/certificates/rootcacertpublisher/publisher.go and
//! its start-up in cmd/kube-controller-manager/app/certificates.go.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrite_runtime::informer::Change;
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};

use crate::manager::ControllerContext;
use crate::serviceaccount::{NAMESPACE_TERMINATING_CAUSE, has_cause};

pub const NAME: &str = "root-ca-certificate-publisher-controller";

pub const CONFIG_MAP_NAME: &str = "kube-root-ca.crt";
pub const DATA_KEY: &str = "ca.crt";
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
     when using internal endpoints such as the internal service IP or kubernetes.default.svc. \
     No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Upstream runs the publisher with a single worker (`sac.Run(ctx, 1)`).
const WORKERS: usize = 1;

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// What a namespace needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Nothing,
    /// Create the ConfigMap from scratch.
    Create,
    /// Reset the existing ConfigMap's data and description (see [`updated`]).
    Update,
}

/// Decides for one namespace. `phase` is the namespace's phase (None when the namespace is not
/// in the cache), `existing` the current ConfigMap.
///
/// Upstream creates whenever the ConfigMap is missing and lets the apiserver refuse a terminating
/// namespace; skipping namespaces that are not `Active` saves those doomed requests. The data must
/// equal exactly `{ca.crt: <bundle>}` and the annotation must be non-empty, else both are reset
/// (upstream compares `cm.Data` with `reflect.DeepEqual`, so stray keys are removed too).
pub fn plan(phase: Option<&str>, existing: Option<&ConfigMap>, root_ca: &str) -> Action {
    let Some(cm) = existing else {
        return match phase {
            Some("Active") => Action::Create,
            _ => Action::Nothing,
        };
    };
    let data_ok = cm.data.as_ref().is_some_and(|data| {
        data.len() == 1 && data.get(DATA_KEY).map(String::as_str) == Some(root_ca)
    });
    let annotation_ok = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|v| !v.is_empty());
    if data_ok && annotation_ok {
        Action::Nothing
    } else {
        Action::Update
    }
}

/// The existing ConfigMap with its data reset to exactly `{ca.crt: <bundle>}` and the description
/// annotation set; everything else (other annotations, labels, `resourceVersion`) is kept.
///
/// This is written with an update (PUT), not a patch: upstream's bootstrap policy grants
/// `system:controller:root-ca-cert-publisher` only `create` and `update` on configmaps. The
/// `resourceVersion` kept from the cache makes the update conditional, and ConfigMap's schema is
/// fully known to k8s-openapi (v1_37, the bed's version), so no field is dropped.
pub fn updated(existing: &ConfigMap, root_ca: &str) -> ConfigMap {
    let mut cm = existing.clone();
    cm.data = Some(BTreeMap::from([(DATA_KEY.to_owned(), root_ca.to_owned())]));
    cm.metadata
        .annotations
        .get_or_insert_default()
        .insert(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned());
    cm
}

/// The ConfigMap to create.
pub fn desired(root_ca: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CONFIG_MAP_NAME.to_owned()),
            annotations: Some(BTreeMap::from([(
                DESCRIPTION_ANNOTATION.to_owned(),
                DESCRIPTION.to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(DATA_KEY.to_owned(), root_ca.to_owned())])),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Shell
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating {CONFIG_MAP_NAME} in {namespace}: {source}")]
    Create {
        namespace: String,
        source: kube::Error,
    },
    #[error("updating {CONFIG_MAP_NAME} in {namespace}: {source}")]
    Update {
        namespace: String,
        source: kube::Error,
    },
}

/// Reads and checks the bundle (upstream `readCA`: the file must parse as PEM certificates).
fn read_root_ca(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("error reading root-ca-file at {}: {e}", path.display()))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "error parsing root-ca-file at {}: data does not contain any valid RSA or ECDSA certificates",
            path.display()
        ));
    }
    Ok(text)
}

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    // Upstream (cmd/kube-controller-manager/app/certificates.go) publishes --root-ca-file, or
    // without it the CA its own client configuration trusts.
    let root_ca: Arc<str> = match (&ctx.options.root_ca_file, &ctx.options.client_ca) {
        (Some(path), _) => read_root_ca(path)?.into(),
        (None, Some(ca)) => ca.as_str().into(),
        (None, None) => {
            tracing::warn!(
                controller = NAME,
                "neither --root-ca-file nor a CA in the client configuration; not publishing {CONFIG_MAP_NAME}"
            );
            return Ok(async { Ok(()) }.boxed());
        }
    };
    let queue: WorkQueue<String> =
        WorkQueue::new("root_ca_cert_publisher", RateLimiter::default_controller())
            .with_metrics(&ctx.queue_metrics);
    let namespaces = ctx.informers.informer::<Namespace>();
    let config_maps = ctx.informers.informer::<ConfigMap>();
    {
        let q = queue.clone();
        namespaces.add_handler(move |change| {
            let ns = match change {
                Change::Added(ns) => ns,
                // upstream namespaceUpdated only cares about active namespaces
                Change::Updated { new, .. }
                    if new.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Active") =>
                {
                    new
                }
                _ => return,
            };
            if let Some(name) = &ns.metadata.name {
                q.add(name.clone());
            }
        });
    }
    {
        let q = queue.clone();
        config_maps.add_handler(move |change| {
            let cm = match change {
                Change::Updated { new, .. } => new,
                Change::Deleted(cm) => cm,
                Change::Added(_) => return,
            };
            if cm.metadata.name.as_deref() == Some(CONFIG_MAP_NAME)
                && let Some(ns) = &cm.metadata.namespace
            {
                q.add(ns.clone());
            }
        });
    }
    let client = ctx.client.clone();
    let token = ctx.token.clone();
    Ok(async move {
        tracing::info!(
            controller = NAME,
            "starting root CA cert publisher controller"
        );
        run_workers(queue, WORKERS, token, move |ns: String| {
            let (client, namespaces, config_maps, root_ca) = (
                client.clone(),
                namespaces.clone(),
                config_maps.clone(),
                root_ca.clone(),
            );
            async move {
                let namespace = namespaces.get(None, &ns);
                let phase = namespace
                    .as_ref()
                    .and_then(|n| n.status.as_ref())
                    .and_then(|s| s.phase.as_deref());
                let cm = config_maps.get(Some(&ns), CONFIG_MAP_NAME);
                let action = plan(phase, cm.as_deref(), &root_ca);
                sync(&client, &ns, action, cm.as_deref(), &root_ca).await
            }
        })
        .await;
        Ok(())
    }
    .boxed())
}

async fn sync(
    client: &kube::Client,
    ns: &str,
    action: Action,
    existing: Option<&ConfigMap>,
    root_ca: &str,
) -> Result<(), Error> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    match action {
        Action::Nothing => Ok(()),
        Action::Create => match api.create(&PostParams::default(), &desired(root_ca)).await {
            Ok(_) => Ok(()),
            // Don't retry a create when the namespace is gone or terminating (upstream), nor
            // when the cache has not seen the ConfigMap yet: its update event requeues us.
            Err(kube::Error::Api(s))
                if s.is_not_found()
                    || s.is_already_exists()
                    || has_cause(&s, NAMESPACE_TERMINATING_CAUSE) =>
            {
                Ok(())
            }
            Err(source) => Err(Error::Create {
                namespace: ns.to_owned(),
                source,
            }),
        },
        Action::Update => {
            let Some(existing) = existing else {
                return Ok(());
            };
            match api
                .replace(
                    CONFIG_MAP_NAME,
                    &PostParams::default(),
                    &updated(existing, root_ca),
                )
                .await
            {
                Ok(_) => Ok(()),
                // Deleted meanwhile: the delete event requeues the namespace.
                Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                Err(source) => Err(Error::Update {
                    namespace: ns.to_owned(),
                    source,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn cm(data: BTreeMap<String, String>, annotations: BTreeMap<String, String>) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(CONFIG_MAP_NAME.to_owned()),
                annotations: Some(annotations),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn an_active_namespace_without_the_config_map_gets_it_created() {
        assert_eq!(plan(Some("Active"), None, CA), Action::Create);
    }

    #[test]
    fn a_terminating_or_unknown_namespace_without_the_config_map_gets_nothing() {
        assert_eq!(plan(Some("Terminating"), None, CA), Action::Nothing);
        assert_eq!(plan(None, None, CA), Action::Nothing);
    }

    #[test]
    fn an_up_to_date_config_map_is_left_alone() {
        let data = map(&[(DATA_KEY, CA)]);
        let ann = map(&[(DESCRIPTION_ANNOTATION, DESCRIPTION), ("other", "x")]);
        assert_eq!(
            plan(Some("Active"), Some(&cm(data.clone(), ann.clone())), CA),
            Action::Nothing
        );
    }

    #[test]
    fn any_non_empty_description_is_accepted_as_upstream_does() {
        let data = map(&[(DATA_KEY, CA)]);
        let ann = map(&[(DESCRIPTION_ANNOTATION, "edited")]);
        assert_eq!(
            plan(Some("Active"), Some(&cm(data.clone(), ann.clone())), CA),
            Action::Nothing
        );
    }

    #[test]
    fn edited_data_is_reset() {
        let data = map(&[(DATA_KEY, "tampered")]);
        let ann = map(&[(DESCRIPTION_ANNOTATION, DESCRIPTION)]);
        assert_eq!(
            plan(Some("Active"), Some(&cm(data.clone(), ann.clone())), CA),
            Action::Update
        );
    }

    #[test]
    fn stray_keys_make_the_data_differ() {
        let data = map(&[(DATA_KEY, CA), ("extra", "1")]);
        let ann = map(&[(DESCRIPTION_ANNOTATION, DESCRIPTION)]);
        assert_eq!(
            plan(Some("Active"), Some(&cm(data.clone(), ann.clone())), CA),
            Action::Update
        );
    }

    #[test]
    fn the_update_resets_data_sets_the_description_and_keeps_the_rest() {
        let existing = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(CONFIG_MAP_NAME.to_owned()),
                namespace: Some("ns".to_owned()),
                resource_version: Some("42".to_owned()),
                labels: Some(map(&[("team", "a")])),
                annotations: Some(map(&[("other", "x")])),
                ..Default::default()
            },
            data: Some(map(&[(DATA_KEY, "tampered"), ("extra", "1")])),
            ..Default::default()
        };
        let cm = updated(&existing, CA);
        assert_eq!(cm.data, Some(map(&[(DATA_KEY, CA)])));
        assert_eq!(
            cm.metadata.annotations,
            Some(map(&[
                (DESCRIPTION_ANNOTATION, DESCRIPTION),
                ("other", "x")
            ]))
        );
        assert_eq!(cm.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(cm.metadata.labels, Some(map(&[("team", "a")])));
    }

    #[test]
    fn a_missing_annotation_is_restored() {
        let data = map(&[(DATA_KEY, CA)]);
        let ann = map(&[(DESCRIPTION_ANNOTATION, "")]);
        assert_eq!(
            plan(Some("Active"), Some(&cm(data.clone(), ann.clone())), CA),
            Action::Update
        );
        let ann = map(&[]);
        assert_eq!(
            plan(Some("Active"), Some(&cm(data.clone(), ann.clone())), CA),
            Action::Update
        );
    }

    #[test]
    fn an_existing_config_map_in_a_terminating_namespace_is_still_repaired() {
        let data = map(&[]);
        let ann = map(&[]);
        assert_eq!(
            plan(
                Some("Terminating"),
                Some(&cm(data.clone(), ann.clone())),
                CA
            ),
            Action::Update
        );
    }

    #[test]
    fn the_created_config_map_carries_the_bundle_and_the_description() {
        let cm = desired(CA);
        assert_eq!(cm.metadata.name.as_deref(), Some(CONFIG_MAP_NAME));
        assert_eq!(
            cm.data.and_then(|d| d.get(DATA_KEY).cloned()).as_deref(),
            Some(CA)
        );
        assert_eq!(
            cm.metadata
                .annotations
                .and_then(|a| a.get(DESCRIPTION_ANNOTATION).cloned())
                .as_deref(),
            Some(DESCRIPTION)
        );
    }
}
