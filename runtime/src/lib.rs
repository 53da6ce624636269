//! Process plumbing shared by `ferrite controller-manager` and `ferrite scheduler`: the things
//! kube-controller-manager and kube-scheduler get from client-go and component-base.

pub mod client;
pub mod component;
pub mod credentials;
pub mod events;
pub mod expectations;
pub mod flags;
pub mod informer;
pub mod leader_election;
pub mod live_config;
pub mod metrics;
pub mod serving;
pub mod shutdown;
pub mod workqueue;
