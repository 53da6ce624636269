//! The local node's configuration files: containerd's, the CNI network's and the kubelet's. All
//! state they name lives under the node's directory, except what the kubelet and the CNI plugins
//! insist on keeping on the host (see `host::teardown`).

use std::path::{Path, PathBuf};

use serde_json::json;

/// Where everything of one node lives, relative to its state directory.
#[derive(Clone, Debug)]
pub struct NodePaths {
    pub root: PathBuf,
}

impl NodePaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NodePaths { root: root.into() }
    }
    pub fn join(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    pub fn pki(&self) -> PathBuf {
        self.join("pki")
    }
    pub fn manifests(&self) -> PathBuf {
        self.join("manifests")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.join("etcd")
    }
    pub fn containerd_dir(&self) -> PathBuf {
        self.join("containerd")
    }
    pub fn containerd_config(&self) -> PathBuf {
        self.join("containerd/config.toml")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.join("containerd/containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.join("cni/net.d")
    }
    pub fn kubelet_dir(&self) -> PathBuf {
        self.join("kubelet")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.join("kubelet/config.yaml")
    }
    pub fn logs(&self) -> PathBuf {
        self.join("logs")
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.join("admin.conf")
    }
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub paths: NodePaths,
    pub node_name: String,
    /// The sandbox ("pause") image every pod starts with.
    pub sandbox_image: String,
    pub runc: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// The pod subnet of this node (host-local IPAM).
    pub pod_subnet: String,
    /// The Linux bridge the pods are attached to.
    pub bridge: String,
    pub cluster_dns: String,
    pub dns_domain: String,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// containerd 2.x (config version 3): its root, state, sockets, shim sockets and runc state all
/// under the node's directory; the CRI plugin with the local sandbox image pinned, runc with the
/// cgroupfs driver (the kubelet's), and the node's own CNI configuration directory.
pub fn containerd_toml(c: &NodeConfig) -> String {
    let d = c.paths.containerd_dir();
    let value = json!({
        "version": 3,
        "root": s(&d.join("root")),
        "state": s(&d.join("state")),
        // NRI opens a socket under /var/run/nri; nothing here uses it.
        "disabled_plugins": ["io.containerd.nri.v1.nri"],
        "grpc": { "address": s(&c.paths.containerd_socket()) },
        "ttrpc": { "address": format!("{}.ttrpc", s(&c.paths.containerd_socket())) },
        "plugins": {
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                "pinned_images": { "sandbox": c.sandbox_image },
            },
            "io.containerd.cri.v1.runtime": {
                // Containers may not lower their oom_score_adj below the runtime's: without
                // CAP_SYS_RESOURCE (as in unprivileged VMs and containers) runc otherwise fails
                // every sandbox with "can't get final child's PID from pipe".
                "restrict_oom_score_adj": true,
                // Pod network namespaces under the state directory, not /run/netns.
                "netns_mounts_under_state_dir": true,
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": { "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "options": {
                            "BinaryName": s(&c.runc),
                            "Root": s(&d.join("runc")),
                            // The kubelet's cgroup driver is cgroupfs: both must agree.
                            "SystemdCgroup": false,
                        },
                    }},
                },
                "cni": {
                    "bin_dirs": [s(&c.cni_bin_dir)],
                    "conf_dir": s(&c.paths.cni_conf_dir()),
                },
            },
            "io.containerd.shim.v1.manager": { "socket_dir": s(&d.join("s")) },
            "io.containerd.internal.v1.opt": { "path": s(&d.join("opt")) },
        },
    });
    // A JSON object of strings, numbers, booleans and tables always renders as TOML.
    toml::to_string(&value).unwrap_or_default()
}

/// The node's pod network: a bridge with host-local addresses from the pod subnet (kept under
/// the node's directory) and portmap for hostPort. Each pod's `lo` is brought up by containerd's
/// CRI plugin itself, with the loopback plugin from the same plugin directory.
pub fn cni_conflist(c: &NodeConfig) -> String {
    let value = json!({
        "cniVersion": "1.0.0",
        "name": "ferrite",
        "plugins": [
            {
                "type": "bridge",
                "bridge": c.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": s(&c.paths.join("cni/ipam")),
                    "ranges": [[{ "subnet": c.pod_subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// The kubelet's KubeletConfiguration. Deliberate choices for a local node:
/// `failCgroupV1: false` (1.35+ refuses cgroup v1 otherwise), cgroupfs as containerd,
/// `failSwapOn: false`, `syncFrequency: 10s` (mirror pods otherwise wait up to a minute after
/// their priority class appears), image GC off (the images cannot be pulled again), and the
/// eviction thresholds low enough not to evict the control plane on a small disk.
pub fn kubelet_config(c: &NodeConfig) -> String {
    let k = c.paths.kubelet_dir();
    let value = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": format!("unix://{}", s(&c.paths.containerd_socket())),
        "staticPodPath": s(&c.paths.manifests()),
        "fileCheckFrequency": "5s",
        "syncFrequency": "10s",
        "failSwapOn": false,
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": s(&k.join("pod-logs")),
        "address": "0.0.0.0",
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": s(&c.paths.pki().join("ca.crt")) },
        },
        "authorization": { "mode": "Webhook" },
        "clusterDomain": c.dns_domain,
        "clusterDNS": [c.cluster_dns],
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
    });
    serde_yaml::to_string(&value).unwrap_or_default()
}

/// The kubelet's command-line flags (everything else is in its config file).
pub fn kubelet_args(c: &NodeConfig, node_ip: &str) -> Vec<String> {
    let k = c.paths.kubelet_dir();
    vec![
        format!("--config={}", s(&c.paths.kubelet_config())),
        format!("--kubeconfig={}", s(&c.paths.join("kubelet.conf"))),
        format!("--root-dir={}", s(&k.join("root"))),
        format!("--cert-dir={}", s(&k.join("pki"))),
        format!("--hostname-override={}", c.node_name),
        format!("--node-ip={node_ip}"),
        "--v=2".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig {
            paths: NodePaths::new("/state"),
            node_name: "node-a".into(),
            sandbox_image: "localhost/pause:abc".into(),
            runc: "/usr/sbin/runc".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            pod_subnet: "10.244.0.0/24".into(),
            bridge: "ferrite0".into(),
            cluster_dns: "10.96.0.10".into(),
            dns_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn containerd_restricts_oom_score_adj_uses_cgroupfs_and_pins_the_local_sandbox() {
        let doc: toml::Table = toml::from_str(&containerd_toml(&config())).expect("toml");
        assert_eq!(doc["version"].as_integer(), Some(3));
        let runtime = &doc["plugins"]["io.containerd.cri.v1.runtime"];
        assert_eq!(runtime["restrict_oom_score_adj"].as_bool(), Some(true));
        let runc = &runtime["containerd"]["runtimes"]["runc"]["options"];
        assert_eq!(runc["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(runc["BinaryName"].as_str(), Some("/usr/sbin/runc"));
        assert_eq!(
            doc["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
            Some("localhost/pause:abc")
        );
        assert_eq!(
            runtime["cni"]["conf_dir"].as_str(),
            Some("/state/cni/net.d")
        );
    }

    #[test]
    fn containerd_keeps_its_state_and_sockets_under_the_node_directory() {
        let doc: toml::Table = toml::from_str(&containerd_toml(&config())).expect("toml");
        for v in [
            &doc["root"],
            &doc["state"],
            &doc["grpc"]["address"],
            &doc["ttrpc"]["address"],
            &doc["plugins"]["io.containerd.shim.v1.manager"]["socket_dir"],
            &doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]["options"]
                ["Root"],
        ] {
            assert!(v.as_str().unwrap_or("").starts_with("/state/"), "{v}");
        }
    }

    #[test]
    fn the_pod_network_is_a_bridge_over_the_private_subnet_with_portmap() {
        let v: serde_json::Value = serde_json::from_str(&cni_conflist(&config())).expect("json");
        let plugins = v["plugins"].as_array().expect("plugins");
        let types: Vec<&str> = plugins.iter().filter_map(|p| p["type"].as_str()).collect();
        assert_eq!(types, ["bridge", "portmap"]);
        assert_eq!(plugins[0]["bridge"], "ferrite0");
        assert_eq!(plugins[0]["ipam"]["type"], "host-local");
        assert_eq!(
            plugins[0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.0.0/24"
        );
        assert_eq!(plugins[0]["ipam"]["dataDir"], "/state/cni/ipam");
    }

    #[test]
    fn the_kubelet_runs_on_cgroup_v1_with_cgroupfs_and_reads_the_static_pods() {
        let v: serde_yaml::Value = serde_yaml::from_str(&kubelet_config(&config())).expect("yaml");
        assert_eq!(v["failCgroupV1"].as_bool(), Some(false));
        assert_eq!(v["cgroupDriver"].as_str(), Some("cgroupfs"));
        assert_eq!(v["failSwapOn"].as_bool(), Some(false));
        assert_eq!(v["staticPodPath"].as_str(), Some("/state/manifests"));
        assert_eq!(
            v["containerRuntimeEndpoint"].as_str(),
            Some("unix:///state/containerd/containerd.sock")
        );
        assert_eq!(
            v["authentication"]["anonymous"]["enabled"].as_bool(),
            Some(false)
        );
        assert_eq!(v["authorization"]["mode"].as_str(), Some("Webhook"));
    }

    #[test]
    fn the_kubelet_keeps_its_state_under_the_node_directory() {
        let args = kubelet_args(&config(), "192.0.2.10");
        assert!(args.contains(&"--root-dir=/state/kubelet/root".to_string()));
        assert!(args.contains(&"--cert-dir=/state/kubelet/pki".to_string()));
        assert!(args.contains(&"--kubeconfig=/state/kubelet.conf".to_string()));
        assert!(args.contains(&"--node-ip=192.0.2.10".to_string()));
    }
}
