//! `SchedulerProfile` (`config.ferrite.dev/v1alpha1`, cluster-scoped): one scheduling profile,
//! named by its schedulerName, that the scheduler puts in force while it runs.
//!
//! An object is a `KubeSchedulerProfile` whose `schedulerName` is the object's name: its
//! `plugins` are merged onto upstream's default plugins and its `pluginConfig` read exactly as a
//! `--config` file's profile is ([`config::resolve_profile_parts`]: the same merge, the same
//! validation, the same messages). It takes the place of the `--config` profile with the same
//! schedulerName (or of the default profile without `--config`), or adds a profile when there is
//! none; a profile without its own `percentageOfNodesToScore` uses the file's global one. An
//! invalid generation leaves the previous one in force and says why in its status; deleting the
//! object brings the file's profile back (or removes an added one).

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrite_runtime::live_config::{ConfigStatus, InForce, Invalid};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError, PluginsFile, Profile, SchedulerConfig};

/// `Valid=False` reasons.
pub const REASON_UNSUPPORTED_FIELD: &str = "UnsupportedField";
pub const REASON_INVALID_PROFILE: &str = "InvalidProfile";

/// A scheduling profile of the Ferrite scheduler: the object's name is the `schedulerName` of
/// the pods it schedules.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "config.ferrite.dev",
    version = "v1alpha1",
    kind = "SchedulerProfile",
    plural = "schedulerprofiles",
    shortname = "schedprofile",
    category = "ferrite",
    status = "ConfigStatus",
    derive = "PartialEq",
    doc = "A scheduling profile of the Ferrite scheduler, as a KubeSchedulerProfile whose schedulerName is the object's name. It replaces the scheduler's profile of that name (from --config, or the default profile) while it is valid, or adds one.",
    printcolumn = r#"{"name": "Valid", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Valid\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerProfileSpec {
    /// The share of feasible nodes to find before scoring (0: adaptive, as upstream). Unset:
    /// the `--config` file's global value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage_of_nodes_to_score: Option<i32>,
    /// Plugins enabled and disabled per extension point, with score weights, merged onto the
    /// default plugins as upstream merges a profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<PluginsFile>,
    /// Arguments of plugins, as a KubeSchedulerConfiguration's `pluginConfig` (e.g.
    /// NodeResourcesFit's `scoringStrategy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_config: Vec<PluginConfig>,
}

/// `v1.PluginConfig`: one plugin's arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginConfig {
    pub name: String,
    /// The plugin's arguments object (e.g. `NodeResourcesFitArgs`); fields Ferrite does not
    /// implement make the profile invalid rather than being ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub args: Option<serde_json::Value>,
}

/// Plugin arguments are kept as written (the apiserver prunes nothing), so that a field Ferrite
/// does not implement is named in the status instead of silently dropped.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn invalid(e: ConfigError) -> Invalid {
    match e {
        ConfigError::UnsupportedField { .. } => {
            Invalid::new(REASON_UNSUPPORTED_FIELD, e.to_string())
        }
        ConfigError::Syntax(_) | ConfigError::Invalid(_) => {
            Invalid::new(REASON_INVALID_PROFILE, e.to_string())
        }
    }
}

/// The profile an object puts in force, or why it cannot.
pub fn resolve(config: &SchedulerConfig, object: &SchedulerProfile) -> Result<Profile, Invalid> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let plugin_config: Vec<(String, Option<serde_json::Value>)> = object
        .spec
        .plugin_config
        .iter()
        .map(|pc| (pc.name.clone(), pc.args.clone()))
        .collect();
    config::resolve_profile_parts(
        "spec",
        name,
        object.spec.percentage_of_nodes_to_score,
        object.spec.plugins.as_ref(),
        &plugin_config,
        config.percentage_of_nodes_to_score,
    )
    .map_err(invalid)
}

/// The profiles in force given the objects' in-force values: the configuration's, with the
/// objects' in place of (or added to) them. Only an impossible combination (queue sorts that
/// differ, which no single profile can cause) falls back to the configuration's own.
pub fn in_force(config: &SchedulerConfig, snapshot: &InForce<Profile>) -> Vec<Arc<Profile>> {
    let overrides: BTreeMap<String, Arc<Profile>> = snapshot.values.clone();
    match config.profiles_with(&overrides) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "the SchedulerProfiles do not combine; the configuration's profiles stay in force");
            config.profiles.iter().cloned().map(Arc::new).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Point;

    fn object(name: &str, spec: serde_json::Value) -> SchedulerProfile {
        SchedulerProfile::new(name, serde_json::from_value(spec).expect("a valid spec"))
    }

    #[test]
    fn a_weight_and_a_disabled_score_plugin_resolve_as_in_a_config_file() {
        let p = resolve(
            &SchedulerConfig::default(),
            &object(
                "default-scheduler",
                serde_json::json!({"plugins": {
                    "score": {
                        "enabled": [{"name": "NodeAffinity", "weight": 7}],
                        "disabled": [{"name": "TaintToleration"}],
                    },
                }}),
            ),
        )
        .expect("valid");
        assert_eq!(p.scheduler_name, "default-scheduler");
        assert_eq!(p.score_weight("NodeAffinity"), Some(7));
        assert_eq!(p.score_weight("TaintToleration"), None);
        // Disabling its score leaves its filter.
        assert!(p.filter_enabled("TaintToleration"));
        assert_eq!(p.switches.weight_node_affinity, 7);
        assert_eq!(p.switches.weight_taint_toleration, 0);
    }

    #[test]
    fn plugin_args_are_read_like_a_files() {
        let p = resolve(
            &SchedulerConfig::default(),
            &object(
                "packer",
                serde_json::json!({"pluginConfig": [{"name": "NodeResourcesFit", "args": {
                    "scoringStrategy": {"type": "MostAllocated"}}}]}),
            ),
        )
        .expect("valid");
        assert!(matches!(
            p.fit_strategy,
            config::ScoringStrategy::MostAllocated(_)
        ));
    }

    #[test]
    fn an_unknown_plugin_is_invalid_with_the_frameworks_message() {
        let err = resolve(
            &SchedulerConfig::default(),
            &object(
                "default-scheduler",
                serde_json::json!({"plugins": {"score": {"enabled": [{"name": "NoSuchPlugin"}]}}}),
            ),
        )
        .expect_err("refused");
        assert_eq!(err.reason, REASON_INVALID_PROFILE);
        assert!(err.message.starts_with("spec.plugins"), "{}", err.message);
        assert!(err.message.contains("NoSuchPlugin"), "{}", err.message);
    }

    #[test]
    fn an_unimplemented_args_field_is_named() {
        let err = resolve(
            &SchedulerConfig::default(),
            &object(
                "default-scheduler",
                serde_json::json!({"pluginConfig": [{"name": "NodeResourcesFit",
                    "args": {"bogusField": 1}}]}),
            ),
        )
        .expect_err("refused");
        assert_eq!(err.reason, REASON_UNSUPPORTED_FIELD);
        assert!(err.message.contains("\"bogusField\""), "{}", err.message);
    }

    #[test]
    fn fixed_extension_points_stay_refused() {
        let err = resolve(
            &SchedulerConfig::default(),
            &object(
                "default-scheduler",
                serde_json::json!({"plugins": {"bind": {"disabled": [{"name": "*"}]}}}),
            ),
        )
        .expect_err("refused");
        assert_eq!(err.reason, REASON_INVALID_PROFILE);
    }

    #[test]
    fn objects_replace_profiles_by_name_and_add_new_ones_after_the_files() {
        let base = config::parse(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             percentageOfNodesToScore: 40\nprofiles:\n- schedulerName: a\n- schedulerName: b\n",
        )
        .expect("valid");
        let a = resolve(
            &base,
            &object(
                "a",
                serde_json::json!({"plugins": {"score": {"disabled": [{"name": "*"}]}}}),
            ),
        )
        .expect("valid");
        let c = resolve(&base, &object("c", serde_json::json!({}))).expect("valid");
        // The file's global percentage applies to a profile without its own.
        assert_eq!(c.percentage_of_nodes_to_score, Some(40));
        let snapshot = InForce {
            version: 1,
            synced: true,
            values: [
                ("a".to_string(), Arc::new(a)),
                ("c".to_string(), Arc::new(c)),
            ]
            .into_iter()
            .collect(),
        };
        let profiles = in_force(&base, &snapshot);
        let names: Vec<&str> = profiles.iter().map(|p| p.scheduler_name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(profiles[0].plugins.at(Point::Score).is_empty());
        assert!(!profiles[1].plugins.at(Point::Score).is_empty());
    }

    #[test]
    fn without_objects_the_configurations_profiles_are_in_force() {
        let base = SchedulerConfig::default();
        let snapshot = InForce {
            version: 1,
            synced: true,
            values: BTreeMap::new(),
        };
        let profiles = in_force(&base, &snapshot);
        assert_eq!(profiles.len(), 1);
        assert_eq!(*profiles[0], base.profiles[0]);
    }

    #[test]
    fn the_schema_keeps_plugin_args_as_written() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(SchedulerProfile::crd()).expect("serializable");
        assert_eq!(crd["spec"]["scope"], "Cluster");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let args = &spec["properties"]["pluginConfig"]["items"]["properties"]["args"];
        assert_eq!(args["x-kubernetes-preserve-unknown-fields"], true);
        assert!(
            spec["properties"]["plugins"]["properties"]["multiPoint"]["properties"]["enabled"]
                .is_object()
        );
    }
}
