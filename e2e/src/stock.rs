//! Where the pinned stock binaries live: `e2e/stock/versions.env` is the single source of the
//! versions, `e2e/stock/build.sh` builds them into `${FERRITE_CACHE:-~/.cache/ferrite}`.

use std::path::PathBuf;

pub use ferrite_bootstrap::stock::{binary, cache_root, component_dir, version};

/// kwok's own stage files, copied next to the kwok binary by build.sh.
pub fn kwok_stage(name: &str) -> PathBuf {
    component_dir("kwok", "KWOK_VERSION")
        .join("stages")
        .join(format!("{name}.yaml"))
}

/// The `ferrite` binary under test: `$FERRITE_BIN`, else the one cargo built next to this
/// executable (`target/<profile>/ferrite`, also from `target/<profile>/deps/<test>`).
pub fn ferrite_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRITE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("ferrite");
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("ferrite")
}
