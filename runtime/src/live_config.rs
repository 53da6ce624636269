//! Configuration read from custom resources while a component runs (`config.ferrite.dev`): the
//! controller manager's `ControllerConfiguration` and the scheduler's `SchedulerProfile`s.
//!
//! [`watch`] lists and watches one kind, validates every new generation of every object with the
//! component's own (pure) validation, and publishes what is in force through a
//! `tokio::sync::watch` channel. An object whose latest generation is invalid keeps its last valid
//! generation in force; a deleted object is no longer in force. Each object's status tells its
//! author what happened: `observedGeneration` and a `Valid` condition (`True`, or `False` with the
//! reason and the message), written through the status subresource with the object's
//! resourceVersion as a precondition, so a write never races a newer spec.
//!
//! The status also records the spec in force (`status.inForce`: its generation and a copy of
//! it). The apiserver keeps no older generations, so this is what lets a new leader, which finds
//! the current generation invalid, put the same configuration in force as the old leader had
//! instead of falling back to the flags.
//!
//! `Valid=True` means in force: the component acknowledges each new value once it has applied
//! it ([`Receiver::applied`], e.g. after the controllers it disables have stopped), and the
//! status is written only then.
//!
//! The watch runs inside the component's leader work, so only the leader reads the objects and
//! writes their status. A cluster without the CRDs (or without the RBAC to read them) leaves the
//! flags in force; the watch keeps retrying with backoff and picks the objects up once they can
//! be read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::core::object::HasStatus;
use kube::runtime::watcher::{self, Event};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;

use crate::events::EventRecorder;

/// The condition every configuration object carries.
pub const CONDITION_VALID: &str = "Valid";
/// The `Valid=True` reason.
pub const REASON_VALID: &str = "Valid";
const MESSAGE_VALID: &str = "the configuration is in force";

/// Every status write is bounded, so a hung connection cannot stall the watch.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// A status write that failed for another reason than a newer object is retried after this.
const STATUS_RETRY: Duration = Duration::from_secs(5);
/// Retries of a failing list or watch: from this, doubling, up to the maximum. kube-runtime's
/// default backoff resets on every event, the relist's start included, so with the CRDs missing
/// it would list about every second forever.
const RETRY_FIRST: Duration = Duration::from_millis(800);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a status waits for the component to apply its value; a component that takes
/// longer gets its status written anyway (the value is in force as soon as it finishes).
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// The status of a configuration object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`: `True` when that generation is in force; `False` (with the reason and the
    /// message) when it was refused, in which case the last valid generation stays in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation in force and a copy of its spec: the last valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force: Option<InForceSpec>,
}

/// A generation and its spec, as recorded in the status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InForceSpec {
    pub generation: i64,
    #[schemars(schema_with = "any_object")]
    pub spec: serde_json::Value,
}

/// Kept as written: it is the spec of this very kind, whose schema already checked it.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl ConfigStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Why a configuration object is not in force: a `Valid=False` reason (CamelCase) and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Invalid {
    pub reason: String,
    pub message: String,
}

impl Invalid {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A kind [`watch`] can read: a custom resource whose status is a [`ConfigStatus`].
pub trait ConfigResource:
    Resource<DynamicType = ()>
    + HasStatus<Status = ConfigStatus>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
}
impl<K> ConfigResource for K where
    K: Resource<DynamicType = ()>
        + HasStatus<Status = ConfigStatus>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static
{
}

/// What is in force.
#[derive(Debug)]
pub struct InForce<T> {
    /// Increases with every change; what [`Receiver::applied`] acknowledges.
    pub version: u64,
    /// False until the first list answered, or failed (then nothing but the flags is in force
    /// until a later list succeeds).
    pub synced: bool,
    /// By object name: the value of the object's last valid generation.
    pub values: BTreeMap<String, Arc<T>>,
}

impl<T> InForce<T> {
    /// Nothing but the flags.
    pub fn empty() -> Self {
        InForce {
            version: 0,
            synced: true,
            values: BTreeMap::new(),
        }
    }
}

impl<T> Clone for InForce<T> {
    fn clone(&self) -> Self {
        InForce {
            version: self.version,
            synced: self.synced,
            values: self.values.clone(),
        }
    }
}

/// The component's end of [`watch`]: what is in force, and the acknowledgement that it has
/// been applied.
pub struct Receiver<T> {
    rx: channel::Receiver<InForce<T>>,
    applied: channel::Sender<u64>,
}

impl<T> Receiver<T> {
    /// Waits until the first list has answered (or failed) and returns what is in force then.
    pub async fn synced(&mut self) -> InForce<T> {
        if self.rx.wait_for(|s| s.synced).await.is_err() {
            // The watch ended (shutdown): nothing but the flags.
            return InForce::empty();
        }
        // Once synced, always synced: the newest value is as good, and reading it marks it
        // seen, so no change slips between the wait and the read.
        self.current()
    }

    /// Waits for a change; Err once the watch has ended.
    pub async fn changed(&mut self) -> Result<(), channel::error::RecvError> {
        self.rx.changed().await
    }

    /// Whether a change has not been read yet.
    pub fn has_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(false)
    }

    /// What is in force now, marking it read.
    pub fn current(&mut self) -> InForce<T> {
        self.rx.borrow_and_update().clone()
    }

    /// Tells the watch that `version` has been put in force: the statuses reporting it are
    /// written now.
    pub fn applied(&self, version: u64) {
        self.applied.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
    }
}

/// Watches every object of kind `K` until `token` is cancelled; `validate` turns an object into
/// the value it puts in force, or says why it cannot. A refused generation also gets a Warning
/// event (reason and message as in its condition) from `events`.
pub fn watch<K, T, V>(
    client: kube::Client,
    token: CancellationToken,
    events: EventRecorder,
    validate: V,
) -> Receiver<T>
where
    K: ConfigResource,
    T: Send + Sync + 'static,
    V: Fn(&K) -> Result<T, Invalid> + Send + Sync + 'static,
{
    let (tx, rx) = channel::channel(InForce {
        version: 0,
        synced: false,
        values: BTreeMap::new(),
    });
    let (applied, applied_rx) = channel::channel(0);
    let watcher = Watcher {
        api: Api::<K>::all(client),
        validate,
        events,
        tracked: BTreeMap::new(),
        synced: false,
        version: 0,
        tx,
        applied: applied_rx,
    };
    tokio::spawn(watcher.run(token));
    Receiver { rx, applied }
}

/// One object as last seen, and the verdict on its latest generation.
struct Tracked<K, T> {
    object: Arc<K>,
    /// (uid, generation) of the verdict.
    evaluated: (String, i64),
    verdict: Result<(), Invalid>,
    /// The last valid generation's value and spec, for this uid.
    in_force: Option<(Arc<T>, InForceSpec)>,
}

/// The object's spec as JSON.
fn spec_of<K: Serialize>(obj: &K) -> serde_json::Value {
    serde_json::to_value(obj)
        .ok()
        .and_then(|mut v| v.get_mut("spec").map(serde_json::Value::take))
        .unwrap_or_default()
}

struct Watcher<K: ConfigResource, T, V> {
    api: Api<K>,
    validate: V,
    events: EventRecorder,
    tracked: BTreeMap<String, Tracked<K, T>>,
    synced: bool,
    version: u64,
    tx: channel::Sender<InForce<T>>,
    applied: channel::Receiver<u64>,
}

fn identity<K: Resource>(obj: &K) -> (String, String, i64) {
    let meta = obj.meta();
    (
        meta.name.clone().unwrap_or_default(),
        meta.uid.clone().unwrap_or_default(),
        meta.generation.unwrap_or_default(),
    )
}

impl<K, T, V> Watcher<K, T, V>
where
    K: ConfigResource,
    T: Send + Sync + 'static,
    V: Fn(&K) -> Result<T, Invalid> + Send + Sync + 'static,
{
    async fn run(mut self, token: CancellationToken) {
        let kind = K::kind(&());
        let mut stream = watcher::watcher(self.api.clone(), watcher::Config::default()).boxed();
        let mut retry_in = RETRY_FIRST;
        // Names seen during a (re)list, to drop what was deleted while the watch was down.
        let mut relist: Option<BTreeSet<String>> = None;
        // Objects whose status write failed for another reason than a newer object.
        let mut retry: BTreeSet<String> = BTreeSet::new();
        let mut failing = false;
        loop {
            let event = tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(STATUS_RETRY), if !retry.is_empty() => {
                    for name in std::mem::take(&mut retry) {
                        if !self.sync_status(&name).await {
                            retry.insert(name);
                        }
                    }
                    continue;
                }
                e = stream.next() => e,
            };
            let Some(event) = event else { return };
            let event = match event {
                Ok(e) => {
                    // A relist's start says nothing yet; its end, or any object, does.
                    if !matches!(e, Event::Init | Event::InitApply(_)) {
                        retry_in = RETRY_FIRST;
                        if failing {
                            tracing::info!(%kind, "configuration watch recovered");
                            failing = false;
                        }
                    }
                    e
                }
                Err(e) => {
                    if !failing {
                        // A cluster without the CRDs answers 404; without RBAC for them, 403.
                        tracing::warn!(%kind, error = %e, "cannot watch the configuration objects; the flags stay in force until they can be read (retrying with backoff)");
                        failing = true;
                    }
                    if !self.synced {
                        self.synced = true;
                        self.publish();
                    }
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(retry_in) => {}
                    }
                    retry_in = (retry_in * 2).min(RETRY_MAX);
                    continue;
                }
            };
            // Objects whose status to write once the component has applied what is published.
            let mut report = Vec::new();
            match event {
                Event::Init => relist = Some(BTreeSet::new()),
                Event::InitApply(obj) => {
                    // Put in force and reported with the whole list, at InitDone.
                    if let Some(seen) = relist.as_mut() {
                        seen.insert(obj.meta().name.clone().unwrap_or_default());
                    }
                    self.observe(obj);
                }
                Event::InitDone => {
                    let seen = relist.take();
                    if let Some(seen) = &seen {
                        self.tracked.retain(|name, _| seen.contains(name));
                        retry.retain(|name| seen.contains(name));
                    }
                    self.synced = true;
                    let version = self.publish();
                    self.wait_applied(version, &token).await;
                    report.extend(seen.into_iter().flatten());
                }
                Event::Apply(obj) => {
                    let (name, changed) = self.observe(obj);
                    if changed {
                        let version = self.publish();
                        self.wait_applied(version, &token).await;
                    }
                    report.push(name);
                }
                Event::Delete(obj) => {
                    let name = obj.meta().name.clone().unwrap_or_default();
                    if self.tracked.remove(&name).is_some() {
                        tracing::info!(%kind, %name, "configuration object deleted; it is no longer in force");
                    }
                    retry.remove(&name);
                    self.publish();
                }
            }
            for name in report {
                if !self.sync_status(&name).await {
                    retry.insert(name);
                }
            }
        }
    }

    /// Waits until the component has applied `version` (bounded: a slow component must not
    /// keep statuses from being written for long).
    async fn wait_applied(&mut self, version: u64, token: &CancellationToken) {
        let wait = self.applied.wait_for(|v| *v >= version);
        tokio::select! {
            () = token.cancelled() => {}
            r = tokio::time::timeout(APPLY_WAIT, wait) => {
                if r.is_err() {
                    tracing::warn!(kind = %K::kind(&()), version, "the component has not applied the configuration yet; writing the statuses anyway");
                }
            }
        }
    }

    /// Records the object and judges its generation if it is new. Returns its name and whether
    /// what it puts in force changed.
    fn observe(&mut self, obj: K) -> (String, bool) {
        let kind = K::kind(&());
        let (name, uid, generation) = identity(&obj);
        let obj = Arc::new(obj);
        let key = (uid.clone(), generation);
        match self.tracked.get_mut(&name) {
            Some(t) if t.evaluated == key => {
                t.object = obj;
                return (name, false);
            }
            _ => {}
        }
        let verdict = (self.validate)(&obj);
        let previous = self
            .tracked
            .remove(&name)
            .filter(|t| t.evaluated.0 == uid)
            .and_then(|t| t.in_force);
        let (verdict, in_force, changed) = match verdict {
            Ok(value) => {
                tracing::info!(%kind, %name, generation, "configuration accepted");
                let spec = InForceSpec {
                    generation,
                    spec: spec_of(obj.as_ref()),
                };
                (Ok(()), Some((Arc::new(value), spec)), true)
            }
            Err(invalid) => {
                tracing::warn!(%kind, %name, generation, reason = %invalid.reason, message = %invalid.message,
                    "configuration refused; the previous configuration stays in force");
                self.events
                    .warning(obj.as_ref(), &invalid.reason, invalid.message.clone());
                // A leader that never saw the previous generation finds it in the status.
                let (kept, changed) = match previous {
                    Some(p) => (Some(p), false),
                    None => {
                        let recorded = self.recorded(obj.as_ref());
                        let changed = recorded.is_some();
                        (recorded, changed)
                    }
                };
                (Err(invalid), kept, changed)
            }
        };
        self.tracked.insert(
            name.clone(),
            Tracked {
                object: obj,
                evaluated: key,
                verdict,
                in_force,
            },
        );
        (name, changed)
    }

    /// The value of the spec `obj`'s status records as in force, if it is still valid.
    fn recorded(&self, obj: &K) -> Option<(Arc<T>, InForceSpec)> {
        let record = obj.status()?.in_force.clone()?;
        let mut json = serde_json::to_value(obj).ok()?;
        json["spec"] = record.spec.clone();
        let earlier: K = serde_json::from_value(json).ok()?;
        match (self.validate)(&earlier) {
            Ok(value) => {
                tracing::info!(kind = %K::kind(&()), name = ?obj.meta().name, generation = record.generation,
                    "the generation the status records as in force stays in force");
                Some((Arc::new(value), record))
            }
            Err(_) => None,
        }
    }

    /// Publishes what is in force; returns its version.
    fn publish(&mut self) -> u64 {
        let values = self
            .tracked
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), t.in_force.as_ref()?.0.clone())))
            .collect();
        self.version += 1;
        self.tx.send_replace(InForce {
            version: self.version,
            synced: self.synced,
            values,
        });
        self.version
    }

    /// Writes the object's status when it does not tell the verdict yet. False when the write
    /// should be retried.
    async fn sync_status(&self, name: &str) -> bool {
        let Some(t) = self.tracked.get(name) else {
            return true;
        };
        let generation = t.evaluated.1;
        let current = t.object.status();
        let in_force = t.in_force.as_ref().map(|(_, spec)| spec);
        if !needs_status_write(current, generation, &t.verdict, in_force) {
            return true;
        }
        let status = desired_status(current, generation, &t.verdict, in_force, now());
        let mut updated = (*t.object).clone();
        *updated.status_mut() = Some(status);
        let params = PostParams::default();
        let write = self.api.replace_status(name, &params, &updated);
        match tokio::time::timeout(API_TIMEOUT, write).await {
            Ok(Ok(_)) => true,
            // A newer object (409) comes through the watch and is judged then; a deleted one
            // (404) needs nothing.
            Ok(Err(kube::Error::Api(e))) if e.code == 409 || e.code == 404 => true,
            Ok(Err(e)) => {
                tracing::warn!(kind = %K::kind(&()), %name, error = %e, "writing the configuration status failed; retrying");
                false
            }
            Err(_) => {
                tracing::warn!(kind = %K::kind(&()), %name, "writing the configuration status timed out; retrying");
                false
            }
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The `Valid` condition's (status, reason, message) for a verdict.
fn verdict_fields(verdict: &Result<(), Invalid>) -> (&'static str, &str, &str) {
    match verdict {
        Ok(()) => ("True", REASON_VALID, MESSAGE_VALID),
        Err(i) => ("False", i.reason.as_str(), i.message.as_str()),
    }
}

/// Whether `current` does not yet report the verdict on `generation` and the spec in force.
pub fn needs_status_write(
    current: Option<&ConfigStatus>,
    generation: i64,
    verdict: &Result<(), Invalid>,
    in_force: Option<&InForceSpec>,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let (status, reason, message) = verdict_fields(verdict);
    current.observed_generation != Some(generation)
        || current.in_force.as_ref() != in_force
        || !current.condition(CONDITION_VALID).is_some_and(|c| {
            c.status == status
                && c.reason == reason
                && c.message == message
                && c.observed_generation == Some(generation)
        })
}

/// The status reporting the verdict on `generation`: other conditions are kept, and the `Valid`
/// condition keeps its transition time while its status does not change (as
/// `meta.SetStatusCondition`).
pub fn desired_status(
    current: Option<&ConfigStatus>,
    generation: i64,
    verdict: &Result<(), Invalid>,
    in_force: Option<&InForceSpec>,
    now: Time,
) -> ConfigStatus {
    let (status, reason, message) = verdict_fields(verdict);
    let mut out = current.cloned().unwrap_or_default();
    out.observed_generation = Some(generation);
    out.in_force = in_force.cloned();
    let transition = match out.condition(CONDITION_VALID) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: CONDITION_VALID.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: Some(generation),
        last_transition_time: transition,
    };
    match out
        .conditions
        .iter_mut()
        .find(|c| c.type_ == CONDITION_VALID)
    {
        Some(c) => *c = condition,
        None => out.conditions.push(condition),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
    }

    fn invalid() -> Result<(), Invalid> {
        Err(Invalid::new(
            "UnknownController",
            "\"foo\" is not a known controller",
        ))
    }

    #[test]
    fn a_fresh_object_gets_valid_true_and_its_generation() {
        let s = desired_status(None, 3, &Ok(()), None, at(10));
        assert_eq!(s.observed_generation, Some(3));
        let c = s.condition(CONDITION_VALID).expect("a Valid condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", REASON_VALID)
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time, at(10));
    }

    #[test]
    fn an_invalid_generation_gets_valid_false_with_reason_and_message() {
        let before = desired_status(None, 1, &Ok(()), None, at(10));
        let s = desired_status(Some(&before), 2, &invalid(), None, at(20));
        let c = s.condition(CONDITION_VALID).expect("a Valid condition");
        assert_eq!(c.status, "False");
        assert_eq!(c.reason, "UnknownController");
        assert_eq!(c.message, "\"foo\" is not a known controller");
        assert_eq!(c.last_transition_time, at(20));
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn the_transition_time_stays_while_the_status_does_not_change() {
        let first = desired_status(None, 1, &Ok(()), None, at(10));
        let second = desired_status(Some(&first), 2, &Ok(()), None, at(20));
        assert_eq!(
            second
                .condition(CONDITION_VALID)
                .map(|c| c.last_transition_time.clone()),
            Some(at(10))
        );
    }

    #[test]
    fn other_conditions_are_kept() {
        let mut current = desired_status(None, 1, &Ok(()), None, at(10));
        current.conditions.push(Condition {
            type_: "Other".into(),
            status: "True".into(),
            reason: "Because".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: at(5),
        });
        let s = desired_status(Some(&current), 2, &invalid(), None, at(20));
        assert_eq!(s.conditions.len(), 2);
        assert!(s.condition("Other").is_some());
    }

    #[test]
    fn a_status_is_written_only_when_it_does_not_tell_the_verdict() {
        assert!(needs_status_write(None, 1, &Ok(()), None));
        let s = desired_status(None, 1, &Ok(()), None, at(10));
        assert!(!needs_status_write(Some(&s), 1, &Ok(()), None));
        assert!(needs_status_write(Some(&s), 2, &Ok(()), None));
        assert!(needs_status_write(Some(&s), 1, &invalid(), None));
        let bad = desired_status(Some(&s), 2, &invalid(), None, at(20));
        assert!(!needs_status_write(Some(&bad), 2, &invalid(), None));
        let other = Err(Invalid::new("UnknownController", "another message"));
        assert!(needs_status_write(Some(&bad), 2, &other, None));
    }

    #[test]
    fn the_spec_in_force_is_recorded_and_kept_while_a_later_generation_is_invalid() {
        let spec = InForceSpec {
            generation: 1,
            spec: serde_json::json!({"controllers": ["job"]}),
        };
        let good = desired_status(None, 1, &Ok(()), Some(&spec), at(10));
        assert_eq!(good.in_force.as_ref(), Some(&spec));
        assert!(!needs_status_write(Some(&good), 1, &Ok(()), Some(&spec)));
        let bad = desired_status(Some(&good), 2, &invalid(), Some(&spec), at(20));
        assert_eq!(bad.in_force.as_ref().map(|s| s.generation), Some(1));
        // A status without the record is rewritten to carry it.
        let mut stripped = bad.clone();
        stripped.in_force = None;
        assert!(needs_status_write(
            Some(&stripped),
            2,
            &invalid(),
            Some(&spec)
        ));
    }

    #[test]
    fn the_spec_is_taken_from_the_serialized_object() {
        let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"}, "data": {"a": "b"}
        }))
        .unwrap_or_default();
        // ConfigMaps have no spec: nothing is recorded.
        assert_eq!(spec_of(&cm), serde_json::Value::Null);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": []}
        }))
        .unwrap_or_default();
        assert_eq!(spec_of(&pod)["nodeName"], "n");
    }
}
