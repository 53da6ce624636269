//! Controller names as kube-controller-manager knows them (canonical names and the aliases that
//! `--controllers` also accepts), and upstream's `--controllers` semantics.
//! Mirrors kubernetes/kubernetes cmd/kube-controller-manager/names and app.IsControllerEnabled.

use std::collections::BTreeSet;

pub struct Descriptor {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Off under `*`; on only when named (bootstrapsigner, tokencleaner).
    pub disabled_by_default: bool,
}

const fn d(name: &'static str, aliases: &'static [&'static str]) -> Descriptor {
    Descriptor {
        name,
        aliases,
        disabled_by_default: false,
    }
}

pub const KNOWN: &[Descriptor] = &[
    d("serviceaccount-token-controller", &["serviceaccount-token"]),
    d("endpoints-controller", &["endpoint"]),
    d("endpointslice-controller", &["endpointslice"]),
    d(
        "endpointslice-mirroring-controller",
        &["endpointslicemirroring"],
    ),
    d(
        "replicationcontroller-controller",
        &["replicationcontroller"],
    ),
    d("pod-garbage-collector-controller", &["podgc"]),
    d("resourcequota-controller", &["resourcequota"]),
    d("namespace-controller", &["namespace"]),
    d("serviceaccount-controller", &["serviceaccount"]),
    d("garbage-collector-controller", &["garbagecollector"]),
    d("daemonset-controller", &["daemonset"]),
    d("job-controller", &["job"]),
    d("deployment-controller", &["deployment"]),
    d("replicaset-controller", &["replicaset"]),
    d(
        "horizontal-pod-autoscaler-controller",
        &["horizontalpodautoscaling"],
    ),
    d("disruption-controller", &["disruption"]),
    d("statefulset-controller", &["statefulset"]),
    d("cronjob-controller", &["cronjob"]),
    d(
        "certificatesigningrequest-signing-controller",
        &["csrsigning"],
    ),
    d(
        "certificatesigningrequest-approving-controller",
        &["csrapproving"],
    ),
    d(
        "certificatesigningrequest-cleaner-controller",
        &["csrcleaner"],
    ),
    d("ttl-controller", &["ttl"]),
    Descriptor {
        name: "bootstrap-signer-controller",
        aliases: &["bootstrapsigner"],
        disabled_by_default: true,
    },
    Descriptor {
        name: "token-cleaner-controller",
        aliases: &["tokencleaner"],
        disabled_by_default: true,
    },
    d("node-ipam-controller", &["nodeipam"]),
    d("node-lifecycle-controller", &["nodelifecycle"]),
    d("taint-eviction-controller", &[]),
    d(
        "persistentvolume-binder-controller",
        &["persistentvolume-binder"],
    ),
    d(
        "persistentvolume-attach-detach-controller",
        &["attachdetach"],
    ),
    d(
        "persistentvolume-expander-controller",
        &["persistentvolume-expander"],
    ),
    d(
        "clusterrole-aggregation-controller",
        &["clusterrole-aggregation"],
    ),
    d(
        "persistentvolumeclaim-protection-controller",
        &["pvc-protection"],
    ),
    d("persistentvolume-protection-controller", &["pv-protection"]),
    d("ttl-after-finished-controller", &["ttl-after-finished"]),
    d(
        "root-ca-certificate-publisher-controller",
        &["root-ca-cert-publisher"],
    ),
    d("ephemeral-volume-controller", &["ephemeral-volume"]),
    d(
        "storageversion-garbage-collector-controller",
        &["storage-version-gc"],
    ),
    d("resourceclaim-controller", &["resource-claim-controller"]),
    d(
        "legacy-serviceaccount-token-cleaner-controller",
        &["legacy-service-account-token-cleaner"],
    ),
    d("validatingadmissionpolicy-status-controller", &[]),
    d("service-cidr-controller", &[]),
    d("storage-version-migrator-controller", &[]),
    d("cloud-node-lifecycle-controller", &["cloud-node-lifecycle"]),
    d("node-route-controller", &["route"]),
    d("service-lb-controller", &["service"]),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamesError {
    #[error("--controllers: {0:?} is not a known controller (see --help for the list)")]
    Unknown(String),
}

/// The canonical name for a canonical name or alias.
pub fn canonical(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|d| d.name == name || d.aliases.contains(&name))
        .map(|d| d.name)
}

/// Which controllers `--controllers` enables, as canonical names. `*` enables all that are on by
/// default, `foo` enables foo, `-foo` disables foo; the first entry naming a controller wins.
pub fn enabled(flag: &[String]) -> Result<BTreeSet<&'static str>, NamesError> {
    let mut entries: Vec<(bool, Option<&'static str>)> = Vec::new();
    for raw in flag {
        let item = raw.trim();
        if item == "*" {
            entries.push((true, None));
            continue;
        }
        let (on, name) = match item.strip_prefix('-') {
            Some(rest) => (false, rest),
            None => (true, item),
        };
        let canon = canonical(name).ok_or_else(|| NamesError::Unknown(item.to_string()))?;
        entries.push((on, Some(canon)));
    }
    let star = entries.iter().any(|(_, n)| n.is_none());
    Ok(KNOWN
        .iter()
        .filter(|d| match entries.iter().find(|(_, n)| *n == Some(d.name)) {
            Some((on, _)) => *on,
            None => star && !d.disabled_by_default,
        })
        .map(|d| d.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn star_enables_every_default_controller_but_not_the_disabled_by_default_ones() {
        let on = enabled(&flag("*")).expect("valid");
        assert!(on.contains("deployment-controller"));
        assert!(!on.contains("bootstrap-signer-controller"));
        assert!(!on.contains("token-cleaner-controller"));
    }

    #[test]
    fn minus_name_disables_and_aliases_resolve_to_canonical_names() {
        let on = enabled(&flag("*,-deployment,bootstrapsigner")).expect("valid");
        assert!(!on.contains("deployment-controller"));
        assert!(on.contains("bootstrap-signer-controller"));
        assert!(on.contains("replicaset-controller"));
    }

    #[test]
    fn without_star_only_named_controllers_run() {
        let on = enabled(&flag("job,cronjob-controller")).expect("valid");
        assert_eq!(
            on.into_iter().collect::<Vec<_>>(),
            vec!["cronjob-controller", "job-controller"]
        );
    }

    #[test]
    fn the_first_entry_naming_a_controller_wins() {
        let on = enabled(&flag("-job,job,*")).expect("valid");
        assert!(!on.contains("job-controller"));
    }

    #[test]
    fn unknown_names_are_a_clear_error() {
        assert_eq!(
            enabled(&flag("*,-nosuch")),
            Err(NamesError::Unknown("-nosuch".into()))
        );
        assert_eq!(
            enabled(&flag("deploymnet")),
            Err(NamesError::Unknown("deploymnet".into()))
        );
    }
}
