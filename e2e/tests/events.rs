//! The event recorder against the stock apiserver: repeats become one Event with a count (as
//! client-go's correlator patches it), and a hot loop cannot flood the apiserver.

use std::time::Duration;

use ferrite_e2e::testing::{self, eventually, shared_bed};
use ferrite_runtime::events::EventRecorder;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, PostParams};

async fn config_map(client: &kube::Client, ns: &str, name: &str) -> ConfigMap {
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create cm")
}

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test]
async fn identical_events_become_one_event_whose_count_is_patched() {
    let bed = shared_bed(|o| o).await;
    let client = bed.client().await.expect("client");
    let ns = testing::namespace(&client, "events-dedup")
        .await
        .expect("ns");
    let cm = config_map(&client, &ns, "subject").await;
    let recorder =
        EventRecorder::new(client.clone(), "ferrite-test").for_controller("deployment-controller");
    for _ in 0..3 {
        recorder.normal(
            &cm,
            "ScalingReplicaSet",
            "Scaled up replica set web-1 from 0 to 3",
        );
    }
    let events = eventually(
        "one event with count 3",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let evs = events_for(&client, &ns, "subject").await;
            (evs.len() == 1 && evs[0].count == Some(3)).then_some(evs)
        },
    )
    .await
    .expect("deduplicated event");
    let e = &events[0];
    assert_eq!(e.reason.as_deref(), Some("ScalingReplicaSet"));
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("deployment-controller")
    );
    assert_eq!(e.involved_object.uid, cm.metadata.uid);
}

#[tokio::test]
async fn a_hot_loop_is_capped_by_the_spam_filter() {
    let bed = shared_bed(|o| o).await;
    let client = bed.client().await.expect("client");
    let ns = testing::namespace(&client, "events-spam")
        .await
        .expect("ns");
    let cm = config_map(&client, &ns, "hot").await;
    let recorder =
        EventRecorder::new(client.clone(), "ferrite-test").for_controller("replicaset-controller");
    // Distinct messages defeat de-duplication; aggregation folds them after 10 and the spam
    // filter (burst 25 per source+object) drops the rest.
    for i in 0..500 {
        recorder.warning(&cm, "FailedCreate", format!("Error creating: attempt {i}"));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let evs = events_for(&client, &ns, "hot").await;
    let total: i32 = evs.iter().map(|e| e.count.unwrap_or(1)).sum();
    assert!(!evs.is_empty(), "no event was written");
    assert!(
        evs.len() <= 11,
        "{} distinct Event objects for one object and reason",
        evs.len()
    );
    assert!(
        total <= 25,
        "the apiserver saw {total} occurrences; the spam filter allows a burst of 25"
    );
    assert!(
        evs.iter().any(|e| e
            .message
            .as_deref()
            .unwrap_or("")
            .starts_with("(combined from similar events): ")),
        "similar events were not aggregated"
    );
}
