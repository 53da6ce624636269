//! What the controllers run with: the settings from flags (the base) and the
//! `ControllerConfiguration` custom resource (`config.ferrite.dev/v1alpha1`, cluster-scoped, the
//! one named `default`) that overrides them while the controller manager runs.
//!
//! Precedence, field by field: a field set in `default` wins over its flag; a field left unset
//! keeps the flag's value (or the flag's upstream default). When `default` is changed to
//! something invalid, the last valid generation stays in force and the object's status says why
//! (`Valid=False`); when `default` is deleted, the flags alone are in force again.
//!
//! Field names follow kube-controller-manager's component configuration
//! (`KubeControllerManagerConfiguration`, staging/src/k8s.io/kube-controller-manager/config):
//! `controllers` is `generic.controllers` (the `--controllers` list), and each controller's
//! section carries the upstream field of its `--concurrent-*-syncs` flag and its tunables.
//! `nodeMonitorPeriod` sits with the node-lifecycle controller, which is its only user (upstream
//! keeps it in `kubeCloudShared`).
//!
//! Everything here but the resource type is pure; [`ControllerSettings::overridden_by`] is the
//! merge and the validation, unit-tested below.

use std::collections::BTreeSet;
use std::time::Duration;

use ferrite_runtime::live_config::{ConfigStatus, Invalid};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names;

/// The only `ControllerConfiguration` the controller manager reads.
pub const DEFAULT_NAME: &str = "default";

/// `Valid=False` reasons.
pub const REASON_UNKNOWN_CONTROLLER: &str = "UnknownController";
pub const REASON_INVALID_VALUE: &str = "InvalidValue";
pub const REASON_NOT_DEFAULT: &str = "NotDefault";

// ---------------------------------------------------------------------------------------------
// The resource
// ---------------------------------------------------------------------------------------------

/// The controller manager's configuration. Only the object named `default` is read; a field
/// set here overrides the controller manager's flag of the same meaning, a field left unset
/// keeps the flag. Changes take effect without a restart: a controller that is disabled stops,
/// one that is enabled starts, and one whose settings change is restarted with them.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "config.ferrite.dev",
    version = "v1alpha1",
    kind = "ControllerConfiguration",
    plural = "controllerconfigurations",
    shortname = "ctrlconfig",
    category = "ferrite",
    status = "ConfigStatus",
    derive = "PartialEq",
    doc = "The Ferrite controller manager's configuration (only the object named `default` is read). A field set here overrides the flag of the same meaning while the controller manager runs; a field left unset keeps the flag.",
    printcolumn = r#"{"name": "Valid", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Valid\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ControllerConfigurationSpec {
    /// The controllers to run, as `--controllers`: `*` enables every controller that is on by
    /// default, `foo` enables foo, `-foo` disables foo; the first entry naming a controller
    /// wins. Names are kube-controller-manager's (canonical names or their aliases, e.g.
    /// `serviceaccount-controller` or `serviceaccount`). Unset: the flag's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controllers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_controller: Option<DeploymentControllerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_set_controller: Option<ReplicaSetControllerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_controller: Option<JobControllerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job_controller: Option<CronJobControllerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garbage_collector_controller: Option<GarbageCollectorControllerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "ttlAfterFinishedController")]
    pub ttl_after_finished_controller: Option<TtlAfterFinishedControllerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "podGCController")]
    pub pod_gc_controller: Option<PodGcControllerConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_lifecycle_controller: Option<NodeLifecycleControllerConfiguration>,
}

/// The deployment controller (`deployment-controller`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentControllerConfiguration {
    /// Deployments synced concurrently (`--concurrent-deployment-syncs`, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrent_deployment_syncs: Option<i32>,
}

/// The ReplicaSet controller (`replicaset-controller`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplicaSetControllerConfiguration {
    /// ReplicaSets synced concurrently (`--concurrent-replicaset-syncs`, default 5).
    #[serde(
        default,
        rename = "concurrentRSSyncs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1))]
    pub concurrent_rs_syncs: Option<i32>,
}

/// The Job controller (`job-controller`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobControllerConfiguration {
    /// Jobs synced concurrently (`--concurrent-job-syncs`, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrent_job_syncs: Option<i32>,
}

/// The CronJob controller (`cronjob-controller`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronJobControllerConfiguration {
    /// CronJobs synced concurrently (`--concurrent-cron-job-syncs`, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrent_cron_job_syncs: Option<i32>,
}

/// The garbage collector (`garbage-collector-controller`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GarbageCollectorControllerConfiguration {
    /// Workers of each of the collector's queues (`--concurrent-gc-syncs`, default 20).
    #[serde(
        default,
        rename = "concurrentGCSyncs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1))]
    pub concurrent_gc_syncs: Option<i32>,
}

/// The TTL-after-finished controller (`ttl-after-finished-controller`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TtlAfterFinishedControllerConfiguration {
    /// Workers (`--concurrent-ttl-after-finished-syncs`, default 5).
    #[serde(
        default,
        rename = "concurrentTTLSyncs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1))]
    pub concurrent_ttl_syncs: Option<i32>,
}

/// The pod garbage collector (`pod-garbage-collector-controller`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodGcControllerConfiguration {
    /// Terminated pods kept before the collector deletes the oldest
    /// (`--terminated-pod-gc-threshold`, default 12500; 0 or less keeps them all).
    #[serde(
        default,
        rename = "terminatedPodGCThreshold",
        skip_serializing_if = "Option::is_none"
    )]
    pub terminated_pod_gc_threshold: Option<i64>,
}

/// The node-lifecycle controller (`node-lifecycle-controller`). Durations are Go durations
/// (`40s`, `1m30s`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeLifecycleControllerConfiguration {
    /// How often node status is checked (`--node-monitor-period`, default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_monitor_period: Option<String>,
    /// How long a running node may go without a status update before it is marked unhealthy
    /// (`--node-monitor-grace-period`, default 50s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_monitor_grace_period: Option<String>,
    /// The same for a node that is starting (`--node-startup-grace-period`, default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_startup_grace_period: Option<String>,
    /// Nodes per second whose pods are evicted when their zone is healthy
    /// (`--node-eviction-rate`, default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub node_eviction_rate: Option<f64>,
    /// Nodes per second whose pods are evicted when their zone is unhealthy
    /// (`--secondary-node-eviction-rate`, default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub secondary_node_eviction_rate: Option<f64>,
    /// Nodes from which a cluster counts as large for eviction (`--large-cluster-size-threshold`,
    /// default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub large_cluster_size_threshold: Option<i32>,
    /// Fraction of a zone's nodes (at least 3) not Ready for the zone to be unhealthy
    /// (`--unhealthy-zone-threshold`, default 0.55).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub unhealthy_zone_threshold: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// The settings in force
// ---------------------------------------------------------------------------------------------

/// Upstream defaults of the settings that are not the controllers' own constants.
pub const DEFAULT_CONCURRENT_DEPLOYMENT_SYNCS: usize = 5;
pub const DEFAULT_CONCURRENT_REPLICASET_SYNCS: usize = 5;
pub const DEFAULT_CONCURRENT_JOB_SYNCS: usize = 5;
pub const DEFAULT_CONCURRENT_CRON_JOB_SYNCS: usize = 5;
pub const DEFAULT_CONCURRENT_GC_SYNCS: usize = 20;
pub const DEFAULT_CONCURRENT_TTL_AFTER_FINISHED_SYNCS: usize = 5;

/// What every controller runs with. The manager builds it from the flags and the `default`
/// `ControllerConfiguration`, and hands each controller the value in force when it starts
/// (`ControllerContext::settings`).
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerSettings {
    /// Canonical names of the enabled controllers (implemented or not).
    pub enabled: BTreeSet<&'static str>,
    pub concurrent_deployment_syncs: usize,
    pub concurrent_replicaset_syncs: usize,
    pub concurrent_job_syncs: usize,
    pub concurrent_cron_job_syncs: usize,
    pub concurrent_gc_syncs: usize,
    pub concurrent_ttl_after_finished_syncs: usize,
    /// `--terminated-pod-gc-threshold`; 0 or less disables that part of the pod GC.
    pub terminated_pod_gc_threshold: i64,
    pub node_lifecycle: NodeLifecycleSettings,
}

impl Default for ControllerSettings {
    /// Upstream's defaults: `--controllers=*` and every default value.
    fn default() -> Self {
        ControllerSettings {
            enabled: names::enabled(&["*".to_string()]).unwrap_or_default(),
            concurrent_deployment_syncs: DEFAULT_CONCURRENT_DEPLOYMENT_SYNCS,
            concurrent_replicaset_syncs: DEFAULT_CONCURRENT_REPLICASET_SYNCS,
            concurrent_job_syncs: DEFAULT_CONCURRENT_JOB_SYNCS,
            concurrent_cron_job_syncs: DEFAULT_CONCURRENT_CRON_JOB_SYNCS,
            concurrent_gc_syncs: DEFAULT_CONCURRENT_GC_SYNCS,
            concurrent_ttl_after_finished_syncs: DEFAULT_CONCURRENT_TTL_AFTER_FINISHED_SYNCS,
            terminated_pod_gc_threshold: crate::podgc::DEFAULT_TERMINATED_POD_GC_THRESHOLD,
            node_lifecycle: NodeLifecycleSettings::default(),
        }
    }
}

/// The node-lifecycle controller's settings (pkg/controller/nodelifecycle/config and
/// `--node-monitor-period`). The node-lifecycle controller reads them from its context's
/// settings; the manager restarts it when they change, like any controller's.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLifecycleSettings {
    pub node_monitor_period: Duration,
    pub node_monitor_grace_period: Duration,
    pub node_startup_grace_period: Duration,
    pub node_eviction_rate: f32,
    pub secondary_node_eviction_rate: f32,
    pub large_cluster_size_threshold: i32,
    pub unhealthy_zone_threshold: f32,
}

impl Default for NodeLifecycleSettings {
    /// Upstream's flag defaults (kube-controller-manager v1.37).
    fn default() -> Self {
        NodeLifecycleSettings {
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(50),
            node_startup_grace_period: Duration::from_secs(60),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
        }
    }
}

/// What a running controller was started with, beyond being enabled: when it differs between
/// two settings, the manager restarts the controller with the new ones.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    /// Nothing configurable.
    Fixed,
    Workers(usize),
    PodGc {
        terminated_pod_gc_threshold: i64,
    },
    NodeLifecycle(NodeLifecycleSettings),
}

impl ControllerSettings {
    /// The worker count of a controller with a `--concurrent-*-syncs` flag.
    pub fn workers(&self, controller: &str) -> Option<usize> {
        Some(match controller {
            "deployment-controller" => self.concurrent_deployment_syncs,
            "replicaset-controller" => self.concurrent_replicaset_syncs,
            "job-controller" => self.concurrent_job_syncs,
            "cronjob-controller" => self.concurrent_cron_job_syncs,
            "garbage-collector-controller" => self.concurrent_gc_syncs,
            "ttl-after-finished-controller" => self.concurrent_ttl_after_finished_syncs,
            _ => return None,
        })
    }

    /// The settings `controller` depends on.
    pub fn scope(&self, controller: &str) -> Scope {
        if let Some(n) = self.workers(controller) {
            return Scope::Workers(n);
        }
        match controller {
            "pod-garbage-collector-controller" => Scope::PodGc {
                terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            },
            "node-lifecycle-controller" => Scope::NodeLifecycle(self.node_lifecycle.clone()),
            _ => Scope::Fixed,
        }
    }

    /// These settings with every field `spec` sets in place of its own, or why `spec` cannot be
    /// put in force.
    pub fn overridden_by(&self, spec: &ControllerConfigurationSpec) -> Result<Self, Invalid> {
        let mut out = self.clone();
        if let Some(list) = &spec.controllers {
            out.enabled = names::enabled(list).map_err(|names::NamesError::Unknown(name)| {
                Invalid::new(
                    REASON_UNKNOWN_CONTROLLER,
                    format!(
                        "spec.controllers: Unsupported value: {name:?}: not a controller kube-controller-manager knows"
                    ),
                )
            })?;
        }
        let workers = |path: &str, v: Option<i32>, current: usize| -> Result<usize, Invalid> {
            match v {
                None => Ok(current),
                Some(n) if n >= 1 => Ok(n as usize),
                Some(n) => Err(Invalid::new(
                    REASON_INVALID_VALUE,
                    format!("spec.{path}: Invalid value: {n}: must be greater than 0"),
                )),
            }
        };
        if let Some(c) = &spec.deployment_controller {
            out.concurrent_deployment_syncs = workers(
                "deploymentController.concurrentDeploymentSyncs",
                c.concurrent_deployment_syncs,
                out.concurrent_deployment_syncs,
            )?;
        }
        if let Some(c) = &spec.replica_set_controller {
            out.concurrent_replicaset_syncs = workers(
                "replicaSetController.concurrentRSSyncs",
                c.concurrent_rs_syncs,
                out.concurrent_replicaset_syncs,
            )?;
        }
        if let Some(c) = &spec.job_controller {
            out.concurrent_job_syncs = workers(
                "jobController.concurrentJobSyncs",
                c.concurrent_job_syncs,
                out.concurrent_job_syncs,
            )?;
        }
        if let Some(c) = &spec.cron_job_controller {
            out.concurrent_cron_job_syncs = workers(
                "cronJobController.concurrentCronJobSyncs",
                c.concurrent_cron_job_syncs,
                out.concurrent_cron_job_syncs,
            )?;
        }
        if let Some(c) = &spec.garbage_collector_controller {
            out.concurrent_gc_syncs = workers(
                "garbageCollectorController.concurrentGCSyncs",
                c.concurrent_gc_syncs,
                out.concurrent_gc_syncs,
            )?;
        }
        if let Some(c) = &spec.ttl_after_finished_controller {
            out.concurrent_ttl_after_finished_syncs = workers(
                "ttlAfterFinishedController.concurrentTTLSyncs",
                c.concurrent_ttl_syncs,
                out.concurrent_ttl_after_finished_syncs,
            )?;
        }
        if let Some(t) = spec
            .pod_gc_controller
            .as_ref()
            .and_then(|c| c.terminated_pod_gc_threshold)
        {
            out.terminated_pod_gc_threshold = t;
        }
        if let Some(c) = &spec.node_lifecycle_controller {
            out.node_lifecycle = out.node_lifecycle.overridden_by(c)?;
        }
        Ok(out)
    }
}

impl NodeLifecycleSettings {
    fn overridden_by(&self, c: &NodeLifecycleControllerConfiguration) -> Result<Self, Invalid> {
        const PATH: &str = "spec.nodeLifecycleController";
        let bad = |field: &str, value: String, why: &str| {
            Invalid::new(
                REASON_INVALID_VALUE,
                format!("{PATH}.{field}: Invalid value: {value}: {why}"),
            )
        };
        let duration = |field: &str, v: &Option<String>, current: Duration| match v {
            None => Ok(current),
            Some(s) => match ferrite_runtime::flags::parse_go_duration(s) {
                Ok(n) if n > 0 => Ok(Duration::from_nanos(n as u64)),
                Ok(_) => Err(bad(field, format!("{s:?}"), "must be greater than 0")),
                Err(e) => Err(bad(field, format!("{s:?}"), &e.to_string())),
            },
        };
        // Written as JSON numbers (f64, so that 0.1 reads back as 0.1); upstream's fields are
        // float32.
        let rate = |field: &str, v: Option<f64>, current: f32| match v {
            None => Ok(current),
            Some(r) if r.is_finite() && r >= 0.0 => Ok(r as f32),
            Some(r) => Err(bad(field, r.to_string(), "must be 0 or greater")),
        };
        let mut out = self.clone();
        out.node_monitor_period = duration(
            "nodeMonitorPeriod",
            &c.node_monitor_period,
            out.node_monitor_period,
        )?;
        out.node_monitor_grace_period = duration(
            "nodeMonitorGracePeriod",
            &c.node_monitor_grace_period,
            out.node_monitor_grace_period,
        )?;
        out.node_startup_grace_period = duration(
            "nodeStartupGracePeriod",
            &c.node_startup_grace_period,
            out.node_startup_grace_period,
        )?;
        out.node_eviction_rate = rate(
            "nodeEvictionRate",
            c.node_eviction_rate,
            out.node_eviction_rate,
        )?;
        out.secondary_node_eviction_rate = rate(
            "secondaryNodeEvictionRate",
            c.secondary_node_eviction_rate,
            out.secondary_node_eviction_rate,
        )?;
        if let Some(n) = c.large_cluster_size_threshold {
            if n < 0 {
                return Err(bad(
                    "largeClusterSizeThreshold",
                    n.to_string(),
                    "must be 0 or greater",
                ));
            }
            out.large_cluster_size_threshold = n;
        }
        if let Some(t) = c.unhealthy_zone_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(bad(
                    "unhealthyZoneThreshold",
                    t.to_string(),
                    "must be between 0 and 1",
                ));
            }
            out.unhealthy_zone_threshold = t as f32;
        }
        Ok(out)
    }
}

/// The settings a `ControllerConfiguration` puts in force over `base` (the flags'), or why it
/// cannot: only `default` is read.
pub fn resolve(
    base: &ControllerSettings,
    object: &ControllerConfiguration,
) -> Result<ControllerSettings, Invalid> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    if name != DEFAULT_NAME {
        return Err(Invalid::new(
            REASON_NOT_DEFAULT,
            format!(
                "only the ControllerConfiguration named {DEFAULT_NAME:?} configures the controller manager; {name:?} is ignored"
            ),
        ));
    }
    base.overridden_by(&object.spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ControllerConfigurationSpec {
        serde_json::from_value(json).expect("a valid spec")
    }

    fn flags(controllers: &str) -> ControllerSettings {
        let list: Vec<String> = controllers.split(',').map(str::to_string).collect();
        ControllerSettings {
            enabled: names::enabled(&list).expect("known controllers"),
            ..ControllerSettings::default()
        }
    }

    #[test]
    fn an_empty_spec_keeps_every_flag() {
        let base = ControllerSettings {
            concurrent_deployment_syncs: 9,
            terminated_pod_gc_threshold: 7,
            ..flags("job,deployment")
        };
        assert_eq!(base.overridden_by(&spec(serde_json::json!({}))), Ok(base));
    }

    #[test]
    fn controllers_replace_the_flag_list_with_its_semantics() {
        let base = flags("*");
        let out = base
            .overridden_by(&spec(
                serde_json::json!({"controllers": ["*", "-serviceaccount"]}),
            ))
            .expect("valid");
        assert!(!out.enabled.contains("serviceaccount-controller"));
        assert!(out.enabled.contains("deployment-controller"));
        assert!(!out.enabled.contains("bootstrap-signer-controller"));
        let out = base
            .overridden_by(&spec(serde_json::json!({"controllers": ["job"]})))
            .expect("valid");
        assert_eq!(
            out.enabled.iter().copied().collect::<Vec<_>>(),
            ["job-controller"]
        );
    }

    #[test]
    fn an_empty_controller_list_disables_every_controller() {
        let out = flags("*")
            .overridden_by(&spec(serde_json::json!({"controllers": []})))
            .expect("valid");
        assert!(out.enabled.is_empty());
    }

    #[test]
    fn an_unknown_controller_is_refused_naming_it() {
        let err = flags("*")
            .overridden_by(&spec(
                serde_json::json!({"controllers": ["job", "-nosuch"]}),
            ))
            .expect_err("refused");
        assert_eq!(err.reason, REASON_UNKNOWN_CONTROLLER);
        assert!(err.message.contains("\"-nosuch\""), "{}", err.message);
        assert!(
            err.message.starts_with("spec.controllers"),
            "{}",
            err.message
        );
    }

    #[test]
    fn concurrency_fields_override_their_flags_and_leave_the_others() {
        let base = ControllerSettings {
            concurrent_job_syncs: 3,
            ..flags("*")
        };
        let out = base
            .overridden_by(&spec(serde_json::json!({
                "deploymentController": {"concurrentDeploymentSyncs": 10},
                "replicaSetController": {"concurrentRSSyncs": 11},
                "cronJobController": {"concurrentCronJobSyncs": 12},
                "garbageCollectorController": {"concurrentGCSyncs": 13},
                "ttlAfterFinishedController": {"concurrentTTLSyncs": 14},
                "jobController": {},
            })))
            .expect("valid");
        assert_eq!(out.workers("deployment-controller"), Some(10));
        assert_eq!(out.workers("replicaset-controller"), Some(11));
        assert_eq!(out.workers("cronjob-controller"), Some(12));
        assert_eq!(out.workers("garbage-collector-controller"), Some(13));
        assert_eq!(out.workers("ttl-after-finished-controller"), Some(14));
        assert_eq!(out.workers("job-controller"), Some(3));
        assert_eq!(out.workers("serviceaccount-controller"), None);
    }

    #[test]
    fn zero_workers_are_refused_with_the_field_path() {
        let err = flags("*")
            .overridden_by(&spec(serde_json::json!({
                "garbageCollectorController": {"concurrentGCSyncs": 0}
            })))
            .expect_err("refused");
        assert_eq!(err.reason, REASON_INVALID_VALUE);
        assert_eq!(
            err.message,
            "spec.garbageCollectorController.concurrentGCSyncs: Invalid value: 0: must be greater than 0"
        );
    }

    #[test]
    fn the_terminated_pod_threshold_may_disable_that_collection() {
        let out = flags("*")
            .overridden_by(&spec(serde_json::json!({
                "podGCController": {"terminatedPodGCThreshold": 0}
            })))
            .expect("valid");
        assert_eq!(out.terminated_pod_gc_threshold, 0);
    }

    #[test]
    fn node_lifecycle_settings_parse_go_durations_and_check_ranges() {
        let out = flags("*")
            .overridden_by(&spec(serde_json::json!({
                "nodeLifecycleController": {
                    "nodeMonitorGracePeriod": "1m30s",
                    "nodeEvictionRate": 0.5,
                    "unhealthyZoneThreshold": 0.7,
                }
            })))
            .expect("valid");
        assert_eq!(
            out.node_lifecycle.node_monitor_grace_period,
            Duration::from_secs(90)
        );
        assert_eq!(out.node_lifecycle.node_eviction_rate, 0.5);
        assert_eq!(out.node_lifecycle.unhealthy_zone_threshold, 0.7);
        assert_eq!(
            out.node_lifecycle.node_startup_grace_period,
            Duration::from_secs(60)
        );
        for (field, value, why) in [
            ("nodeMonitorPeriod", serde_json::json!("5 seconds"), "time:"),
            (
                "nodeStartupGracePeriod",
                serde_json::json!("0s"),
                "greater than 0",
            ),
            (
                "secondaryNodeEvictionRate",
                serde_json::json!(-1.0),
                "0 or greater",
            ),
            (
                "unhealthyZoneThreshold",
                serde_json::json!(1.5),
                "between 0 and 1",
            ),
            (
                "largeClusterSizeThreshold",
                serde_json::json!(-2),
                "0 or greater",
            ),
        ] {
            let err = flags("*")
                .overridden_by(&spec(
                    serde_json::json!({"nodeLifecycleController": {field: value}}),
                ))
                .expect_err("refused");
            assert_eq!(err.reason, REASON_INVALID_VALUE, "{field}");
            assert!(
                err.message.starts_with(&format!(
                    "spec.nodeLifecycleController.{field}: Invalid value"
                )),
                "{}",
                err.message
            );
            assert!(err.message.contains(why), "{}", err.message);
        }
    }

    #[test]
    fn a_change_of_workers_or_of_a_controllers_settings_changes_its_scope_only() {
        let a = flags("*");
        let b = a
            .overridden_by(&spec(serde_json::json!({
                "deploymentController": {"concurrentDeploymentSyncs": 8},
                "podGCController": {"terminatedPodGCThreshold": 5},
                "nodeLifecycleController": {"nodeEvictionRate": 1.0},
            })))
            .expect("valid");
        for changed in [
            "deployment-controller",
            "pod-garbage-collector-controller",
            "node-lifecycle-controller",
        ] {
            assert_ne!(a.scope(changed), b.scope(changed), "{changed}");
        }
        for same in [
            "replicaset-controller",
            "serviceaccount-controller",
            "garbage-collector-controller",
        ] {
            assert_eq!(a.scope(same), b.scope(same), "{same}");
        }
    }

    #[test]
    fn only_the_object_named_default_is_read() {
        let base = flags("*");
        let other = ControllerConfiguration::new("mine", ControllerConfigurationSpec::default());
        let err = resolve(&base, &other).expect_err("ignored");
        assert_eq!(err.reason, REASON_NOT_DEFAULT);
        let default = ControllerConfiguration::new(
            DEFAULT_NAME,
            spec(serde_json::json!({"controllers": ["job"]})),
        );
        assert_eq!(resolve(&base, &default).map(|s| s.enabled.len()), Ok(1));
    }

    #[test]
    fn the_schema_names_fields_as_upstream_and_bounds_the_worker_counts() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(ControllerConfiguration::crd()).expect("serializable");
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["group"], "config.ferrite.dev");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(
            spec["replicaSetController"]["properties"]["concurrentRSSyncs"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert!(spec["podGCController"]["properties"]["terminatedPodGCThreshold"].is_object());
        assert!(spec["ttlAfterFinishedController"]["properties"]["concurrentTTLSyncs"].is_object());
    }
}
