//! The committed CRDs, `crds/` and the chart's copy in `charts/ferrite/crds/`, are exactly what
//! `ferrite crds` generates from the Rust types: a change to a type without regenerating them
//! fails here, naming the stale file and the command that fixes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ferrite() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect()
}

#[test]
fn the_committed_crds_are_what_ferrite_crds_generates() {
    let generated = tempfile::tempdir().expect("a temporary directory");
    let out = ferrite()
        .args(["crds", "--output-dir"])
        .arg(generated.path())
        .output()
        .expect("ferrite runs");
    assert!(
        out.status.success(),
        "ferrite crds failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = yaml_files(generated.path());
    assert_eq!(
        want,
        BTreeSet::from([
            "config.ferrite.dev_controllerconfigurations.yaml".to_string(),
            "config.ferrite.dev_schedulerprofiles.yaml".to_string(),
        ])
    );
    for committed in ["crds", "charts/ferrite/crds"] {
        let dir = repo().join(committed);
        assert_eq!(
            yaml_files(&dir),
            want,
            "{committed}/ holds other CRD files than `ferrite crds` generates; run `ferrite crds --output-dir {committed}` and remove the others"
        );
        for file in &want {
            let fresh = std::fs::read_to_string(generated.path().join(file)).expect("generated");
            let old = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                old == fresh,
                "{committed}/{file} is stale: run `cargo run -- crds --output-dir {committed}`"
            );
        }
    }
}

#[test]
fn ferrite_crds_prints_every_crd_as_one_yaml_stream() {
    let out = ferrite().arg("crds").output().expect("ferrite runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let docs: Vec<&str> = text.split("\n---\n").collect();
    assert_eq!(docs.len(), 2, "{text}");
    for (doc, name) in docs.iter().zip([
        "controllerconfigurations.config.ferrite.dev",
        "schedulerprofiles.config.ferrite.dev",
    ]) {
        assert!(doc.contains("kind: CustomResourceDefinition"), "{doc}");
        assert!(doc.contains(&format!("name: {name}")), "{doc}");
        assert!(doc.contains("scope: Cluster"), "{doc}");
    }
}
