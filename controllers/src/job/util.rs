//! What the Job, CronJob and TTL-after-finished controllers all ask of a Job (upstream
//! kubernetes/kubernetes pkg/controller/job/util).

use k8s_openapi::api::batch::v1::{Job, JobCondition};

/// `FinishedCondition`: the first `Complete` or `Failed` condition that is true.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// `IsJobFinished`.
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({"status": {"conditions": conditions}}))
            .unwrap_or_default()
    }

    #[test]
    fn the_first_true_complete_or_failed_condition_is_the_finish() {
        let j = job(serde_json::json!([
            {"type": "Suspended", "status": "True"},
            {"type": "Complete", "status": "False"},
            {"type": "Failed", "status": "True"},
        ]));
        assert_eq!(
            finished_condition(&j).map(|c| c.type_.as_str()),
            Some("Failed")
        );
        assert!(is_finished(&j));
    }

    #[test]
    fn interim_conditions_are_not_a_finish() {
        let j = job(serde_json::json!([
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "FailureTarget", "status": "True"},
        ]));
        assert!(!is_finished(&j));
        assert!(!is_finished(&Job::default()));
    }
}
