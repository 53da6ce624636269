//! Garbage-collector benchmark. Filled in by its scenario.
