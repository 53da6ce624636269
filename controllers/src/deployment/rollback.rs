//! The legacy rollback request (`deprecated.deployment.rollback.to`). `kubectl rollout undo`
//! rolls back client-side by copying a ReplicaSet's template; this honours the annotation that
//! older clients set. Mirrors kubernetes/kubernetes `pkg/controller/deployment/rollback.go`.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::util::{
    DEPRECATED_ROLLBACK_TO, POD_TEMPLATE_HASH_LABEL, annotation, equal_ignore_hash, last_revision,
    name, revision, rs_template, set_deployment_annotations_to, template,
};

pub const ROLLBACK_REVISION_NOT_FOUND: &str = "DeploymentRollbackRevisionNotFound";
pub const ROLLBACK_TEMPLATE_UNCHANGED: &str = "DeploymentRollbackTemplateUnchanged";
pub const ROLLBACK_DONE: &str = "DeploymentRollback";

/// Upstream `getRollbackTo`: the requested revision; an unparsable one is ignored.
pub fn rollback_to(d: &Deployment) -> Option<i64> {
    annotation(&d.metadata, DEPRECATED_ROLLBACK_TO)?
        .parse()
        .ok()
}

/// What a rollback does. Every outcome clears the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollback {
    /// A Warning event (reason, message); the Deployment is otherwise unchanged.
    GiveUp {
        reason: &'static str,
        message: String,
    },
    /// The Deployment with the old template and annotations, and the Normal event message.
    RollBack {
        deployment: Box<Deployment>,
        message: String,
    },
}

/// Upstream `rollback` / `rollbackToTemplate`: revision 0 means the one before the current;
/// the Deployment takes the ReplicaSet's template (without the hash label) and annotations.
pub fn rollback(d: &Deployment, all: &[ReplicaSet], requested: i64) -> Rollback {
    let mut to = requested;
    if to == 0 {
        to = last_revision(all);
        if to == 0 {
            return Rollback::GiveUp {
                reason: ROLLBACK_REVISION_NOT_FOUND,
                message: "Unable to find last revision.".into(),
            };
        }
    }
    let Some(rs) = all.iter().find(|rs| revision(&rs.metadata) == Some(to)) else {
        return Rollback::GiveUp {
            reason: ROLLBACK_REVISION_NOT_FOUND,
            message: "Unable to find the revision to rollback to.".into(),
        };
    };
    if equal_ignore_hash(&template(d), &rs_template(rs)) {
        return Rollback::GiveUp {
            reason: ROLLBACK_TEMPLATE_UNCHANGED,
            message: format!(
                "The rollback revision contains the same template as current deployment {:?}",
                name(&d.metadata)
            ),
        };
    }
    let mut out = d.clone();
    let mut t = rs_template(rs);
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    {
        let spec = &mut out.spec;
        spec.template = t;
    }
    set_deployment_annotations_to(&mut out, rs);
    if let Some(a) = out.metadata.annotations.as_mut() {
        a.remove(DEPRECATED_ROLLBACK_TO);
    }
    Rollback::RollBack {
        deployment: Box::new(out),
        message: format!(
            "Rolled back deployment {:?} to revision {to}",
            name(&d.metadata)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::fixtures::*;
    use super::super::util::{REVISION_ANNOTATION, template};
    use super::*;

    fn revision_rs(n: &str, rev: &str, image: &str) -> ReplicaSet {
        let mut r = with_annotation(rs(n, 0, 0, 0), REVISION_ANNOTATION, rev);
        let mut t = tmpl(image);
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH_LABEL.into(), "h".into());
        }
        r.spec.template = Some(t);
        with_annotation(r, "note", image)
    }

    #[test]
    fn revision_zero_rolls_back_to_the_previous_revision_without_the_hash_label() {
        let d = deployment(1, int(1), int(0));
        let all = vec![revision_rs("a", "1", "v0"), revision_rs("b", "2", "v1")];
        match rollback(&d, &all, 0) {
            Rollback::RollBack {
                deployment,
                message,
            } => {
                assert_eq!(template(&deployment), tmpl("v0"));
                assert_eq!(message, "Rolled back deployment \"foo\" to revision 1");
                assert_eq!(annotation(&deployment.metadata, "note"), Some("v0"));
                assert_eq!(
                    annotation(&deployment.metadata, DEPRECATED_ROLLBACK_TO),
                    None
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_missing_revision_gives_up_with_a_warning() {
        let d = deployment(1, int(1), int(0));
        let all = vec![revision_rs("b", "2", "v1")];
        assert_eq!(
            rollback(&d, &all, 0),
            Rollback::GiveUp {
                reason: ROLLBACK_REVISION_NOT_FOUND,
                message: "Unable to find last revision.".into()
            }
        );
        assert_eq!(
            rollback(&d, &all, 7),
            Rollback::GiveUp {
                reason: ROLLBACK_REVISION_NOT_FOUND,
                message: "Unable to find the revision to rollback to.".into()
            }
        );
    }

    #[test]
    fn rolling_back_to_the_current_template_changes_nothing() {
        let d = deployment(1, int(1), int(0));
        let all = vec![revision_rs("b", "2", "v1")];
        assert!(matches!(
            rollback(&d, &all, 2),
            Rollback::GiveUp {
                reason: ROLLBACK_TEMPLATE_UNCHANGED,
                ..
            }
        ));
    }

    #[test]
    fn an_unparsable_request_is_ignored() {
        let mut d = deployment(1, int(1), int(0));
        d.metadata.annotations =
            Some([(DEPRECATED_ROLLBACK_TO.to_string(), "x".to_string())].into());
        assert_eq!(rollback_to(&d), None);
        d.metadata.annotations =
            Some([(DEPRECATED_ROLLBACK_TO.to_string(), "3".to_string())].into());
        assert_eq!(rollback_to(&d), Some(3));
    }
}
