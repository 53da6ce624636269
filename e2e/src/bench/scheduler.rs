//! Scheduler benchmark, after kubernetes/kubernetes test/integration/scheduler_perf
//! (config/performance-config.yaml): for each workload, the stock kube-scheduler and Ferrite's
//! scheduler each run on a fresh bed of `nodes` kwok nodes (4 CPU, 32Gi, 110 pods, labelled
//! `topology.kubernetes.io/zone` across three zones). Init pods are created and left to be
//! scheduled; then the measured pods are created by several concurrent creators at one shared
//! client rate, and the run lasts until all are bound. Reported, as scheduler_perf's collectors
//! do: average throughput, p50/p90 of the per-second throughput samples, p99 of
//! `scheduler_scheduling_attempt_duration_seconds` over the measured phase, and the scheduler's
//! CPU-seconds and peak RSS. A trivial binder inside the bench (round-robin, no plugins, the
//! schedulers' client QPS/burst) on a third fresh bed gives the bed's ceiling for the same pods.
//! After each stock/Ferrite run, [`crate::validity`] checks every placement.
//!
//! Workloads (pod shapes from scheduler_perf's templates: pause, 100m CPU / 500Mi requests):
//! - basic: pod-default for init and measured pods (SchedulingBasic).
//! - anti-affinity: pods labelled `color=g<k>` with required anti-affinity to their own colour on
//!   `kubernetes.io/hostname` (pod-with-pod-anti-affinity). Upstream uses one colour and as many
//!   pods as nodes; here consecutive groups of `nodes` pods share a colour so `--measure-pods`
//!   may exceed the node count.
//! - spread: pod-default init pods, measured pods with a DoNotSchedule zone spread of maxSkew 5
//!   (pod-with-topology-spreading, TopologySpreading).
//! - node-affinity: required node affinity to two of the three zones (pod-with-node-affinity,
//!   SchedulingNodeAffinity).
//! - preemption: 4 low-priority 900m pods per node fill every node, then min(measure-pods,
//!   nodes) high-priority 3000m pods each preempt three of them (pod-low-priority,
//!   pod-high-priority, PreemptionBasic; init-pods is ignored).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::bed::{Bed, BedOptions, Component};
use crate::measure::{ProcessStats, process_stats};
use crate::process::Mode;
use crate::testing;
use crate::validity;

/// The process name of the measured scheduler on the bed.
const SCHED: &str = "scheduler";
/// The schedulerName the bench's trivial binder serves.
const BINDER: &str = "ferrite-bench-binder";
const ZONE_KEY: &str = "topology.kubernetes.io/zone";
const ZONES: usize = 3;
/// Bind requests the trivial binder keeps in flight (the client bucket still limits the rate).
const BINDER_WORKERS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Basic,
    AntiAffinity,
    Spread,
    NodeAffinity,
    Preemption,
    All,
}

impl Workload {
    fn each(self) -> Vec<Workload> {
        match self {
            Workload::All => vec![
                Workload::Basic,
                Workload::AntiAffinity,
                Workload::Spread,
                Workload::NodeAffinity,
                Workload::Preemption,
            ],
            w => vec![w],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Basic => "basic",
            Workload::AntiAffinity => "anti-affinity",
            Workload::Spread => "spread",
            Workload::NodeAffinity => "node-affinity",
            Workload::Preemption => "preemption",
            Workload::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SchedulerBench {
    pub nodes: u32,
    pub init_pods: usize,
    pub measure_pods: usize,
    pub workload: Workload,
    /// Concurrent pod creators.
    pub creators: usize,
    /// The creators' shared request rate (pods/s); 0 for no limit. The same for every run.
    pub create_qps: f64,
    /// Client QPS and burst of both schedulers (`--kube-api-qps`, `--kube-api-burst`) and of the
    /// trivial binder.
    pub qps: f64,
    pub burst: u32,
    /// Give up on a run's phase after this long ("did not finish").
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Stock,
    Ferrite,
    Ceiling,
}

/// Pod counts of one workload at the bench's size.
#[derive(Clone, Copy, Debug)]
struct Shape {
    init: usize,
    measure: usize,
}

fn shape(w: Workload, b: &SchedulerBench) -> Shape {
    match w {
        Workload::Preemption => Shape {
            init: 4 * b.nodes as usize,
            measure: b.measure_pods.min(b.nodes as usize),
        },
        _ => Shape {
            init: b.init_pods,
            measure: b.measure_pods,
        },
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Figures {
    finished: bool,
    /// Measured pods bound when the run ended.
    bound: usize,
    /// Creation of the first measured pod until the last is bound (or the timeout).
    elapsed: Duration,
    average: f64,
    p50: f64,
    p90: f64,
    /// p99 of scheduling attempt latency over the measured phase, in seconds.
    attempt_p99: Option<f64>,
    stats: Option<ProcessStats>,
    /// None for the ceiling run.
    validity: Option<std::result::Result<Vec<validity::Violation>, String>>,
    /// Why the run failed outright.
    error: Option<String>,
}

/// Runs every chosen workload against stock, Ferrite and the ceiling, printing one table each.
pub async fn run(b: SchedulerBench) -> Result<()> {
    for w in b.workload.each() {
        let s = shape(w, &b);
        let mut figures = Vec::new();
        for backend in [Backend::Stock, Backend::Ferrite, Backend::Ceiling] {
            let f = match run_on(backend, w, s, &b).await {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("{} {backend:?}: {e:#}", w.name());
                    Figures {
                        error: Some(format!("{e:#}")),
                        ..Default::default()
                    }
                }
            };
            figures.push(f);
        }
        print_table(w, s, &b, &figures[0], &figures[1], &figures[2]);
    }
    Ok(())
}

async fn run_on(backend: Backend, w: Workload, s: Shape, b: &SchedulerBench) -> Result<Figures> {
    let dir = std::env::temp_dir().join(format!(
        "ferrite-bench-sched-{}-{}-{backend:?}",
        std::process::id(),
        w.name()
    ));
    let mut opts = BedOptions::new(&dir);
    opts.nodes = b.nodes;
    opts.scheduler = Component::None;
    opts.controller_manager = Component::None;
    let bed = Bed::up(opts, Mode::Attached).await?;
    let result = measure(&bed, backend, w, s, b).await;
    bed.down();
    result
}

/// Labels the bed's nodes round-robin across the zones.
async fn label_zones(client: &kube::Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names: Vec<String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    futures::stream::iter(names.into_iter().enumerate())
        .map(|(i, name)| {
            let nodes = nodes.clone();
            async move {
                let patch =
                    json!({"metadata": {"labels": {ZONE_KEY: format!("zone-{}", i % ZONES)}}});
                nodes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
                    .with_context(|| format!("labelling node {name}"))
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn wait_lease(client: &kube::Client, name: &str, timeout: Duration) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + timeout;
    loop {
        let held = leases
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .is_some_and(|h| !h.is_empty());
        if held {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("lease {name} not held after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Namespaces {
    init: String,
    measure: String,
}

/// The pod of `w` for phase `measured`, number `i` counted over init and measured pods together.
fn pod_for(
    w: Workload,
    measured: bool,
    i: usize,
    nodes: usize,
    ns: &Namespaces,
    sched: &str,
) -> Value {
    let resources = |cpu: &str| json!({"requests": {"cpu": cpu, "memory": "500Mi"}, "limits": {"cpu": cpu, "memory": "500Mi"}});
    let mut labels = json!({"bench": "scheduler"});
    let mut spec = json!({
        "schedulerName": sched,
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}], "resources": resources("100m")}],
    });
    match w {
        Workload::Basic | Workload::All => {}
        Workload::AntiAffinity => {
            let color = format!("g{}", i / nodes.max(1));
            labels["color"] = json!(color);
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"color": color}},
                "topologyKey": "kubernetes.io/hostname",
                "namespaces": [ns.init, ns.measure],
            }]}});
        }
        Workload::Spread => {
            if measured {
                labels["color"] = json!("blue");
                spec["topologySpreadConstraints"] = json!([{
                    "maxSkew": 5, "topologyKey": ZONE_KEY, "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"color": "blue"}},
                }]);
            }
        }
        Workload::NodeAffinity => {
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{
                    "key": ZONE_KEY, "operator": "In", "values": ["zone-0", "zone-1"],
                }]}],
            }}});
        }
        Workload::Preemption => {
            if measured {
                spec["priorityClassName"] = json!("bench-high");
                spec["containers"][0]["resources"] = resources("3000m");
            } else {
                spec["priorityClassName"] = json!("bench-low");
                spec["containers"][0]["resources"] = resources("900m");
            }
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{}-{i}", if measured { "measured" } else { "init" }), "labels": labels},
        "spec": spec,
    })
}

async fn measure(
    bed: &Bed,
    backend: Backend,
    w: Workload,
    s: Shape,
    b: &SchedulerBench,
) -> Result<Figures> {
    let client = bed.client().await?;
    label_zones(&client).await?;
    let ns = Namespaces {
        init: testing::namespace(&client, "sched-setup").await?,
        measure: testing::namespace(&client, "sched-test").await?,
    };
    for n in [&ns.init, &ns.measure] {
        testing::ensure_default_service_account(&client, n).await?;
    }
    if w == Workload::Preemption {
        for (name, value) in [("bench-low", 10), ("bench-high", 1000)] {
            let pc: PriorityClass = serde_json::from_value(json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value,
            }))?;
            Api::<PriorityClass>::all(client.clone())
                .create(&PostParams::default(), &pc)
                .await?;
        }
    }

    let qps = format!("--kube-api-qps={}", b.qps);
    let burst = format!("--kube-api-burst={}", b.burst);
    let flags = [qps.as_str(), burst.as_str()];
    let (sched_name, port) = match backend {
        Backend::Stock => {
            let port = bed.start_stock(SCHED, "kube-scheduler", &flags)?;
            wait_lease(&client, "kube-scheduler", Duration::from_secs(120))
                .await
                .with_context(|| bed.log_tail(SCHED))?;
            ("default-scheduler", Some(port))
        }
        Backend::Ferrite => {
            let port = bed.start_ferrite(SCHED, "scheduler", &flags)?;
            wait_lease(&client, "ferrite-scheduler", Duration::from_secs(120))
                .await
                .with_context(|| bed.log_tail(SCHED))?;
            ("default-scheduler", Some(port))
        }
        Backend::Ceiling => (BINDER, None),
    };
    // The binder gets a client (and connections) of its own, as a scheduler process would.
    let binder = match backend {
        Backend::Ceiling => Some(tokio::spawn(trivial_binder(
            bed.client().await?,
            Arc::new(Bucket::new(b.qps, b.burst)),
        ))),
        _ => None,
    };
    let token = match port {
        Some(_) => Some(testing::metrics_reader_token(&client, &ns.init).await?),
        None => None,
    };
    let creators = Arc::new(Bucket::new(b.create_qps, b.creators as u32));
    let nodes = b.nodes as usize;

    let result = async {
        // Init pods, then wait until all are bound.
        let init_bound = BoundCounter::start(client.clone(), &ns.init);
        let started = Instant::now();
        create_pods(&client, &ns.init, 0..s.init, b.creators, &creators, |i| {
            pod_for(w, false, i, nodes, &ns, sched_name)
        })
        .await?;
        if !init_bound.wait(s.init, b.timeout).await {
            if backend != Backend::Ceiling {
                eprintln!("{}", bed.log_tail(SCHED));
            }
            eprintln!(
                "{} {backend:?}: only {}/{} init pods bound after {:?}",
                w.name(),
                init_bound.count(),
                s.init,
                b.timeout
            );
            return Ok::<_, anyhow::Error>(Figures {
                error: Some(format!(
                    "did not finish: {}/{} init pods bound after {:?}",
                    init_bound.count(),
                    s.init,
                    b.timeout
                )),
                ..Default::default()
            });
        }
        eprintln!(
            "{} {backend:?}: {} init pods bound after {:.1}s",
            w.name(),
            s.init,
            started.elapsed().as_secs_f64()
        );

        let before = match (port, &token) {
            (Some(p), Some(t)) => scrape(p, t).await.ok(),
            _ => None,
        };
        let bound = Arc::new(BoundCounter::start(client.clone(), &ns.measure));
        let start = Instant::now();
        // (seconds since the first creation, measured pods bound), once a second.
        let samples = Arc::new(std::sync::Mutex::new(Vec::<(f64, usize)>::new()));
        let sampler = {
            let bound = bound.clone();
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Ok(mut s) = samples.lock() {
                        s.push((start.elapsed().as_secs_f64(), bound.count()));
                    }
                }
            })
        };
        let offset = s.init;
        let create = create_pods(
            &client,
            &ns.measure,
            offset..offset + s.measure,
            b.creators,
            &creators,
            |i| pod_for(w, true, i, nodes, &ns, sched_name),
        );
        let (created, finished) = tokio::join!(create, bound.wait(s.measure, b.timeout));
        created?;
        let elapsed = start.elapsed();
        sampler.abort();
        let count = bound.count();
        let mut samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
        // The last, partial second counts too (a short run may have no full one).
        samples.push((elapsed.as_secs_f64(), count));
        let (p50, p90) = throughput_percentiles(&samples);
        let after = match (port, &token) {
            (Some(p), Some(t)) => scrape(p, t).await.ok(),
            _ => None,
        };
        let attempt_p99 = match (before, after) {
            (Some(a), Some(z)) => quantile(0.99, &delta(&a, &z)),
            _ => None,
        };
        let stats = bed.pid(SCHED).and_then(process_stats);
        if !finished && backend != Backend::Ceiling {
            // The bed and its logs are removed after the run; this is the only trace left.
            eprintln!("{}", bed.log_tail(SCHED));
        }
        eprintln!(
            "{} {backend:?}: {count}/{} measured pods bound after {:.1}s",
            w.name(),
            s.measure,
            elapsed.as_secs_f64()
        );
        let validity = if backend == Backend::Ceiling {
            None
        } else {
            Some(
                validity::check(&client, &[ns.init.clone(), ns.measure.clone()])
                    .await
                    .map_err(|e| format!("{e:#}")),
            )
        };
        Ok(Figures {
            finished,
            bound: count,
            elapsed,
            average: count as f64 / elapsed.as_secs_f64().max(1e-9),
            p50,
            p90,
            attempt_p99,
            stats,
            validity,
            error: None,
        })
    }
    .await;
    if let Some(binder) = binder {
        binder.abort();
    }
    result
}

async fn create_pods(
    client: &kube::Client,
    ns: &str,
    range: std::ops::Range<usize>,
    creators: usize,
    bucket: &Bucket,
    make: impl Fn(usize) -> Value,
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            let body = make(i);
            async move {
                let pod: Pod = serde_json::from_value(body)?;
                let mut attempt = 0;
                loop {
                    bucket.take().await;
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => return Ok::<_, anyhow::Error>(()),
                        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing::debug!(error = %e, "creating a pod; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        })
        .buffer_unordered(creators.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Counts the bound pods of a namespace from a watch, as scheduler_perf's throughput collector
/// does from its informer.
struct BoundCounter {
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BoundCounter {
    fn start(client: kube::Client, ns: &str) -> BoundCounter {
        let count = Arc::new(AtomicUsize::new(0));
        let api: Api<Pod> = Api::namespaced(client, ns);
        let counter = count.clone();
        let task = tokio::spawn(async move {
            let mut bound: HashSet<String> = HashSet::new();
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else {
                    continue;
                };
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        if p.spec
                            .and_then(|s| s.node_name)
                            .is_some_and(|n| !n.is_empty())
                        {
                            bound.insert(name);
                        }
                    }
                    watcher::Event::Delete(p) => {
                        bound.remove(&p.metadata.name.unwrap_or_default());
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                counter.store(bound.len(), Ordering::Relaxed);
            }
        });
        BoundCounter { count, task }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True once `want` pods are bound, false after `timeout`.
    async fn wait(&self, want: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count() < want {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

impl Drop for BoundCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// client-go's token bucket (flowcontrol.NewTokenBucketRateLimiter): `qps` tokens a second, at
/// most `burst` banked, starting full. A `qps` of zero or less does not limit.
struct Bucket {
    qps: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(qps: f64, burst: u32) -> Bucket {
        let burst = f64::from(burst.max(1));
        Bucket {
            qps,
            burst,
            state: tokio::sync::Mutex::new((burst, Instant::now())),
        }
    }

    async fn take(&self) {
        if self.qps <= 0.0 {
            return;
        }
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let tokens = (s.0 + now.duration_since(s.1).as_secs_f64() * self.qps).min(self.burst);
            // Reserve the token now (possibly going into debt) so waiters queue up in order.
            *s = (tokens - 1.0, now);
            if tokens >= 1.0 {
                return;
            }
            (1.0 - tokens) / self.qps
        };
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
}

/// The ceiling: binds every pending pod of [`BINDER`] to the next node round-robin, with no
/// filtering or scoring, through the same pods/binding call and client limits as a scheduler.
async fn trivial_binder(client: kube::Client, bucket: Arc<Bucket>) {
    let nodes: Vec<String> = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect(),
        Err(e) => {
            eprintln!("trivial binder: listing nodes: {e}");
            return;
        }
    };
    if nodes.is_empty() {
        return;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let next = Arc::new(AtomicUsize::new(0));
    let nodes = Arc::new(nodes);
    let mut workers = Vec::new();
    for _ in 0..BINDER_WORKERS {
        let (client, bucket, rx, next, nodes) = (
            client.clone(),
            bucket.clone(),
            rx.clone(),
            next.clone(),
            nodes.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some((ns, name)) = rx.lock().await.recv().await else {
                    return;
                };
                let node = &nodes[next.fetch_add(1, Ordering::Relaxed) % nodes.len()];
                let body = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                bucket.take().await;
                if let Err(e) = api
                    .create_subresource::<Value, Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &body,
                    )
                    .await
                {
                    eprintln!("trivial binder: binding {ns}/{name}: {e}");
                }
            }
        }));
    }
    let api: Api<Pod> = Api::all(client);
    let cfg =
        watcher::Config::default().fields(&format!("spec.schedulerName={BINDER},spec.nodeName="));
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut stream = watcher(api, cfg).boxed();
    while let Some(ev) = stream.next().await {
        let p = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        let key = (
            p.metadata.namespace.unwrap_or_default(),
            p.metadata.name.unwrap_or_default(),
        );
        if seen.insert(key.clone()) && tx.send(key).is_err() {
            break;
        }
    }
    drop(tx);
    for w in workers {
        w.abort();
    }
}

/// `scheduler_scheduling_attempt_duration_seconds` buckets (upper bound, cumulative count),
/// summed over every result and profile.
pub type Buckets = Vec<(f64, f64)>;

async fn scrape(port: u16, token: &str) -> Result<Buckets> {
    let (status, body) = testing::get_secure(port, "/metrics", Some(token)).await?;
    if status != 200 {
        bail!("GET /metrics: {status}");
    }
    Ok(attempt_buckets(&body))
}

/// Parses the attempt-duration histogram's buckets out of a Prometheus text exposition.
pub fn attempt_buckets(text: &str) -> Buckets {
    let mut by_le: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("scheduler_scheduling_attempt_duration_seconds_bucket{")
        else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some(le) = labels
            .split(',')
            .find_map(|kv| kv.trim().strip_prefix("le=\""))
            .map(|v| v.trim_end_matches('"'))
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        let Some(count) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        by_le.entry(le.to_string()).or_insert((bound, 0.0)).1 += count;
    }
    let mut out: Buckets = by_le.into_values().collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// `after - before`, bucket by bucket (the measured phase only).
pub fn delta(before: &Buckets, after: &Buckets) -> Buckets {
    after
        .iter()
        .map(|(le, c)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, (c - was).max(0.0))
        })
        .collect()
}

/// Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank;
/// the +Inf bucket answers with the largest finite bound. None without observations.
pub fn quantile(q: f64, buckets: &Buckets) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for (le, count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(prev_bound);
            }
            if *count == prev_count {
                return Some(*le);
            }
            return Some(
                prev_bound + (le - prev_bound) * (rank - prev_count) / (count - prev_count),
            );
        }
        prev_bound = *le;
        prev_count = *count;
    }
    Some(prev_bound)
}

/// p50 and p90 of per-second throughput from `(seconds, cumulative bound)` samples taken each
/// second (the last interval may be shorter and is scaled to a rate); the seconds before the
/// first pod was bound are left out, and intervals under 100 ms are too short to be a rate.
pub fn throughput_percentiles(samples: &[(f64, usize)]) -> (f64, f64) {
    let (mut last_t, mut last_c) = (0.0, 0usize);
    let mut rates: Vec<f64> = Vec::new();
    for (t, c) in samples {
        let dt = t - last_t;
        if dt < 0.1 {
            continue;
        }
        let d = c.saturating_sub(last_c);
        if !(rates.is_empty() && d == 0) {
            rates.push(d as f64 / dt);
        }
        (last_t, last_c) = (*t, *c);
    }
    if rates.is_empty() {
        return (0.0, 0.0);
    }
    rates.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((q * rates.len() as f64).ceil() as usize).clamp(1, rates.len()) - 1;
        rates[i]
    };
    (at(0.5), at(0.9))
}

fn print_table(
    w: Workload,
    s: Shape,
    b: &SchedulerBench,
    stock: &Figures,
    ferrite: &Figures,
    ceiling: &Figures,
) {
    println!(
        "\nScheduler, workload {}: {} init + {} measured pods on {} kwok nodes (scheduler client \
         QPS {}/burst {}; {} creators at {} pods/s):",
        w.name(),
        s.init,
        s.measure,
        b.nodes,
        b.qps,
        b.burst,
        b.creators,
        if b.create_qps > 0.0 {
            format!("{}", b.create_qps)
        } else {
            "unlimited".into()
        },
    );
    println!(
        "{:<34} {:>16} {:>16} {:>14}",
        "", "stock", "ferrite", "ferrite/stock"
    );
    let cell = |f: &Figures, v: Option<f64>, unit: &str| -> String {
        if let Some(e) = &f.error {
            return if e.starts_with("did not finish") {
                "did not finish".into()
            } else {
                "failed".into()
            };
        }
        if !f.finished {
            return "did not finish".into();
        }
        match v {
            Some(v) => format!("{v:.1}{unit}"),
            None => "-".into(),
        }
    };
    let ok = |f: &Figures| f.error.is_none() && f.finished;
    let row = |name: &str, sv: Option<f64>, fv: Option<f64>, unit: &str| {
        let ratio = match (sv, fv) {
            (Some(s), Some(f)) if ok(stock) && ok(ferrite) && s > 0.0 => format!("{:.2}", f / s),
            _ => "-".into(),
        };
        println!(
            "{name:<34} {:>16} {:>16} {ratio:>14}",
            cell(stock, sv, unit),
            cell(ferrite, fv, unit)
        );
    };
    row(
        "throughput average",
        Some(stock.average),
        Some(ferrite.average),
        " pods/s",
    );
    row(
        "throughput p50",
        Some(stock.p50),
        Some(ferrite.p50),
        " pods/s",
    );
    row(
        "throughput p90",
        Some(stock.p90),
        Some(ferrite.p90),
        " pods/s",
    );
    row(
        "attempt latency p99",
        stock.attempt_p99.map(|v| v * 1000.0),
        ferrite.attempt_p99.map(|v| v * 1000.0),
        " ms",
    );
    row(
        "time until all bound",
        Some(stock.elapsed.as_secs_f64()),
        Some(ferrite.elapsed.as_secs_f64()),
        " s",
    );
    row(
        "scheduler CPU-seconds",
        stock.stats.map(|s| s.cpu_seconds),
        ferrite.stats.map(|s| s.cpu_seconds),
        " s",
    );
    row(
        "scheduler peak RSS",
        stock.stats.map(|s| s.peak_rss_bytes as f64 / 1048576.0),
        ferrite.stats.map(|s| s.peak_rss_bytes as f64 / 1048576.0),
        " Mi",
    );
    for (name, f) in [("stock", stock), ("ferrite", ferrite)] {
        if !f.finished && f.error.is_none() {
            println!(
                "{name}: did not finish: {}/{} measured pods bound after {:.0}s",
                f.bound,
                s.measure,
                f.elapsed.as_secs_f64()
            );
        }
        if let Some(e) = &f.error {
            println!("{name}: {e}");
        }
    }
    if ok(ceiling) {
        let vs = |f: &Figures| {
            if ok(f) && ceiling.average > 0.0 {
                format!("{:.2}", f.average / ceiling.average)
            } else {
                "-".into()
            }
        };
        println!(
            "ceiling (trivial binder): {:.1} pods/s average, p50 {:.1}, p90 {:.1}; \
             stock/ceiling {}, ferrite/ceiling {}",
            ceiling.average,
            ceiling.p50,
            ceiling.p90,
            vs(stock),
            vs(ferrite)
        );
    } else {
        println!(
            "ceiling (trivial binder): did not finish{}",
            ceiling
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    for (name, f) in [("stock", stock), ("ferrite", ferrite)] {
        match &f.validity {
            None => {}
            Some(Ok(v)) if v.is_empty() => println!("validity ({name}): ok"),
            Some(Ok(v)) => {
                println!("validity ({name}): {} violations", v.len());
                for x in v.iter().take(20) {
                    println!("  {x}");
                }
                if v.len() > 20 {
                    println!("  … and {} more", v.len() - 20);
                }
            }
            Some(Err(e)) => println!("validity ({name}): could not check: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_histogram_is_summed_over_results_and_profiles() {
        let text = "\
# TYPE scheduler_scheduling_attempt_duration_seconds histogram
scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"0.001\"} 3
scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"+Inf\"} 5
scheduler_scheduling_attempt_duration_seconds_bucket{result=\"unschedulable\",profile=\"default-scheduler\",le=\"0.001\"} 1
scheduler_scheduling_attempt_duration_seconds_bucket{result=\"unschedulable\",profile=\"default-scheduler\",le=\"+Inf\"} 2
scheduler_scheduling_attempt_duration_seconds_sum{profile=\"default-scheduler\",result=\"scheduled\"} 0.5
";
        assert_eq!(
            attempt_buckets(text),
            vec![(0.001, 4.0), (f64::INFINITY, 7.0)]
        );
    }

    #[test]
    fn the_p99_interpolates_inside_its_bucket_like_histogram_quantile() {
        let b = vec![(0.01, 50.0), (0.02, 100.0), (f64::INFINITY, 100.0)];
        let p = quantile(0.99, &b).unwrap();
        assert!((p - 0.0198).abs() < 1e-9, "{p}");
        assert_eq!(quantile(0.5, &b), Some(0.01));
    }

    #[test]
    fn a_rank_in_the_inf_bucket_answers_the_largest_finite_bound() {
        let b = vec![(0.01, 1.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.99, &b), Some(0.01));
        assert_eq!(quantile(0.99, &vec![(f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn only_the_measured_phase_counts_in_the_histogram_delta() {
        let before = vec![(0.01, 10.0), (f64::INFINITY, 20.0)];
        let after = vec![(0.01, 15.0), (f64::INFINITY, 40.0)];
        assert_eq!(
            delta(&before, &after),
            vec![(0.01, 5.0), (f64::INFINITY, 20.0)]
        );
    }

    #[test]
    fn throughput_percentiles_skip_the_seconds_before_the_first_binding() {
        // Per second: 0, 0, 10, 20, 30, 40.
        let s: Vec<(f64, usize)> = [0, 0, 10, 30, 60, 100]
            .into_iter()
            .enumerate()
            .map(|(i, c)| ((i + 1) as f64, c))
            .collect();
        assert_eq!(throughput_percentiles(&s), (20.0, 40.0));
        assert_eq!(throughput_percentiles(&[]), (0.0, 0.0));
    }

    #[test]
    fn a_run_shorter_than_a_second_has_its_partial_interval_as_the_rate() {
        assert_eq!(throughput_percentiles(&[(0.5, 20)]), (40.0, 40.0));
        // A final sample a few milliseconds after the last tick is no rate of its own.
        assert_eq!(
            throughput_percentiles(&[(1.0, 10), (2.0, 30), (2.01, 31)]),
            (10.0, 20.0)
        );
    }

    #[test]
    fn anti_affinity_groups_hold_as_many_pods_as_there_are_nodes() {
        let ns = Namespaces {
            init: "a".into(),
            measure: "b".into(),
        };
        let color = |i| {
            pod_for(Workload::AntiAffinity, true, i, 10, &ns, "s")["metadata"]["labels"]["color"]
                .clone()
        };
        assert_eq!(color(0), color(9));
        assert_ne!(color(9), color(10));
    }

    #[test]
    fn preemption_fills_four_low_priority_pods_per_node_and_caps_preemptors_at_the_nodes() {
        let b = SchedulerBench {
            nodes: 20,
            init_pods: 1,
            measure_pods: 200,
            workload: Workload::Preemption,
            creators: 1,
            create_qps: 0.0,
            qps: 50.0,
            burst: 100,
            timeout: Duration::from_secs(1),
        };
        let s = shape(Workload::Preemption, &b);
        assert_eq!((s.init, s.measure), (80, 20));
    }
}
