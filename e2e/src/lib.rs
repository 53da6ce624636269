//! Ferrite's test bed and the helpers every integration test, scenario and benchmark shares.
//!
//! `testbed up|down` (src/bin/testbed.rs) drives [`bed::Bed`] for people and scripts; tests use
//! [`testing`], which starts one bed per test binary and hands each test a fresh namespace.

pub mod bed;
pub mod bench;
pub mod local_node;
pub mod measure;
pub mod process;
pub mod stock;
pub mod testing;
pub mod validity;

pub use bed::{Bed, BedOptions, Component};
