//! Ferrite scheduler.
