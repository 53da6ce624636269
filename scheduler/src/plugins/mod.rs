//! The default profile's plugins (pkg/scheduler/framework/plugins), as pure functions over a
//! pod and a [`NodeInfo`](crate::cache::NodeInfo). Filters return `None` when the node passes,
//! else a [`Status`] with upstream's reason strings; scores return upstream's raw numbers, which
//! the framework normalizes and weighs.

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod scheduling_gates;
pub mod taint_toleration;
pub mod volumes;

/// `framework.MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

/// The rejection codes of `fwk.Code` that filters use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Preemption might make the node fit.
    Unschedulable,
    /// Nothing short of a change to the node or the pod helps.
    UnschedulableAndUnresolvable,
}

/// A filter's rejection: code, reasons and the plugin that said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn new(code: Code, plugin: &'static str, reason: impl Into<String>) -> Self {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin,
        }
    }
}

/// `helper.DefaultNormalizeScore`: scales scores to [0, max] by the highest one; `reverse`
/// turns "more is worse" counts into scores.
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = max_priority);
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = max_priority * *s / max;
        if reverse {
            v = max_priority - v;
        }
        *s = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Table of pkg/scheduler/framework/plugins/helper/normalize_score_test.go.
    #[test]
    fn default_normalize_score_matches_upstream_table() {
        let cases: &[(bool, &[i64], &[i64])] = &[
            (false, &[10, 20, 30], &[33, 66, 100]),
            (true, &[10, 20, 30], &[67, 34, 0]),
            (false, &[1, 1, 1], &[100, 100, 100]),
            (true, &[1, 1, 1], &[0, 0, 0]),
            (false, &[0, 0, 0], &[0, 0, 0]),
            (true, &[0, 0, 0], &[100, 100, 100]),
            (false, &[1000, 10, 20, 30], &[100, 1, 2, 3]),
            (true, &[1000, 10, 20, 30], &[0, 99, 98, 97]),
            (false, &[1, 1, 1, 1000], &[0, 0, 0, 100]),
            (true, &[1, 1, 1, 1000], &[100, 100, 100, 0]),
        ];
        for (reverse, input, want) in cases {
            let mut s = input.to_vec();
            default_normalize_score(MAX_NODE_SCORE, *reverse, &mut s);
            assert_eq!(&s, want, "reverse={reverse} input={input:?}");
        }
    }
}
