//! Leader election on the stock apiserver: client-go semantics (Lease, 15 s / 10 s / 2 s), seen
//! from outside through each candidate's `leader_election_master_status` metric and the Lease.

use std::time::{Duration, Instant};

use ferrite_e2e::bed::Bed;
use ferrite_e2e::testing::{
    self, PrivateBed, eventually, get_secure, master_status, metrics_reader_token, shared_bed,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

const LEASE_DURATION: f64 = 15.0;
const RETRY_PERIOD: f64 = 2.0;
const JITTER: f64 = 1.2;

async fn bed() -> &'static Bed {
    shared_bed(|o| o).await
}

struct Candidate {
    name: String,
    port: u16,
}

/// Starts `n` Ferrite schedulers competing for `lease`.
fn candidates(bed: &Bed, lease: &str, n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let name = format!("{lease}-{i}");
            let port = bed
                .start_ferrite(
                    &name,
                    "scheduler",
                    &[&format!("--leader-elect-resource-name={lease}")],
                )
                .expect("start candidate");
            Candidate { name, port }
        })
        .collect()
}

/// Each candidate's view: Some(true) leading, Some(false) standby, None unreachable.
async fn statuses(cands: &[Candidate], lease: &str, token: &str) -> Vec<Option<bool>> {
    let mut out = Vec::new();
    for c in cands {
        let s = match get_secure(c.port, "/metrics", Some(token)).await {
            Ok((200, body)) => master_status(&body, lease),
            _ => None,
        };
        out.push(s);
    }
    out
}

async fn wait_single_leader(cands: &[Candidate], lease: &str, token: &str) -> usize {
    eventually(
        "one leader",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let s = statuses(cands, lease, token).await;
            let leaders: Vec<usize> = s
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == Some(true))
                .map(|(i, _)| i)
                .collect();
            (leaders.len() == 1 && s.iter().all(Option::is_some)).then(|| leaders[0])
        },
    )
    .await
    .expect("a leader emerges")
}

async fn token(bed: &Bed, prefix: &str) -> String {
    let client = bed.client().await.expect("client");
    let ns = testing::namespace(&client, prefix)
        .await
        .expect("namespace");
    metrics_reader_token(&client, &ns).await.expect("token")
}

async fn holder(bed: &Bed, lease: &str) -> Option<String> {
    let client = bed.client().await.ok()?;
    let l = Api::<Lease>::namespaced(client, "kube-system")
        .get_opt(lease)
        .await
        .ok()??;
    l.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test]
async fn three_candidates_have_exactly_one_leader_at_every_observation_for_a_minute() {
    let bed = bed().await;
    let lease = "le-three";
    let token = token(bed, "le-three").await;
    let cands = candidates(bed, lease, 3);
    let first = wait_single_leader(&cands, lease, &token).await;
    let until = Instant::now() + Duration::from_secs(60);
    let mut observations = 0;
    while Instant::now() < until {
        let s = statuses(&cands, lease, &token).await;
        let leaders = s.iter().filter(|v| **v == Some(true)).count();
        assert!(
            s.iter().all(Option::is_some),
            "observation {observations}: a candidate did not answer: {s:?}"
        );
        assert_eq!(leaders, 1, "observation {observations}: {s:?}");
        assert_eq!(
            s[first],
            Some(true),
            "leadership moved without a failure: {s:?}"
        );
        observations += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{observations} observations, always exactly one leader");
    assert!(observations > 100);
    for c in &cands {
        bed.stop_process(&c.name, Duration::from_secs(10));
    }
}

#[tokio::test]
async fn killing_the_leader_hands_the_lease_to_a_standby_within_the_lease_duration_plus_retry() {
    let bed = bed().await;
    let lease = "le-kill";
    let token = token(bed, "le-kill").await;
    let cands = candidates(bed, lease, 3);
    let leader = wait_single_leader(&cands, lease, &token).await;
    let old_holder = holder(bed, lease).await.expect("lease held");
    assert!(bed.signal(&cands[leader].name, libc::SIGKILL));
    let killed = Instant::now();
    let rest: Vec<Candidate> = cands
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, c)| Candidate {
            name: c.name.clone(),
            port: c.port,
        })
        .collect();
    eventually(
        "a standby leads",
        Duration::from_secs(40),
        Duration::from_millis(100),
        || async {
            let s = statuses(&rest, lease, &token).await;
            (s.iter().filter(|v| **v == Some(true)).count() == 1).then_some(())
        },
    )
    .await
    .expect("takeover");
    let took = killed.elapsed().as_secs_f64();
    let new_holder = holder(bed, lease).await.expect("lease held");
    eprintln!("takeover after SIGKILL: {took:.1}s");
    assert_ne!(new_holder, old_holder);
    // A standby takes over at its first retry after lease-duration has passed since it last saw
    // the record change; it may have seen the dead leader's last renewal up to one (jittered)
    // retry period after it happened.
    let bound = LEASE_DURATION + 2.0 * RETRY_PERIOD * JITTER + 1.0;
    assert!(
        took >= LEASE_DURATION - RETRY_PERIOD * JITTER,
        "took over before the lease could expire: {took:.1}s"
    );
    assert!(took <= bound, "takeover took {took:.1}s (bound {bound}s)");
    for c in &cands {
        bed.stop_process(&c.name, Duration::from_secs(10));
    }
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_a_standby_leads_within_two_retry_periods() {
    let bed = bed().await;
    let lease = "le-term";
    let token = token(bed, "le-term").await;
    let cands = candidates(bed, lease, 3);
    let leader = wait_single_leader(&cands, lease, &token).await;
    assert!(bed.signal(&cands[leader].name, libc::SIGTERM));
    let termed = Instant::now();
    let rest: Vec<Candidate> = cands
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, c)| Candidate {
            name: c.name.clone(),
            port: c.port,
        })
        .collect();
    eventually(
        "a standby leads",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let s = statuses(&rest, lease, &token).await;
            (s.iter().filter(|v| **v == Some(true)).count() == 1).then_some(())
        },
    )
    .await
    .expect("takeover");
    let took = termed.elapsed().as_secs_f64();
    eprintln!("takeover after SIGTERM: {took:.1}s");
    assert!(
        took <= 2.0 * RETRY_PERIOD * JITTER + 0.5,
        "takeover took {took:.1}s"
    );
    let code = eventually(
        "the old leader exits",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async { bed.exit_code(&cands[leader].name) },
    )
    .await
    .expect("exit");
    assert_eq!(code, 0, "a clean shutdown exits 0");
    for c in &cands {
        bed.stop_process(&c.name, Duration::from_secs(10));
    }
}

#[tokio::test]
async fn a_stock_kube_scheduler_sharing_the_lease_stays_standby_and_takes_over_when_ferrite_stops()
{
    let bed = bed().await;
    let client = bed.client().await.expect("client");
    let token = token(bed, "le-stock").await;
    let ferrite = candidates(bed, "kube-scheduler", 1);
    wait_single_leader(&ferrite, "kube-scheduler", &token).await;
    let ferrite_id = holder(bed, "kube-scheduler")
        .await
        .expect("held by ferrite");
    let stock_port = bed
        .start_stock("stock-scheduler", "kube-scheduler", &[])
        .expect("start stock scheduler");
    let stock_status = |token: String| async move {
        match get_secure(stock_port, "/metrics", Some(&token)).await {
            Ok((200, body)) => master_status(&body, "kube-scheduler"),
            _ => None,
        }
    };
    eventually(
        "the stock scheduler serves its metrics as a standby",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let status = stock_status(token.clone());
            async move { (status.await == Some(false)).then_some(()) }
        },
    )
    .await
    .expect("stock scheduler up");

    // Well past a lease duration: the stock scheduler keeps waiting while Ferrite leads, as
    // both its own metric and the Lease show.
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        assert_eq!(
            holder(bed, "kube-scheduler").await.as_deref(),
            Some(ferrite_id.as_str()),
            "the stock scheduler took the lease"
        );
        assert_eq!(
            stock_status(token.clone()).await,
            Some(false),
            "the stock scheduler leads"
        );
        assert_eq!(
            statuses(&ferrite, "kube-scheduler", &token).await,
            vec![Some(true)],
            "Ferrite stopped leading"
        );
        assert!(
            bed.is_running("stock-scheduler"),
            "the stock scheduler exited"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    bed.stop_process(&ferrite[0].name, Duration::from_secs(15));
    let stopped = Instant::now();
    let stock_id = eventually(
        "the stock scheduler leads",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            holder(bed, "kube-scheduler")
                .await
                .filter(|h| *h != ferrite_id)
        },
    )
    .await
    .expect("stock takes over");
    eprintln!(
        "stock kube-scheduler took over {:.1}s after Ferrite stopped ({stock_id})",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(
        stock_status(token.clone()).await,
        Some(true),
        "the stock scheduler reports leading"
    );

    // Ferrite is gone; only the stock scheduler can bind this pod now.
    let ns = testing::namespace(&client, "le-stock-pods")
        .await
        .expect("ns");
    testing::ensure_default_service_account(&client, &ns)
        .await
        .expect("sa");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "waits-for-a-scheduler"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/app"}]}
    }))
    .expect("pod");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let node = eventually(
        "the pod is bound",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            pods.get("waits-for-a-scheduler")
                .await
                .ok()?
                .spec?
                .node_name
        },
    )
    .await
    .expect("stock binds the pod");
    assert!(node.starts_with("kwok-node-"));
    bed.stop_process("stock-scheduler", Duration::from_secs(10));
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_past_the_renew_deadline_stops_and_exits_non_zero() {
    let bed = PrivateBed::start(|o| o).await.expect("private bed");
    let lease = "le-cutoff";
    let port = bed
        .start_ferrite(
            "cutoff",
            "controller-manager",
            &[&format!("--leader-elect-resource-name={lease}")],
        )
        .expect("start");
    eventually(
        "ferrite leads",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || holder(&bed, lease),
    )
    .await
    .expect("leader");
    // Acting: its controllers started and their caches synced (/readyz), so what the cut-off
    // interrupts is a running leader, not its start-up.
    eventually(
        "ferrite is ready",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { matches!(get_secure(port, "/readyz", None).await, Ok((200, _))).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; {}", bed.log_tail("cutoff")));
    let cut = Instant::now();
    bed.kill_apiserver();
    let code = eventually(
        "the leader exits",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { bed.exit_code("cutoff") },
    )
    .await
    .expect("the cut-off leader exits");
    let after = cut.elapsed().as_secs_f64();
    eprintln!("leader exited {after:.1}s after the apiserver stopped, code {code}");
    assert_ne!(code, 0);
    // It rides out outages shorter than the renew deadline (10 s) before giving up.
    assert!(
        after >= 8.0,
        "gave up after only {after:.1}s; {}",
        bed.log_tail("cutoff")
    );
}
