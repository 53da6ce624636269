//! The CronJob controller's decisions, as pure functions over the CronJob, its Jobs and the
//! current time: which scheduled time is due, whether to create, skip or replace, which finished
//! Jobs to delete, and how `status` changes.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/cronjob/cronjob_controllerv2.go (`syncCronJob`,
//! `cleanupFinishedJobs`, `formatSchedule`) and utils.go (`mostRecentScheduleTime`,
//! `nextScheduleTime`, `nextScheduleTimeDuration`, `getJobFromTemplate2`, `byJobStartTime`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::schedule::{self, Location, Schedule};

/// utils.go `nextScheduleDelta`: requeue a little after the scheduled time, against clock skew.
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// `batchv1.CronJobScheduledTimestampAnnotation`.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// An event to record about the CronJob.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Event {
    fn normal(reason: &'static str, message: String) -> Self {
        Event {
            warning: false,
            reason,
            message,
        }
    }
    fn warning(reason: &'static str, message: String) -> Self {
        Event {
            warning: true,
            reason,
            message,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schedule times (utils.go)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// `mostRecentScheduleTime`'s results.
#[derive(Debug, Clone, PartialEq)]
pub struct MostRecent {
    /// The last schedule time, or the CronJob's creation time (or the deadline, when later).
    pub earliest: Timestamp,
    /// The most recent time a Job should have been created, if not after `now`.
    pub most_recent: Option<Timestamp>,
    pub missed: Missed,
}

/// A grammatically valid schedule that never fires sensibly (`59 23 31 2 *`).
pub const SCHEDULES_TOO_CLOSE: &str = "time difference between two schedules is less than 1 second";

fn ts_of(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

fn status(cj: &CronJob) -> CronJobStatus {
    cj.status.clone().unwrap_or_default()
}

/// utils.go `mostRecentScheduleTime`.
pub fn most_recent_schedule_time(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    local: &TimeZone,
    include_starting_deadline: bool,
) -> Result<MostRecent, String> {
    let mut earliest = ts_of(&status(cj).last_schedule_time)
        .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    if include_starting_deadline && let Some(sds) = cj.spec.starting_deadline_seconds {
        let deadline = now
            .checked_sub(jiff::SignedDuration::from_secs(sds))
            .unwrap_or(Timestamp::MIN);
        if deadline > earliest {
            earliest = deadline;
        }
    }
    let none = |missed| MostRecent {
        earliest,
        most_recent: None,
        missed,
    };
    // A `None` from `next` is robfig's zero time (year 1): before every `now`.
    let t1 = sched.next(earliest, local);
    let t2 = t1.and_then(|t| sched.next(t, local));
    if let Some(t1) = t1
        && now < t1
    {
        return Ok(none(Missed::None));
    }
    if let (Some(t1), Some(t2)) = (t1, t2)
        && now < t2
    {
        return Ok(MostRecent {
            earliest,
            most_recent: Some(t1),
            missed: Missed::None,
        });
    }
    let (Some(t1), Some(t2)) = (t1, t2) else {
        return Err(SCHEDULES_TOO_CLOSE.into());
    };
    // Go: int64(t2.Sub(t1).Round(time.Second).Seconds()).
    let between_ms = t2.duration_since(t1).as_millis();
    let between = (between_ms + 500).div_euclid(1000) as i64;
    if between < 1 {
        return Err(SCHEDULES_TOO_CLOSE.into());
    }
    // A rough count of the schedules that fit between t1 and now (upstream's approximation).
    let elapsed = now.duration_since(t1).as_secs();
    let missed_count = elapsed / between + 1;
    // Step back one interval before the estimate and let the schedule find the exact times, which
    // also handles irregular schedules such as `30 6-16/4 * * 1-5`.
    let potential_earliest = t1
        .checked_add(jiff::SignedDuration::from_secs(
            (missed_count - 2).saturating_mul(between),
        ))
        .unwrap_or(t1);
    let mut most_recent = None;
    let mut t = sched.next(potential_earliest, local);
    while let Some(at) = t {
        if at > now {
            break;
        }
        most_recent = Some(at);
        t = sched.next(at, local);
    }
    let missed = if missed_count > 100 {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok(MostRecent {
        earliest,
        most_recent,
        missed,
    })
}

/// utils.go `nextScheduleTime`: the due scheduled time (honouring startingDeadlineSeconds), plus
/// the `TooManyMissedTimes` warning when more than 100 were missed (only the latest counts).
pub fn next_schedule_time(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    local: &TimeZone,
    events: &mut Vec<Event>,
) -> Result<Option<Timestamp>, String> {
    let mr = most_recent_schedule_time(cj, now, sched, local, true)?;
    let Some(t) = mr.most_recent.filter(|t| *t <= now) else {
        return Ok(None);
    };
    if mr.missed == Missed::Many {
        events.push(Event::warning(
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        ));
    }
    Ok(Some(t))
}

/// utils.go `nextScheduleTimeDuration`: how long until the next scheduled time after the last
/// one handled, plus [`NEXT_SCHEDULE_DELTA`]. `None` when the schedule never fires again.
pub fn next_schedule_time_duration(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    local: &TimeZone,
) -> Option<Duration> {
    let from = match most_recent_schedule_time(cj, now, sched, local, false) {
        Err(_) => now,
        Ok(MostRecent {
            most_recent: Some(t),
            ..
        }) => t,
        Ok(MostRecent {
            earliest,
            missed: Missed::None,
            ..
        }) => earliest,
        Ok(_) => now,
    };
    let next = sched.next(from, local)?;
    let wait = next.duration_since(now);
    // A due time in the past means "now" (the queue adds a non-positive delay at once).
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    Some(wait + NEXT_SCHEDULE_DELTA)
}

// ---------------------------------------------------------------------------------------------
// Schedule of a CronJob (cronjob_controllerv2.go formatSchedule)
// ---------------------------------------------------------------------------------------------

/// `formatSchedule`: a `TZ`/`CRON_TZ` in the schedule wins (with an `UnsupportedSchedule`
/// warning when events are wanted); otherwise a valid `timeZone` is prefixed as `TZ=`.
pub fn format_schedule(cj: &CronJob, events: Option<&mut Vec<Event>>) -> String {
    let spec = cj.spec.clone();
    if spec.schedule.contains("TZ") {
        if let Some(events) = events {
            events.push(Event::warning(
                "UnsupportedSchedule",
                format!(
                    "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                    spec.schedule
                ),
            ));
        }
        return spec.schedule;
    }
    match spec.time_zone {
        Some(tz) if schedule::load_location(&tz).is_ok() => format!("TZ={tz} {}", spec.schedule),
        _ => spec.schedule,
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/// `getFinishedStatus`: the type of the first true Complete/Failed condition.
pub fn finished_status(job: &Job) -> Option<&str> {
    crate::job::util::finished_condition(job).map(|c| c.type_.as_str())
}

fn is_succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or_default()
}

/// `getJobName`: the CronJob's name and the scheduled time in minutes since the epoch — the
/// idempotency lock that keeps one Job per scheduled time.
pub fn job_name(cj_name: &str, scheduled: Timestamp) -> String {
    format!("{cj_name}-{}", scheduled.as_second().div_euclid(60))
}

/// Go's `t.In(loc).Format(time.RFC3339)`.
pub fn format_rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    let offset = z.offset().seconds();
    let base = z.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if offset == 0 {
        format!("{base}Z")
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let o = offset.abs();
        format!("{base}{sign}{:02}:{:02}", o / 3600, o % 3600 / 60)
    }
}

/// The zone of the scheduled-timestamp annotation: `time.LoadLocation(timeZone or "")`.
pub fn annotation_zone(cj: &CronJob, local: &TimeZone) -> Result<TimeZone, String> {
    let name = cj.spec.time_zone.clone().unwrap_or_default();
    Ok(match schedule::load_location(&name)? {
        Location::Local => local.clone(),
        Location::Zone(z) => z,
    })
}

/// `getJobFromTemplate2`: the Job for one scheduled time, owned by the CronJob.
pub fn job_from_template(
    cj: &CronJob,
    scheduled: Timestamp,
    local: &TimeZone,
) -> Result<Job, String> {
    let template = cj.spec.clone().job_template;
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.into(),
        format_rfc3339(scheduled, &annotation_zone(cj, local)?),
    );
    let labels = tmeta.labels.filter(|l| !l.is_empty());
    let name = cj.metadata.name.clone().unwrap_or_default();
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name,
                uid: uid(&cj.metadata).to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// `getRef`: the reference kept in `status.active`.
pub fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// `getJobsToBeReconciled`: Jobs in the namespace whose controllerRef names this CronJob
/// (upstream matches the name only).
pub fn owned_jobs(cj: &CronJob, jobs: &[Arc<Job>]) -> Vec<Arc<Job>> {
    let ns = cj.metadata.namespace.as_deref();
    let name = cj.metadata.name.as_deref().unwrap_or_default();
    jobs.iter()
        .filter(|j| j.metadata.namespace.as_deref() == ns)
        .filter(|j| controller_of(j).is_some_and(|r| r.name == name))
        .cloned()
        .collect()
}

pub fn controller_of(job: &Job) -> Option<&OwnerReference> {
    job.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

// ---------------------------------------------------------------------------------------------
// History cleanup (cleanupFinishedJobs / removeOldestJobs)
// ---------------------------------------------------------------------------------------------

/// `byJobStartTime`: started before unstarted, then by start time, then by name.
pub fn by_start_time(a: &Job, b: &Job) -> Ordering {
    let start = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    };
    match (start(a), start(b)) {
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (sa, sb) if sa == sb => a.metadata.name.cmp(&b.metadata.name),
        (sa, sb) => sa.cmp(&sb),
    }
}

/// The finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`, oldest first.
pub fn history_to_delete(cj: &CronJob, jobs: &[Arc<Job>]) -> Vec<Arc<Job>> {
    let spec = cj.spec.clone();
    let mut out = Vec::new();
    for (limit, kind) in [
        (spec.successful_jobs_history_limit, "Complete"),
        (spec.failed_jobs_history_limit, "Failed"),
    ] {
        let Some(limit) = limit else { continue };
        let mut finished: Vec<Arc<Job>> = jobs
            .iter()
            .filter(|j| finished_status(j) == Some(kind))
            .cloned()
            .collect();
        let excess = finished
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        if excess == 0 {
            continue;
        }
        finished.sort_by(|a, b| by_start_time(a, b));
        out.extend(finished.into_iter().take(excess));
    }
    out
}

/// `deleteFromActiveList`.
pub fn remove_active(status: &mut CronJobStatus, job_uid: &str) {
    if let Some(active) = status.active.as_mut() {
        active.retain(|r| r.uid.as_deref() != Some(job_uid));
    }
}

fn in_active_list(status: &CronJobStatus, job_uid: &str) -> bool {
    status
        .active
        .as_ref()
        .is_some_and(|a| a.iter().any(|r| r.uid.as_deref() == Some(job_uid)))
}

// ---------------------------------------------------------------------------------------------
// Children (the first half of syncCronJob)
// ---------------------------------------------------------------------------------------------

/// What the Jobs say about `status`.
#[derive(Debug, Default, PartialEq)]
pub struct Children {
    pub events: Vec<Event>,
    pub changed: bool,
    /// Unfinished Jobs of ours missing from `status.active` (upstream re-reads the CronJob).
    pub unexpected: Vec<String>,
    /// Active references with no Job in the cache (upstream confirms with a GET).
    pub possibly_missing: Vec<ObjectReference>,
}

/// Reconciles `status.active` and `status.lastSuccessfulTime` with the owned Jobs.
pub fn reconcile_children(status: &mut CronJobStatus, jobs: &[Arc<Job>]) -> Children {
    let mut out = Children::default();
    for j in jobs {
        let juid = uid(&j.metadata);
        let found = in_active_list(status, juid);
        let finished = finished_status(j);
        let name = j.metadata.name.clone().unwrap_or_default();
        if !found && finished.is_none() {
            out.unexpected.push(name);
        } else if found && let Some(kind) = finished {
            remove_active(status, juid);
            out.events.push(Event::normal(
                "SawCompletedJob",
                format!("Saw completed job: {name}, status: {kind}"),
            ));
            out.changed = true;
        } else if is_succeeded(j) {
            // Not in the active list, but succeeded: its completion still counts.
            let completion = j.status.as_ref().and_then(|s| s.completion_time.clone());
            if status.last_successful_time.is_none() {
                status.last_successful_time = completion.clone();
                out.changed = true;
            }
            if let (Some(c), Some(last)) = (&completion, &status.last_successful_time)
                && c.0 > last.0
            {
                status.last_successful_time = completion;
                out.changed = true;
            }
        }
    }
    let uids: Vec<&str> = jobs.iter().map(|j| uid(&j.metadata)).collect();
    for r in status.active.iter().flatten() {
        if !uids.contains(&r.uid.as_deref().unwrap_or_default()) {
            out.possibly_missing.push(r.clone());
        }
    }
    out
}

/// The `UnexpectedJob` warning.
pub fn unexpected_job_event(name: &str) -> Event {
    Event::warning(
        "UnexpectedJob",
        format!("Saw a job that the controller did not create or forgot: {name}"),
    )
}

/// The `MissingJob` event.
pub fn missing_job_event(name: &str) -> Event {
    Event::normal("MissingJob", format!("Active job went missing: {name}"))
}

// ---------------------------------------------------------------------------------------------
// Scheduling (the second half of syncCronJob)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Create nothing now; look again after the delay, if any (`None`: wait for a change).
    Wait(Option<Duration>),
    /// Create `job` for `scheduled`, after deleting the `replace`d active Jobs.
    Create {
        scheduled: Timestamp,
        replace: Vec<ObjectReference>,
        job: Box<Job>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub events: Vec<Event>,
    pub decision: Decision,
}

/// Decides what `syncCronJob` does after reconciling the children; `cj` carries the working
/// status. `local` is the controller process' zone (robfig's `time.Local`).
pub fn plan(cj: &CronJob, now: Timestamp, local: &TimeZone) -> Plan {
    let mut events = Vec::new();
    let wait = |events, d| Plan {
        events,
        decision: Decision::Wait(d),
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return wait(events, None);
    }
    let spec = cj.spec.clone();
    if let Some(tz) = &spec.time_zone
        && let Err(e) = schedule::load_location(tz)
    {
        events.push(Event::warning(
            "UnknownTimeZone",
            format!("invalid timeZone: {tz:?}: {e}"),
        ));
        return wait(events, None);
    }
    if spec.suspend == Some(true) {
        return wait(events, None);
    }
    let sched = match schedule::parse_standard(&format_schedule(cj, Some(&mut events))) {
        Ok(s) => s,
        Err(e) => {
            events.push(Event::warning(
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return wait(events, None);
        }
    };
    let scheduled = match next_schedule_time(cj, now, &sched, local, &mut events) {
        Err(e) => {
            events.push(Event::warning(
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            ));
            return wait(events, None);
        }
        Ok(None) => {
            let d = next_schedule_time_duration(cj, now, &sched, local);
            return wait(events, d);
        }
        Ok(Some(t)) => t,
    };
    let requeue = next_schedule_time_duration(cj, now, &sched, local);
    if let Some(sds) = spec.starting_deadline_seconds {
        let deadline = scheduled
            .checked_add(jiff::SignedDuration::from_secs(sds))
            .unwrap_or(Timestamp::MAX);
        if deadline < now {
            events.push(Event::warning(
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
                ),
            ));
            return wait(events, requeue);
        }
    }
    let st = status(cj);
    let name = job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled);
    let active = st.active.clone().unwrap_or_default();
    let already = active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()) && r.namespace == cj.metadata.namespace)
        || ts_of(&st.last_schedule_time) == Some(scheduled);
    if already {
        return wait(events, requeue);
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        events.push(Event::normal(
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into(),
        ));
        return wait(events, requeue);
    }
    let replace = if policy == "Replace" {
        active
    } else {
        Vec::new()
    };
    match job_from_template(cj, scheduled, local) {
        Ok(job) => Plan {
            events,
            decision: Decision::Create {
                scheduled,
                replace,
                job: Box::new(job),
            },
        },
        // Only an unknown timeZone fails here, and that was refused above.
        Err(_) => wait(events, None),
    }
}

/// The status after creating (or finding) the Job for `scheduled`.
pub fn record_created(status: &mut CronJobStatus, job: &Job, scheduled: Timestamp) {
    status
        .active
        .get_or_insert_with(Vec::new)
        .push(job_reference(job));
    status.last_schedule_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        scheduled,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    const CREATED: &str = "2026-01-01T00:00:00Z";

    fn cronjob(schedule: &str) -> CronJob {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cj", "namespace": "ns", "uid": "cj-uid",
                         "creationTimestamp": CREATED},
            "spec": {
                "schedule": schedule,
                "concurrencyPolicy": "Allow",
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 1,
                "jobTemplate": {
                    "metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}},
                    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
                }
            }
        }))
        .unwrap_or_default()
    }

    fn with(
        mut cj: CronJob,
        f: impl FnOnce(&mut k8s_openapi::api::batch::v1::CronJobSpec),
    ) -> CronJob {
        f(&mut cj.spec);
        cj
    }

    fn with_status(mut cj: CronJob, f: impl FnOnce(&mut CronJobStatus)) -> CronJob {
        f(cj.status.get_or_insert_with(Default::default));
        cj
    }

    fn active_ref(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    fn job(name: &str, uid: &str, finished: Option<&str>, start: Option<&str>) -> Arc<Job> {
        let conditions: Vec<serde_json::Value> = finished
            .map(|t| vec![serde_json::json!({"type": t, "status": "True"})])
            .unwrap_or_default();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "uid": uid,
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "cj",
                                         "uid": "cj-uid", "controller": true}]},
                "status": {"conditions": conditions, "startTime": start,
                           "completionTime": start},
            }))
            .unwrap_or_default(),
        )
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn sched(s: &str) -> Schedule {
        schedule::parse_standard(s).unwrap_or(Schedule::Every { delay_seconds: 1 })
    }

    fn reasons(p: &Plan) -> Vec<&'static str> {
        p.events.iter().map(|e| e.reason).collect()
    }

    // ---- schedule times ----

    #[test]
    fn nothing_is_due_before_the_first_scheduled_time() {
        let cj = cronjob("0 * * * *");
        let mr = most_recent_schedule_time(
            &cj,
            ts("2026-01-01T00:30:00Z"),
            &sched("0 * * * *"),
            &utc(),
            true,
        );
        assert_eq!(
            mr,
            Ok(MostRecent {
                earliest: ts(CREATED),
                most_recent: None,
                missed: Missed::None
            })
        );
    }

    #[test]
    fn one_missed_time_is_due_without_counting_as_missed() {
        let cj = cronjob("0 * * * *");
        let mr = most_recent_schedule_time(
            &cj,
            ts("2026-01-01T01:30:00Z"),
            &sched("0 * * * *"),
            &utc(),
            true,
        );
        assert_eq!(
            mr.map(|m| (m.most_recent, m.missed)),
            Ok((Some(ts("2026-01-01T01:00:00Z")), Missed::None))
        );
    }

    #[test]
    fn several_missed_times_yield_only_the_latest() {
        let cj = cronjob("0 * * * *");
        let mr = most_recent_schedule_time(
            &cj,
            ts("2026-01-01T05:10:00Z"),
            &sched("0 * * * *"),
            &utc(),
            true,
        );
        assert_eq!(
            mr.map(|m| (m.most_recent, m.missed)),
            Ok((Some(ts("2026-01-01T05:00:00Z")), Missed::Few))
        );
    }

    #[test]
    fn more_than_100_missed_times_warn_too_many_missed_and_still_run_the_latest() {
        let cj = cronjob("* * * * *");
        let mut events = Vec::new();
        let next = next_schedule_time(
            &cj,
            ts("2026-01-01T02:00:30Z"),
            &sched("* * * * *"),
            &utc(),
            &mut events,
        );
        assert_eq!(next, Ok(Some(ts("2026-01-01T02:00:00Z"))));
        assert_eq!(
            events,
            vec![Event::warning(
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into()
            )]
        );
    }

    #[test]
    fn exactly_100_missed_times_do_not_warn() {
        let cj = cronjob("* * * * *");
        let mut events = Vec::new();
        // t1 = 00:01, now = 01:40:30 → 99 whole intervals + 1 = 100.
        let next = next_schedule_time(
            &cj,
            ts("2026-01-01T01:40:30Z"),
            &sched("* * * * *"),
            &utc(),
            &mut events,
        );
        assert_eq!(next, Ok(Some(ts("2026-01-01T01:40:00Z"))));
        assert!(events.is_empty());
    }

    #[test]
    fn starting_deadline_seconds_hides_older_missed_times() {
        let cj = with(cronjob("* * * * *"), |s| {
            s.starting_deadline_seconds = Some(200)
        });
        let mut events = Vec::new();
        let next = next_schedule_time(
            &cj,
            ts("2026-01-01T05:00:30Z"),
            &sched("* * * * *"),
            &utc(),
            &mut events,
        );
        assert_eq!(next, Ok(Some(ts("2026-01-01T05:00:00Z"))));
        assert!(events.is_empty(), "the deadline keeps the count under 100");
    }

    #[test]
    fn last_schedule_time_replaces_the_creation_time_as_the_starting_point() {
        let cj = with_status(cronjob("0 * * * *"), |s| {
            s.last_schedule_time = Some(Time(ts("2026-01-01T05:00:00Z")))
        });
        let mr = most_recent_schedule_time(
            &cj,
            ts("2026-01-01T05:30:00Z"),
            &sched("0 * * * *"),
            &utc(),
            true,
        );
        assert_eq!(mr.map(|m| m.most_recent), Ok(None));
    }

    #[test]
    fn an_impossible_schedule_is_an_error() {
        let cj = cronjob("59 23 31 2 *");
        let mr = most_recent_schedule_time(
            &cj,
            ts("2026-03-01T00:00:00Z"),
            &sched("59 23 31 2 *"),
            &utc(),
            true,
        );
        assert_eq!(mr, Err(SCHEDULES_TOO_CLOSE.to_owned()));
    }

    #[test]
    fn the_requeue_is_the_next_scheduled_time_plus_100ms() {
        let cj = cronjob("*/5 * * * *");
        assert_eq!(
            next_schedule_time_duration(
                &cj,
                ts("2026-01-01T00:01:00Z"),
                &sched("*/5 * * * *"),
                &utc()
            ),
            Some(Duration::from_secs(240) + NEXT_SCHEDULE_DELTA)
        );
        let cj = with_status(cj, |s| {
            s.last_schedule_time = Some(Time(ts("2026-01-01T00:05:00Z")))
        });
        assert_eq!(
            next_schedule_time_duration(
                &cj,
                ts("2026-01-01T00:05:00.250Z"),
                &sched("*/5 * * * *"),
                &utc()
            ),
            Some(Duration::from_millis(299_750) + NEXT_SCHEDULE_DELTA)
        );
    }

    #[test]
    fn every_schedules_count_from_the_last_schedule_time() {
        let cj = with_status(cronjob("@every 1h"), |s| {
            s.last_schedule_time = Some(Time(ts("2026-01-01T00:17:00Z")))
        });
        let mut events = Vec::new();
        let next = next_schedule_time(
            &cj,
            ts("2026-01-01T03:20:00Z"),
            &sched("@every 1h"),
            &utc(),
            &mut events,
        );
        assert_eq!(next, Ok(Some(ts("2026-01-01T03:17:00Z"))));
    }

    // ---- plan ----

    #[test]
    fn a_due_time_creates_the_job_named_after_its_minute() {
        let cj = cronjob("*/1 * * * *");
        let p = plan(&cj, ts("2026-01-01T00:01:05Z"), &utc());
        let Decision::Create {
            scheduled,
            replace,
            job,
        } = p.decision
        else {
            panic!("expected a create: {p:?}");
        };
        assert_eq!(scheduled, ts("2026-01-01T00:01:00Z"));
        assert!(replace.is_empty());
        let minutes = ts("2026-01-01T00:01:00Z").as_second() / 60;
        assert_eq!(job.metadata.name, Some(format!("cj-{minutes}")));
        assert_eq!(
            job.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCHEDULED_TIMESTAMP_ANNOTATION))
                .map(String::as_str),
            Some("2026-01-01T00:01:00Z")
        );
        assert_eq!(
            job.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("a"))
                .map(String::as_str),
            Some("b")
        );
        assert_eq!(
            job.metadata
                .labels
                .as_ref()
                .and_then(|a| a.get("app"))
                .map(String::as_str),
            Some("x")
        );
        let owner = job
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("CronJob", "cj", "cj-uid")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert!(job.spec.is_some());
    }

    #[test]
    fn the_scheduled_timestamp_annotation_uses_the_cronjobs_time_zone() {
        let cj = with(cronjob("0 9 * * *"), |s| {
            s.time_zone = Some("America/New_York".into())
        });
        let p = plan(&cj, ts("2026-01-01T14:00:10Z"), &utc());
        let Decision::Create { job, scheduled, .. } = p.decision else {
            panic!("expected a create: {p:?}");
        };
        assert_eq!(scheduled, ts("2026-01-01T14:00:00Z"));
        assert_eq!(
            job.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCHEDULED_TIMESTAMP_ANNOTATION))
                .map(String::as_str),
            Some("2026-01-01T09:00:00-05:00")
        );
    }

    #[test]
    fn an_unknown_time_zone_warns_and_waits_for_a_change() {
        let cj = with(cronjob("* * * * *"), |s| {
            s.time_zone = Some("Mars/Olympus".into())
        });
        let p = plan(&cj, ts("2026-01-01T00:05:00Z"), &utc());
        assert_eq!(p.decision, Decision::Wait(None));
        assert_eq!(
            p.events,
            vec![Event::warning(
                "UnknownTimeZone",
                "invalid timeZone: \"Mars/Olympus\": unknown time zone Mars/Olympus".into()
            )]
        );
    }

    #[test]
    fn an_unparseable_schedule_warns_and_waits_for_a_change() {
        let p = plan(&cronjob("61 * * * *"), ts("2026-01-01T00:05:00Z"), &utc());
        assert_eq!(p.decision, Decision::Wait(None));
        assert_eq!(
            p.events,
            vec![Event::warning(
                "UnparseableSchedule",
                "unparseable schedule: \"61 * * * *\" : end of range (61) above maximum (59): 61"
                    .into()
            )]
        );
    }

    #[test]
    fn a_tz_prefix_in_the_schedule_is_honoured_with_an_unsupported_warning() {
        let p = plan(
            &cronjob("TZ=Asia/Tokyo 0 9 * * *"),
            ts("2026-01-02T00:00:05Z"),
            &utc(),
        );
        assert_eq!(reasons(&p), vec!["UnsupportedSchedule"]);
        assert!(
            matches!(p.decision, Decision::Create { scheduled, .. } if scheduled == ts("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn a_suspended_cronjob_creates_nothing_and_waits() {
        let cj = with(cronjob("* * * * *"), |s| s.suspend = Some(true));
        let p = plan(&cj, ts("2026-01-01T00:05:00Z"), &utc());
        assert_eq!(
            p,
            Plan {
                events: vec![],
                decision: Decision::Wait(None)
            }
        );
    }

    #[test]
    fn a_cronjob_being_deleted_creates_nothing() {
        let mut cj = cronjob("* * * * *");
        cj.metadata.deletion_timestamp = Some(Time(ts(CREATED)));
        assert_eq!(
            plan(&cj, ts("2026-01-01T00:05:00Z"), &utc()).decision,
            Decision::Wait(None)
        );
    }

    #[test]
    fn nothing_due_requeues_at_the_next_time() {
        let p = plan(&cronjob("0 * * * *"), ts("2026-01-01T00:59:00Z"), &utc());
        assert_eq!(
            p.decision,
            Decision::Wait(Some(Duration::from_secs(60) + NEXT_SCHEDULE_DELTA))
        );
    }

    #[test]
    fn a_slot_older_than_the_starting_deadline_is_not_run() {
        let cj = with(cronjob("0 * * * *"), |s| {
            s.starting_deadline_seconds = Some(10)
        });
        // The 01:00 slot is inside the window computed from now-10s only if now < 01:00:10.
        let p = plan(&cj, ts("2026-01-01T01:00:05Z"), &utc());
        assert!(matches!(p.decision, Decision::Create { .. }));
        let p = plan(&cj, ts("2026-01-01T01:00:30Z"), &utc());
        assert_eq!(
            p.decision,
            Decision::Wait(Some(Duration::from_secs(3570) + NEXT_SCHEDULE_DELTA))
        );
        assert!(
            p.events.is_empty(),
            "the deadline window hides the slot entirely"
        );
    }

    #[test]
    fn a_zero_starting_deadline_skips_a_slot_already_past() {
        let cj = with(cronjob("0 * * * *"), |s| {
            s.starting_deadline_seconds = Some(0)
        });
        let p = plan(&cj, ts("2026-01-01T01:00:00.500Z"), &utc());
        assert_eq!(reasons(&p), Vec::<&str>::new());
        assert_eq!(
            p.decision,
            Decision::Wait(Some(Duration::from_millis(3_599_500) + NEXT_SCHEDULE_DELTA))
        );
    }

    #[test]
    fn an_already_processed_time_is_not_created_again() {
        let cj = with_status(cronjob("0 * * * *"), |s| {
            s.last_schedule_time = Some(Time(ts("2026-01-01T01:00:00Z")))
        });
        let p = plan(&cj, ts("2026-01-01T01:00:30Z"), &utc());
        assert!(matches!(p.decision, Decision::Wait(Some(_))));
        let minutes = ts("2026-01-01T01:00:00Z").as_second() / 60;
        let cj = with_status(cronjob("0 * * * *"), |s| {
            s.active = Some(vec![active_ref(&format!("cj-{minutes}"), "u")])
        });
        let p = plan(&cj, ts("2026-01-01T01:00:30Z"), &utc());
        assert!(matches!(p.decision, Decision::Wait(Some(_))));
    }

    #[test]
    fn forbid_skips_while_a_job_is_active() {
        let cj = with(cronjob("* * * * *"), |s| {
            s.concurrency_policy = Some("Forbid".into())
        });
        let cj = with_status(cj, |s| {
            s.active = Some(vec![active_ref("cj-1", "u1")]);
            s.last_schedule_time = Some(Time(ts("2026-01-01T00:04:00Z")));
        });
        let p = plan(&cj, ts("2026-01-01T00:05:01Z"), &utc());
        assert_eq!(reasons(&p), vec!["JobAlreadyActive"]);
        assert_eq!(
            p.decision,
            Decision::Wait(Some(Duration::from_secs(59) + NEXT_SCHEDULE_DELTA))
        );
    }

    #[test]
    fn forbid_creates_when_nothing_is_active() {
        let cj = with(cronjob("* * * * *"), |s| {
            s.concurrency_policy = Some("Forbid".into())
        });
        assert!(matches!(
            plan(&cj, ts("2026-01-01T00:05:01Z"), &utc()).decision,
            Decision::Create { .. }
        ));
    }

    #[test]
    fn replace_deletes_the_active_jobs_before_creating() {
        let cj = with(cronjob("* * * * *"), |s| {
            s.concurrency_policy = Some("Replace".into())
        });
        let cj = with_status(cj, |s| s.active = Some(vec![active_ref("cj-1", "u1")]));
        let p = plan(&cj, ts("2026-01-01T00:05:01Z"), &utc());
        let Decision::Create { replace, .. } = p.decision else {
            panic!("expected a create")
        };
        assert_eq!(replace, vec![active_ref("cj-1", "u1")]);
    }

    #[test]
    fn allow_creates_alongside_active_jobs() {
        let cj = with_status(cronjob("* * * * *"), |s| {
            s.active = Some(vec![active_ref("cj-1", "u1")])
        });
        let p = plan(&cj, ts("2026-01-01T00:05:01Z"), &utc());
        assert!(matches!(p.decision, Decision::Create { ref replace, .. } if replace.is_empty()));
    }

    // ---- children ----

    #[test]
    fn a_finished_active_job_leaves_the_active_list() {
        let mut st = CronJobStatus {
            active: Some(vec![active_ref("j1", "u1")]),
            ..Default::default()
        };
        let c = reconcile_children(&mut st, &[job("j1", "u1", Some("Failed"), Some(CREATED))]);
        assert_eq!(st.active, Some(vec![]));
        assert!(c.changed);
        assert_eq!(
            c.events,
            vec![Event::normal(
                "SawCompletedJob",
                "Saw completed job: j1, status: Failed".into()
            )]
        );
    }

    #[test]
    fn a_succeeded_job_outside_the_active_list_sets_last_successful_time_to_the_latest() {
        let mut st = CronJobStatus::default();
        let jobs = [
            job("j1", "u1", Some("Complete"), Some("2026-01-01T00:01:00Z")),
            job("j2", "u2", Some("Complete"), Some("2026-01-01T00:03:00Z")),
            job("j3", "u3", Some("Failed"), Some("2026-01-01T00:04:00Z")),
        ];
        let c = reconcile_children(&mut st, &jobs);
        assert!(c.changed);
        assert_eq!(
            st.last_successful_time,
            Some(Time(ts("2026-01-01T00:03:00Z")))
        );
    }

    #[test]
    fn an_unfinished_job_missing_from_the_active_list_is_unexpected() {
        let mut st = CronJobStatus::default();
        let c = reconcile_children(&mut st, &[job("j1", "u1", None, None)]);
        assert_eq!(c.unexpected, vec!["j1".to_owned()]);
    }

    #[test]
    fn an_active_reference_without_a_job_is_possibly_missing() {
        let mut st = CronJobStatus {
            active: Some(vec![active_ref("gone", "ug")]),
            ..Default::default()
        };
        let c = reconcile_children(&mut st, &[]);
        assert_eq!(c.possibly_missing, vec![active_ref("gone", "ug")]);
    }

    // ---- history ----

    #[test]
    fn history_cleanup_deletes_the_oldest_finished_jobs_beyond_each_limit() {
        let cj = cronjob("* * * * *");
        let jobs = [
            job("s4", "u4", Some("Complete"), Some("2026-01-01T00:04:00Z")),
            job("s1", "u1", Some("Complete"), Some("2026-01-01T00:01:00Z")),
            job("s3", "u3", Some("Complete"), Some("2026-01-01T00:03:00Z")),
            job("s2", "u2", Some("Complete"), Some("2026-01-01T00:02:00Z")),
            job("s5", "u5", Some("Complete"), Some("2026-01-01T00:05:00Z")),
            job("f1", "uf1", Some("Failed"), Some("2026-01-01T00:01:00Z")),
            job("f2", "uf2", Some("Failed"), Some("2026-01-01T00:02:00Z")),
            job("running", "ur", None, Some("2026-01-01T00:00:00Z")),
        ];
        let names: Vec<String> = history_to_delete(&cj, &jobs)
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["s1", "s2", "f1"]);
    }

    #[test]
    fn history_cleanup_sorts_unstarted_jobs_last_and_breaks_ties_by_name() {
        let mut jobs = [
            job("c", "u3", Some("Complete"), None),
            job("b", "u2", Some("Complete"), Some(CREATED)),
            job("a", "u1", Some("Complete"), Some(CREATED)),
        ];
        jobs.sort_by(|a, b| by_start_time(a, b));
        let names: Vec<_> = jobs
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["a", "b", "c"]);
    }

    #[test]
    fn no_limits_means_no_cleanup() {
        let cj = with(cronjob("* * * * *"), |s| {
            s.successful_jobs_history_limit = None;
            s.failed_jobs_history_limit = None;
        });
        let jobs = [
            job("s1", "u1", Some("Complete"), None),
            job("s2", "u2", Some("Complete"), None),
        ];
        assert!(history_to_delete(&cj, &jobs).is_empty());
    }

    #[test]
    fn a_zero_limit_deletes_every_finished_job() {
        let cj = with(cronjob("* * * * *"), |s| {
            s.successful_jobs_history_limit = Some(0)
        });
        let jobs = [job("s1", "u1", Some("Complete"), None)];
        assert_eq!(history_to_delete(&cj, &jobs).len(), 1);
    }

    // ---- naming ----

    #[test]
    fn job_names_use_minutes_since_the_epoch() {
        assert_eq!(
            job_name("hello", ts("2026-01-01T00:01:59Z")),
            "hello-29453761"
        );
        assert_eq!(
            job_name("hello", ts("2026-01-01T00:01:00Z")),
            "hello-29453761"
        );
    }

    #[test]
    fn rfc3339_formatting_matches_go() {
        let ny = schedule::load_location("America/New_York");
        let Ok(Location::Zone(ny)) = ny else {
            panic!("zone")
        };
        assert_eq!(
            format_rfc3339(ts("2026-07-01T13:00:00Z"), &ny),
            "2026-07-01T09:00:00-04:00"
        );
        assert_eq!(
            format_rfc3339(ts("2026-07-01T13:00:00Z"), &utc()),
            "2026-07-01T13:00:00Z"
        );
    }
}
