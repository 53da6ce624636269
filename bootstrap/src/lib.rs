//! Everything `ferrite bootstrap` needs to bring a self-hosted control plane up on a local node:
//! PKI and kubeconfigs in kubeadm's layout (`certs`), the etcd and kube-apiserver static pods
//! (`manifests`), the node's containerd / CNI / kubelet configuration (`node_config`), locally
//! built images (`images`), the host side (`host`), the pivot into Ferrite's own Deployments
//! (`pivot`), and `up` / `recover` / `down` over all of it (`node`). The test bed uses the same
//! PKI and kubeconfig code, so both exercise one implementation.

pub mod certs;
pub mod host;
pub mod images;
pub mod kubeconfig;
pub mod manifests;
pub mod node;
pub mod node_config;
pub mod pivot;
pub mod pki;
pub mod stock;
