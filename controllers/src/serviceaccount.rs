//! The service account controller: makes sure every active namespace has the `default`
//! ServiceAccount, and recreates it when it is deleted. It only ever creates; an existing account
//! is never touched.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/serviceaccount/serviceaccounts_controller.go.

use std::collections::BTreeSet;

use ferrite_runtime::informer::Change;
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};

use crate::manager::ControllerContext;

pub const NAME: &str = "serviceaccount-controller";

/// The accounts ensured in every namespace (upstream `DefaultServiceAccountsControllerOptions`).
pub const SERVICE_ACCOUNTS: &[&str] = &["default"];

/// Upstream runs this controller with a single worker (`sac.Run(ctx, 1)`).
const WORKERS: usize = 1;

/// `NamespaceTerminatingCause`: a create refused because the namespace is being deleted.
pub const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// The accounts to create in a namespace in `phase` that already holds `existing`. A namespace
/// that is not `Active` (terminating, or no phase yet) gets nothing, as upstream's
/// `syncNamespace`.
pub fn accounts_to_create<'a>(
    phase: Option<&str>,
    ensure: &[&'a str],
    existing: &BTreeSet<String>,
) -> Vec<&'a str> {
    if phase != Some("Active") {
        return Vec::new();
    }
    ensure
        .iter()
        .copied()
        .filter(|name| !existing.contains(*name))
        .collect()
}

/// Whether a failed create may be ignored: the account appeared meanwhile, or the namespace
/// started terminating (upstream ignores both).
pub fn ignorable_create_error(status: &kube::core::Status) -> bool {
    status.is_already_exists() || has_cause(status, NAMESPACE_TERMINATING_CAUSE)
}

/// `apierrors.HasStatusCause`.
pub fn has_cause(status: &kube::core::Status, cause: &str) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == cause))
}

// ---------------------------------------------------------------------------------------------
// Shell
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating service account {namespace}/{name}: {source}")]
    Create {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let queue: WorkQueue<String> =
        WorkQueue::new("serviceaccount", RateLimiter::default_controller())
            .with_metrics(&ctx.queue_metrics);
    let namespaces = ctx.informers.informer::<Namespace>();
    let accounts = ctx.informers.informer::<ServiceAccount>();
    {
        let q = queue.clone();
        namespaces.add_handler(move |change| match change {
            Change::Added(ns) | Change::Updated { new: ns, .. } => {
                if let Some(name) = &ns.metadata.name {
                    q.add(name.clone());
                }
            }
            Change::Deleted(_) => {}
        });
    }
    {
        let q = queue.clone();
        accounts.add_handler(move |change| {
            if let Change::Deleted(sa) = change
                && let Some(ns) = &sa.metadata.namespace
            {
                q.add(ns.clone());
            }
        });
    }
    let client = ctx.client.clone();
    let token = ctx.token.clone();
    Ok(async move {
        tracing::info!(controller = NAME, "starting controller");
        run_workers(queue, WORKERS, token, move |ns: String| {
            let (client, namespaces, accounts) =
                (client.clone(), namespaces.clone(), accounts.clone());
            async move {
                let Some(namespace) = namespaces.get(None, &ns) else {
                    return Ok(());
                };
                let phase = namespace.status.as_ref().and_then(|s| s.phase.as_deref());
                let existing: BTreeSet<String> = SERVICE_ACCOUNTS
                    .iter()
                    .filter(|name| accounts.get(Some(&ns), name).is_some())
                    .map(|name| (*name).to_owned())
                    .collect();
                let mut first_error = None;
                for name in accounts_to_create(phase, SERVICE_ACCOUNTS, &existing) {
                    if let Err(e) = create(&client, &ns, name).await {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        })
        .await;
        Ok(())
    }
    .boxed())
}

async fn create(client: &kube::Client, ns: &str, name: &str) -> Result<(), Error> {
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = ns, name, "created service account");
            Ok(())
        }
        Err(kube::Error::Api(status)) if ignorable_create_error(&status) => Ok(()),
        Err(source) => Err(Error::Create {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn an_active_namespace_without_default_gets_it() {
        assert_eq!(
            accounts_to_create(Some("Active"), SERVICE_ACCOUNTS, &existing(&[])),
            ["default"]
        );
    }

    #[test]
    fn an_active_namespace_with_default_gets_nothing() {
        assert!(
            accounts_to_create(Some("Active"), SERVICE_ACCOUNTS, &existing(&["default"]))
                .is_empty()
        );
    }

    #[test]
    fn other_accounts_do_not_count_as_default() {
        assert_eq!(
            accounts_to_create(Some("Active"), SERVICE_ACCOUNTS, &existing(&["builder"])),
            ["default"]
        );
    }

    #[test]
    fn a_terminating_namespace_gets_nothing() {
        assert!(
            accounts_to_create(Some("Terminating"), SERVICE_ACCOUNTS, &existing(&[])).is_empty()
        );
    }

    #[test]
    fn a_namespace_without_a_phase_gets_nothing() {
        assert!(accounts_to_create(None, SERVICE_ACCOUNTS, &existing(&[])).is_empty());
    }

    #[test]
    fn every_missing_account_of_several_is_created_in_order() {
        assert_eq!(
            accounts_to_create(Some("Active"), &["default", "b", "c"], &existing(&["b"])),
            ["default", "c"]
        );
    }

    #[test]
    fn already_exists_and_namespace_terminating_are_ignorable_others_are_not() {
        let exists = kube::core::Status {
            reason: "AlreadyExists".into(),
            code: 409,
            ..Default::default()
        };
        let terminating: kube::core::Status = serde_json::from_value(serde_json::json!({
            "reason": "Forbidden", "code": 403,
            "details": {"causes": [{"reason": NAMESPACE_TERMINATING_CAUSE}]},
        }))
        .unwrap_or_default();
        assert!(terminating.details.is_some());
        let forbidden = kube::core::Status {
            reason: "Forbidden".into(),
            code: 403,
            ..Default::default()
        };
        assert!(ignorable_create_error(&exists));
        assert!(ignorable_create_error(&terminating));
        assert!(!ignorable_create_error(&forbidden));
    }
}
