//! Benchmark scenarios behind the `bench` binary (src/bin/bench.rs). Each runs the stock component
//! and Ferrite's on fresh beds of the same shape, one after the other, and prints a [`Table`].

pub mod gc;
pub mod job;
pub mod scheduler;

use crate::measure::ProcessStats;

/// The side-by-side table every scenario prints: one row per figure, stock, Ferrite and their
/// ratio.
pub struct Table {
    title: String,
    rows: Vec<(String, f64, f64, &'static str)>,
}

impl Table {
    pub fn new(title: impl Into<String>) -> Self {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn seconds(mut self, name: &str, stock: f64, ferrite: f64) -> Self {
        self.rows.push((name.into(), stock, ferrite, " s"));
        self
    }

    /// CPU-seconds and peak RSS of the measured process.
    pub fn process(mut self, name: &str, stock: ProcessStats, ferrite: ProcessStats) -> Self {
        self.rows.push((
            format!("{name} CPU-seconds"),
            stock.cpu_seconds,
            ferrite.cpu_seconds,
            " s",
        ));
        self.rows.push((
            format!("{name} peak RSS"),
            stock.peak_rss_bytes as f64 / 1048576.0,
            ferrite.peak_rss_bytes as f64 / 1048576.0,
            "Mi",
        ));
        self
    }

    pub fn print(&self) {
        println!("\n{}:", self.title);
        println!(
            "{:<34} {:>14} {:>14} {:>16}",
            "", "stock", "ferrite", "ferrite/stock"
        );
        for (name, s, f, unit) in &self.rows {
            let ratio = if *s > 0.0 { f / s } else { f64::NAN };
            println!("{name:<34} {s:>12.1}{unit} {f:>12.1}{unit} {ratio:>16.2}");
        }
    }
}
