//! Static pod manifests for etcd and kube-apiserver, as kubeadm writes them
//! (kubernetes/kubernetes cmd/kubeadm/app/phases/controlplane/manifests.go,
//! phases/etcd/local.go, util/staticpod): the same flags, probes, priority and labels, with the
//! node's state directory in place of /etc/kubernetes and /var/lib/etcd on the host. Inside the
//! containers the paths are kubeadm's.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HTTPGetAction, HostPathVolumeSource, Pod, PodSecurityContext,
    PodSpec, Probe, ResourceRequirements, SeccompProfile, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Where the certificates are inside the control-plane containers (kubeadm's CertificatesDir).
pub const CONTAINER_PKI: &str = "/etc/kubernetes/pki";
/// etcd's data directory inside its container (kubeadm's default).
pub const CONTAINER_ETCD_DATA: &str = "/var/lib/etcd";
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const ETCD_METRICS_PORT: u16 = 2381;
/// system-node-critical's value; kubeadm sets both the class and the number.
const SYSTEM_NODE_CRITICAL: i32 = 2_000_001_000;

#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub apiserver_port: u16,
    pub service_cidr: String,
    pub dns_domain: String,
    /// Host directory holding `pki/` (mounted at /etc/kubernetes/pki).
    pub pki_dir: PathBuf,
    /// Host directory of etcd's data.
    pub etcd_data_dir: PathBuf,
    pub etcd_image: String,
    pub apiserver_image: String,
}

fn url(scheme: &str, ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
    }
}

fn loopback(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    }
}

fn pki(file: &str) -> String {
    format!("{CONTAINER_PKI}/{file}")
}

/// `--name=value` flags in kubeadm's order (sorted by name).
fn flags(mut args: Vec<(&str, String)>) -> Vec<String> {
    args.sort_by(|a, b| a.0.cmp(b.0));
    args.into_iter()
        .map(|(k, v)| format!("--{k}={v}"))
        .collect()
}

/// kube-apiserver's flags (kubeadm's getAPIServerCommand for a local etcd).
pub fn apiserver_args(c: &ControlPlaneConfig) -> Vec<String> {
    let etcd = url("https", loopback(c.node_ip), ETCD_CLIENT_PORT);
    flags(vec![
        ("advertise-address", c.node_ip.to_string()),
        ("allow-privileged", "true".into()),
        ("authorization-mode", "Node,RBAC".into()),
        ("client-ca-file", pki("ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("enable-bootstrap-token-auth", "true".into()),
        ("etcd-cafile", pki("etcd/ca.crt")),
        ("etcd-certfile", pki("apiserver-etcd-client.crt")),
        ("etcd-keyfile", pki("apiserver-etcd-client.key")),
        ("etcd-servers", etcd),
        (
            "kubelet-client-certificate",
            pki("apiserver-kubelet-client.crt"),
        ),
        ("kubelet-client-key", pki("apiserver-kubelet-client.key")),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".into(),
        ),
        ("proxy-client-cert-file", pki("front-proxy-client.crt")),
        ("proxy-client-key-file", pki("front-proxy-client.key")),
        ("requestheader-allowed-names", "front-proxy-client".into()),
        ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".into(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".into()),
        ("requestheader-username-headers", "X-Remote-User".into()),
        ("secure-port", c.apiserver_port.to_string()),
        (
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{}", c.dns_domain),
        ),
        ("service-account-key-file", pki("sa.pub")),
        ("service-account-signing-key-file", pki("sa.key")),
        ("service-cluster-ip-range", c.service_cidr.clone()),
        ("tls-cert-file", pki("apiserver.crt")),
        ("tls-private-key-file", pki("apiserver.key")),
    ])
}

/// etcd's flags (kubeadm's getEtcdCommand for the first member).
pub fn etcd_args(c: &ControlPlaneConfig) -> Vec<String> {
    let client = url("https", c.node_ip, ETCD_CLIENT_PORT);
    let peer = url("https", c.node_ip, ETCD_PEER_PORT);
    let local = url("https", loopback(c.node_ip), ETCD_CLIENT_PORT);
    flags(vec![
        ("name", c.node_name.clone()),
        ("feature-gates", "InitialCorruptCheck=true".into()),
        ("listen-client-urls", format!("{local},{client}")),
        ("advertise-client-urls", client),
        ("listen-peer-urls", peer.clone()),
        ("initial-advertise-peer-urls", peer.clone()),
        ("initial-cluster", format!("{}={peer}", c.node_name)),
        ("data-dir", CONTAINER_ETCD_DATA.into()),
        ("cert-file", pki("etcd/server.crt")),
        ("key-file", pki("etcd/server.key")),
        ("trusted-ca-file", pki("etcd/ca.crt")),
        ("client-cert-auth", "true".into()),
        ("peer-cert-file", pki("etcd/peer.crt")),
        ("peer-key-file", pki("etcd/peer.key")),
        ("peer-trusted-ca-file", pki("etcd/ca.crt")),
        ("peer-client-cert-auth", "true".into()),
        ("snapshot-count", "10000".into()),
        (
            "listen-metrics-urls",
            url("http", loopback(c.node_ip), ETCD_METRICS_PORT),
        ),
        ("watch-progress-notify-interval", "5s".into()),
    ])
}

/// kubeadm's probes (util/staticpod): liveness 10 s delay / 15 s timeout / 8 failures / 10 s
/// period; readiness 0 / 15 / 3 / 1; startup 10 / 15 / 24 failures (the 4-minute control-plane
/// health-check timeout over a 10 s period) / 10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn probe(kind: ProbeKind, host: IpAddr, path: &str, port: u16, https: bool) -> Probe {
    let (delay, timeout, failures, period) = match kind {
        ProbeKind::Liveness => (10, 15, 8, 10),
        ProbeKind::Readiness => (0, 15, 3, 1),
        ProbeKind::Startup => (10, 15, 24, 10),
    };
    Probe {
        http_get: Some(HTTPGetAction {
            host: Some(host.to_string()),
            path: Some(path.to_string()),
            port: IntOrString::Int(port.into()),
            scheme: Some(if https { "HTTPS" } else { "HTTP" }.into()),
            ..Default::default()
        }),
        initial_delay_seconds: (delay > 0).then_some(delay),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        period_seconds: Some(period),
        ..Default::default()
    }
}

fn host_path(name: &str, path: &Path, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.display().to_string(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn requests(pairs: &[(&str, &str)]) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// kubeadm's ComponentPod: kube-system, labels component/tier, host network,
/// system-node-critical, RuntimeDefault seccomp.
fn component_pod(name: &str, container: Container, volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("kube-system".into()),
            labels: Some(BTreeMap::from([
                ("component".to_string(), name.to_string()),
                ("tier".to_string(), "control-plane".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            host_network: Some(true),
            priority_class_name: Some("system-node-critical".into()),
            priority: Some(SYSTEM_NODE_CRITICAL),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

/// The locally built images hold only the binary: the kubelet must never try a registry.
const PULL_POLICY: &str = "Never";

pub fn apiserver_pod(c: &ControlPlaneConfig) -> Pod {
    let mut command = vec!["/usr/local/bin/kube-apiserver".to_string()];
    command.extend(apiserver_args(c));
    let probe_host = c.node_ip;
    let container = Container {
        name: "kube-apiserver".into(),
        image: Some(c.apiserver_image.clone()),
        image_pull_policy: Some(PULL_POLICY.into()),
        command: Some(command),
        liveness_probe: Some(probe(
            ProbeKind::Liveness,
            probe_host,
            "/livez",
            c.apiserver_port,
            true,
        )),
        readiness_probe: Some(probe(
            ProbeKind::Readiness,
            probe_host,
            "/readyz",
            c.apiserver_port,
            true,
        )),
        startup_probe: Some(probe(
            ProbeKind::Startup,
            probe_host,
            "/livez",
            c.apiserver_port,
            true,
        )),
        resources: Some(requests(&[("cpu", "250m")])),
        volume_mounts: Some(vec![
            mount("k8s-certs", CONTAINER_PKI, true),
            // The image is the bare binary (no /tmp); the apiserver writes temporary files.
            mount("tmp", "/tmp", false),
        ]),
        ..Default::default()
    };
    component_pod(
        "kube-apiserver",
        container,
        vec![
            host_path("k8s-certs", &c.pki_dir, "DirectoryOrCreate"),
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ],
    )
}

pub fn etcd_pod(c: &ControlPlaneConfig) -> Pod {
    let mut command = vec!["/usr/local/bin/etcd".to_string()];
    command.extend(etcd_args(c));
    let host = loopback(c.node_ip);
    let container = Container {
        name: "etcd".into(),
        image: Some(c.etcd_image.clone()),
        image_pull_policy: Some(PULL_POLICY.into()),
        command: Some(command),
        liveness_probe: Some(probe(
            ProbeKind::Liveness,
            host,
            "/livez",
            ETCD_METRICS_PORT,
            false,
        )),
        readiness_probe: Some(probe(
            ProbeKind::Readiness,
            host,
            "/readyz",
            ETCD_METRICS_PORT,
            false,
        )),
        startup_probe: Some(probe(
            ProbeKind::Startup,
            host,
            "/readyz",
            ETCD_METRICS_PORT,
            false,
        )),
        resources: Some(requests(&[("cpu", "100m"), ("memory", "100Mi")])),
        volume_mounts: Some(vec![
            mount("etcd-data", CONTAINER_ETCD_DATA, false),
            mount("etcd-certs", &pki("etcd"), false),
        ]),
        ..Default::default()
    };
    component_pod(
        "etcd",
        container,
        vec![
            host_path("etcd-data", &c.etcd_data_dir, "DirectoryOrCreate"),
            host_path("etcd-certs", &c.pki_dir.join("etcd"), "DirectoryOrCreate"),
        ],
    )
}

/// A pod as the YAML the kubelet reads from its staticPodPath.
pub fn to_yaml(pod: &Pod) -> String {
    // A Pod of plain fields always serialises.
    serde_yaml::to_string(pod).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ControlPlaneConfig {
        ControlPlaneConfig {
            node_name: "node-a".into(),
            node_ip: "192.0.2.10".parse().expect("ip"),
            apiserver_port: 6443,
            service_cidr: "10.96.0.0/12".into(),
            dns_domain: "cluster.local".into(),
            pki_dir: "/state/pki".into(),
            etcd_data_dir: "/state/etcd".into(),
            etcd_image: "localhost/etcd:v3.7.3".into(),
            apiserver_image: "localhost/kube-apiserver:v1.37.2".into(),
        }
    }

    fn has(args: &[String], flag: &str) -> bool {
        args.iter().any(|a| a == flag)
    }

    #[test]
    fn the_apiserver_authenticates_to_etcd_with_its_client_certificate() {
        let a = apiserver_args(&config());
        for f in [
            "--etcd-servers=https://127.0.0.1:2379",
            "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt",
            "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt",
            "--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key",
        ] {
            assert!(has(&a, f), "{f} missing from {a:?}");
        }
    }

    #[test]
    fn the_apiserver_authorizes_with_node_and_rbac_and_restricts_nodes() {
        let a = apiserver_args(&config());
        assert!(has(&a, "--authorization-mode=Node,RBAC"));
        assert!(has(&a, "--enable-admission-plugins=NodeRestriction"));
        assert!(has(&a, "--client-ca-file=/etc/kubernetes/pki/ca.crt"));
    }

    #[test]
    fn the_apiserver_signs_and_verifies_service_account_tokens() {
        let a = apiserver_args(&config());
        assert!(has(
            &a,
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local"
        ));
        assert!(has(
            &a,
            "--service-account-key-file=/etc/kubernetes/pki/sa.pub"
        ));
        assert!(has(
            &a,
            "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key"
        ));
        assert!(has(&a, "--service-cluster-ip-range=10.96.0.0/12"));
    }

    #[test]
    fn the_apiserver_has_kubeadms_front_proxy_flags() {
        let a = apiserver_args(&config());
        for f in [
            "--proxy-client-cert-file=/etc/kubernetes/pki/front-proxy-client.crt",
            "--proxy-client-key-file=/etc/kubernetes/pki/front-proxy-client.key",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
        ] {
            assert!(has(&a, f), "{f} missing");
        }
    }

    #[test]
    fn flags_are_sorted_by_name_like_kubeadms() {
        for args in [apiserver_args(&config()), etcd_args(&config())] {
            let mut sorted = args.clone();
            sorted.sort();
            assert_eq!(args, sorted);
        }
    }

    #[test]
    fn etcd_requires_client_certificates_from_clients_and_peers() {
        let a = etcd_args(&config());
        for f in [
            "--client-cert-auth=true",
            "--peer-client-cert-auth=true",
            "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
            "--listen-client-urls=https://127.0.0.1:2379,https://192.0.2.10:2379",
            "--advertise-client-urls=https://192.0.2.10:2379",
            "--initial-cluster=node-a=https://192.0.2.10:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--data-dir=/var/lib/etcd",
        ] {
            assert!(has(&a, f), "{f} missing from {a:?}");
        }
    }

    #[test]
    fn probes_follow_kubeadms_timings_and_endpoints() {
        let pod = apiserver_pod(&config());
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let live = c.liveness_probe.as_ref().expect("liveness");
        let get = live.http_get.as_ref().expect("httpGet");
        assert_eq!(get.path.as_deref(), Some("/livez"));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        assert_eq!(get.host.as_deref(), Some("192.0.2.10"));
        assert_eq!(get.port, IntOrString::Int(6443));
        assert_eq!(
            (
                live.initial_delay_seconds,
                live.timeout_seconds,
                live.failure_threshold,
                live.period_seconds
            ),
            (Some(10), Some(15), Some(8), Some(10))
        );
        let ready = c.readiness_probe.as_ref().expect("readiness");
        assert_eq!(
            ready.http_get.as_ref().and_then(|g| g.path.as_deref()),
            Some("/readyz")
        );
        assert_eq!(ready.period_seconds, Some(1));
        let startup = c.startup_probe.as_ref().expect("startup");
        assert_eq!(startup.failure_threshold, Some(24));

        let etcd = etcd_pod(&config());
        let c = &etcd.spec.as_ref().expect("spec").containers[0];
        let get = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("etcd liveness");
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(get.port, IntOrString::Int(2381));
        assert_eq!(get.scheme.as_deref(), Some("HTTP"));
        assert!(c.readiness_probe.is_some() && c.startup_probe.is_some());
    }

    #[test]
    fn static_pods_are_critical_host_network_control_plane_pods_in_kube_system() {
        for pod in [apiserver_pod(&config()), etcd_pod(&config())] {
            let meta = &pod.metadata;
            assert_eq!(meta.namespace.as_deref(), Some("kube-system"));
            let labels = meta.labels.as_ref().expect("labels");
            assert_eq!(
                labels.get("tier").map(String::as_str),
                Some("control-plane")
            );
            assert_eq!(labels.get("component"), meta.name.as_ref());
            let spec = pod.spec.as_ref().expect("spec");
            assert_eq!(spec.host_network, Some(true));
            assert_eq!(
                spec.priority_class_name.as_deref(),
                Some("system-node-critical")
            );
            let c = &spec.containers[0];
            assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
            // Every mount is backed by a volume of the pod.
            let volumes: Vec<&str> = spec
                .volumes
                .iter()
                .flatten()
                .map(|v| v.name.as_str())
                .collect();
            for m in c.volume_mounts.iter().flatten() {
                assert!(volumes.contains(&m.name.as_str()), "{}", m.name);
            }
        }
    }

    #[test]
    fn host_paths_point_into_the_state_directory() {
        let etcd = etcd_pod(&config());
        let paths: Vec<String> = etcd
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
            .collect();
        assert_eq!(paths, ["/state/etcd", "/state/pki/etcd"]);
    }

    #[test]
    fn manifests_render_as_v1_pod_yaml_that_reads_back() {
        let text = to_yaml(&apiserver_pod(&config()));
        assert!(text.starts_with("apiVersion: v1\nkind: Pod\n"), "{text}");
        let back: Pod = serde_yaml::from_str(&text).expect("parses");
        assert_eq!(back, apiserver_pod(&config()));
        // The flag list with a comma survives as one string.
        assert!(text.contains("--authorization-mode=Node,RBAC"));
    }
}
