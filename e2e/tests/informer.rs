//! The shared informer rides out an apiserver restart: its cache keeps serving while the
//! apiserver is gone, and once it is back the informer reconnects (resuming the watch, or relisting
//! when the resourceVersion is too old) and reports every later change, as client-go's reflector
//! does. It also syncs against an apiserver that refuses streaming lists.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ferrite_e2e::bed::client_from;
use ferrite_e2e::testing::{self, PrivateBed, eventually};
use ferrite_runtime::informer::{Change, Informer, InformerFactory};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Added(String),
    Updated(String),
    Deleted(String),
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn seen_since(log: &Log, from: usize) -> Vec<Seen> {
    log.lock()
        .map(|l| l.get(from..).map(<[Seen]>::to_vec).unwrap_or_default())
        .unwrap_or_default()
}

/// The cached names of `ns`; when the namespace index disagrees with a scan of the whole cache,
/// the result says so (and matches nothing a test expects).
fn cached_names(informer: &Informer<ConfigMap>, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = informer
        .store()
        .state()
        .iter()
        .filter(|cm| cm.metadata.namespace.as_deref() == Some(ns))
        .filter_map(|cm| cm.metadata.name.clone())
        .collect();
    names.sort();
    let mut indexed: Vec<String> = informer
        .list_namespace(ns)
        .iter()
        .filter_map(|cm| cm.metadata.name.clone())
        .collect();
    indexed.sort();
    if indexed != names {
        return vec![format!("namespace index {indexed:?} != cache {names:?}")];
    }
    names
}

fn config_map(name: &str) -> Result<ConfigMap> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": "1"},
    }))?)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A fresh factory (with a client of its own, as a component has) whose ConfigMap informer has
/// synced; the informers stop when the guard drops.
async fn synced_informer(
    bed: &PrivateBed,
) -> Result<(Informer<ConfigMap>, tokio_util::sync::DropGuard)> {
    let factory = InformerFactory::new(client_from(&bed.kubeconfig()).await?);
    let informer = factory.informer::<ConfigMap>();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone().drop_guard();
    factory.start(shutdown);
    tokio::time::timeout(Duration::from_secs(30), factory.wait_for_cache_sync()).await?;
    Ok((informer, stop))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_keeps_its_cache_through_an_apiserver_restart_and_reports_every_later_change()
-> Result<()> {
    let bed = PrivateBed::start(|mut o| {
        o.nodes = 1;
        o
    })
    .await?;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "informer").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);

    // The factory gets a client of its own, as a component has.
    let factory = InformerFactory::new(client_from(&bed.kubeconfig()).await?);
    let informer = factory.informer::<ConfigMap>();
    let log: Log = Arc::default();
    let handler_log = log.clone();
    let handler_ns = ns.clone();
    informer.add_handler(move |change| {
        let (obj, seen): (_, fn(String) -> Seen) = match change {
            Change::Added(o) => (o, Seen::Added),
            Change::Updated { new, .. } => (new, Seen::Updated),
            Change::Deleted(o) => (o, Seen::Deleted),
        };
        if obj.metadata.namespace.as_deref() != Some(handler_ns.as_str()) {
            return;
        }
        if let (Some(name), Ok(mut l)) = (obj.metadata.name.clone(), handler_log.lock()) {
            l.push(seen(name));
        }
    });
    let shutdown = CancellationToken::new();
    let _stop_informers = shutdown.clone().drop_guard();
    factory.start(shutdown);
    tokio::time::timeout(Duration::from_secs(30), factory.wait_for_cache_sync()).await?;

    cms.create(&PostParams::default(), &config_map("before")?)
        .await?;
    eventually(
        "the informer to see `before` added",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            (seen_since(&log, 0) == [Seen::Added("before".into())]
                && cached_names(&informer, &ns) == ["before"])
            .then_some(())
        },
    )
    .await?;

    // stop_apiserver blocks while it waits for the process to exit.
    tokio::task::block_in_place(|| bed.stop_apiserver());
    let down =
        tokio::time::timeout(Duration::from_secs(10), cms.list(&ListParams::default())).await;
    ensure!(
        !matches!(down, Ok(Ok(_))),
        "the apiserver still answers after stop_apiserver"
    );
    // Long enough for the watch to fail and the informer to back off a few times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        cached_names(&informer, &ns) == ["before"],
        "the cache lost `before` while the apiserver was down"
    );
    let mark = log.lock().map(|l| l.len()).unwrap_or_default();

    bed.start_apiserver().await?;
    let deadline = Instant::now() + Duration::from_secs(60);

    // Created at once, possibly before the informer has reconnected: it must still be reported.
    cms.create(&PostParams::default(), &config_map("after")?)
        .await?;
    eventually(
        "the informer to see `after` added after the restart",
        remaining(deadline),
        Duration::from_millis(100),
        || async {
            seen_since(&log, mark)
                .contains(&Seen::Added("after".into()))
                .then_some(())
        },
    )
    .await?;

    let patch = serde_json::json!({"data": {"v": "2"}});
    cms.patch("before", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    eventually(
        "the informer to see `before` updated",
        remaining(deadline),
        Duration::from_millis(100),
        || async {
            seen_since(&log, mark)
                .contains(&Seen::Updated("before".into()))
                .then_some(())
        },
    )
    .await?;
    let cached_v = informer
        .get(Some(&ns), "before")
        .and_then(|cm| cm.data.as_ref()?.get("v").cloned());
    ensure!(
        cached_v.as_deref() == Some("2"),
        "the cache holds `before` with v={cached_v:?}, want 2"
    );

    cms.delete("before", &DeleteParams::default()).await?;
    eventually(
        "the cache to match the apiserver's list",
        remaining(deadline),
        Duration::from_millis(100),
        || async {
            let mut listed: Vec<String> = cms
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|cm| cm.metadata.name)
                .collect();
            listed.sort();
            (seen_since(&log, mark).contains(&Seen::Deleted("before".into()))
                && cached_names(&informer, &ns) == listed)
                .then_some(())
        },
    )
    .await?;
    ensure!(
        cached_names(&informer, &ns) == ["after"],
        "cache: {:?}",
        cached_names(&informer, &ns)
    );

    // Nothing more and nothing twice: a relist must not re-announce `before`, which did not
    // change while the apiserver was down.
    let since = seen_since(&log, mark);
    ensure!(
        since
            == [
                Seen::Added("after".into()),
                Seen::Updated("before".into()),
                Seen::Deleted("before".into())
            ],
        "the informer reported {since:?} after the restart"
    );
    Ok(())
}

/// The informer asks for a streaming list (a watch with `sendInitialEvents`); an apiserver with
/// the WatchList feature off rejects that request, and the informer lists instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_lists_when_the_apiserver_refuses_streaming_lists() -> Result<()> {
    let bed = PrivateBed::start(|mut o| {
        o.nodes = 1;
        o.apiserver_args = vec!["--feature-gates=WatchList=false".into()];
        o
    })
    .await?;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "informer-list").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &config_map("listed")?)
        .await?;

    let (informer, _stop_informers) = synced_informer(&bed).await?;
    ensure!(
        cached_names(&informer, &ns) == ["listed"],
        "cached after sync: {:?}",
        cached_names(&informer, &ns)
    );
    cms.create(&PostParams::default(), &config_map("watched")?)
        .await?;
    eventually(
        "the informer to see `watched`",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { (cached_names(&informer, &ns) == ["listed", "watched"]).then_some(()) },
    )
    .await?;
    Ok(())
}

/// A controller starts working the moment the caches report synced, and lists namespaces through
/// the namespace index at once: the index must hold the initial state by then, or the controller
/// would see no pods and create them again (a Job controller restarted mid-Job did). Fresh
/// informers, many times over, since the window is a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_index_holds_the_initial_state_when_the_cache_reports_synced() -> Result<()> {
    let bed = PrivateBed::start(|mut o| {
        o.nodes = 1;
        o
    })
    .await?;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "informer-index").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut want = Vec::new();
    for i in 0..40 {
        let name = format!("cm-{i:02}");
        cms.create(&PostParams::default(), &config_map(&name)?)
            .await?;
        want.push(name);
    }
    for round in 0..25 {
        let (informer, _stop_informers) = synced_informer(&bed).await?;
        let mut indexed: Vec<String> = informer
            .list_namespace(&ns)
            .iter()
            .filter_map(|cm| cm.metadata.name.clone())
            .collect();
        indexed.sort();
        ensure!(
            indexed == want,
            "round {round}: right after sync the namespace index gave {} of {} objects",
            indexed.len(),
            want.len()
        );
    }
    Ok(())
}
