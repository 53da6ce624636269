//! Where the pinned stock binaries live: `e2e/stock/versions.env` is the single source of the
//! versions, `e2e/stock/build.sh` builds them into `${FERRITE_CACHE:-~/.cache/ferrite}`.

use std::path::PathBuf;

const VERSIONS: &str = include_str!("../stock/versions.env");

/// The pinned version of `key` (e.g. `KUBERNETES_VERSION`) from versions.env.
pub fn version(key: &str) -> Option<&'static str> {
    VERSIONS.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRITE_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("ferrite")
}

fn component_dir(component: &str, key: &str) -> PathBuf {
    let v = version(key).unwrap_or("unpinned");
    cache_root().join(format!("{component}-{v}"))
}

/// A stock binary: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl,
/// etcd, kwok or helm.
pub fn binary(name: &str) -> PathBuf {
    let dir = match name {
        "etcd" => component_dir("etcd", "ETCD_VERSION"),
        "kwok" => component_dir("kwok", "KWOK_VERSION"),
        "helm" => component_dir("helm", "HELM_VERSION"),
        "containerd" => component_dir("containerd", "CONTAINERD_VERSION"),
        _ => component_dir("kubernetes", "KUBERNETES_VERSION"),
    };
    dir.join("bin").join(name)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_file_pins_every_component() {
        for key in [
            "KUBERNETES_VERSION",
            "ETCD_VERSION",
            "KWOK_VERSION",
            "HELM_VERSION",
        ] {
            let v = version(key).unwrap_or_default();
            assert!(v.starts_with('v'), "{key} pinned as {v:?}");
        }
    }

    #[test]
    fn kubernetes_binaries_live_under_the_pinned_kubernetes_version() {
        let path = binary("kube-apiserver");
        let kube = version("KUBERNETES_VERSION").unwrap_or_default();
        assert!(
            path.to_string_lossy()
                .contains(&format!("kubernetes-{kube}")),
            "{path:?}"
        );
    }
}
