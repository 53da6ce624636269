//! Ferrite's controllers — one module per kube-controller-manager controller — and the manager
//! that runs the enabled ones.

pub mod cache;
pub mod clusterrole_aggregation;
pub mod configuration;
pub mod cronjob;
pub mod deployment;
pub mod garbage_collector;
pub mod job;
pub mod manager;
pub mod names;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pod_util;
pub mod podgc;
pub mod pods_by_node;
pub mod replicaset;
pub mod root_ca_publisher;
pub mod serviceaccount;
pub mod taint_eviction;
pub mod ttl_after_finished;
