//! Ferrite's controllers — one module per kube-controller-manager controller — and the manager
//! that runs the enabled ones.

pub mod manager;
pub mod names;
