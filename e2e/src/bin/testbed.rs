//! `testbed up|down`: a cluster without kubelets for people, scripts and benchmarks.
//!
//! testbed up   [--dir DIR] [--nodes N] [--controller-manager none|stock|ferrite] [--scheduler none|stock|ferrite]
//! testbed down [--dir DIR]

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ferrite_e2e::bed::{self, Bed, BedOptions, Component};
use ferrite_e2e::process::Mode;

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "Stock etcd + kube-apiserver + kwok nodes on loopback, optionally with a controller manager and a scheduler"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a bed and return once it is ready; it keeps running until `testbed down`.
    Up {
        #[arg(long, default_value_os_t = default_dir())]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        #[arg(long, value_enum, default_value_t = Component::None)]
        controller_manager: Component,
        #[arg(long, value_enum, default_value_t = Component::None)]
        scheduler: Component,
        /// Leave kwok's pod-complete stage out (Job pods stay Running until a test finishes them).
        #[arg(long)]
        no_complete_job_pods: bool,
        /// Extra flags for Ferrite components (repeatable), e.g. --ferrite-arg=--controllers=*
        #[arg(long = "ferrite-arg", allow_hyphen_values = true)]
        ferrite_args: Vec<String>,
    },
    /// Stop every process of the bed and remove its directory.
    Down {
        #[arg(long, default_value_os_t = default_dir())]
        dir: PathBuf,
    },
}

fn default_dir() -> PathBuf {
    std::env::temp_dir().join("ferrite-testbed")
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client=off".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up {
            dir,
            nodes,
            controller_manager,
            scheduler,
            no_complete_job_pods,
            ferrite_args,
        } => {
            let started = Instant::now();
            let mut opts = BedOptions::new(std::path::absolute(&dir).unwrap_or(dir));
            opts.nodes = nodes;
            opts.controller_manager = controller_manager;
            opts.scheduler = scheduler;
            opts.complete_job_pods = !no_complete_job_pods;
            opts.ferrite_args = ferrite_args;
            Bed::up(opts, Mode::Detached).await.map(|bed| {
                eprintln!(
                    "test bed up in {:.1}s ({} nodes); logs in {}",
                    started.elapsed().as_secs_f64(),
                    nodes,
                    bed.dir.join("logs").display()
                );
                println!("export KUBECONFIG={}", bed.kubeconfig().display());
            })
        }
        Cmd::Down { dir } => bed::down_dir(&dir),
    };
    if let Err(e) = result {
        eprintln!("testbed: {e:#}");
        std::process::exit(1);
    }
}
