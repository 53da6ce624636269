//! Job benchmark (issue: Job controller). Filled in by its scenario.
