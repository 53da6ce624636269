//! Where the pinned stock binaries live: `e2e/stock/versions.env` is the single source of the
//! versions, `e2e/stock/build.sh` builds them into `${FERRITE_CACHE:-~/.cache/ferrite}`. The test
//! bed and bootstrap both read them from here.

use std::path::PathBuf;

const VERSIONS: &str = include_str!("../../e2e/stock/versions.env");

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

/// `<cache>/<component>-<pinned version>`.
pub fn component_dir(component: &str, key: &str) -> PathBuf {
    let v = version(key).unwrap_or("unpinned");
    cache_root().join(format!("{component}-{v}"))
}

/// A stock binary: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl,
/// etcd, kwok, helm, containerd, ctr, containerd-shim-runc-v2, or the project's pause.
pub fn binary(name: &str) -> PathBuf {
    let dir = match name {
        "etcd" => component_dir("etcd", "ETCD_VERSION"),
        "kwok" => component_dir("kwok", "KWOK_VERSION"),
        "helm" => component_dir("helm", "HELM_VERSION"),
        "containerd" | "ctr" | "containerd-shim-runc-v2" => {
            component_dir("containerd", "CONTAINERD_VERSION")
        }
        "pause" => cache_root().join("pause"),
        _ => component_dir("kubernetes", "KUBERNETES_VERSION"),
    };
    dir.join("bin").join(name)
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
            "CONTAINERD_VERSION",
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

    #[test]
    fn containerd_tools_live_beside_containerd() {
        assert_eq!(binary("ctr").parent(), binary("containerd").parent());
        assert_eq!(
            binary("containerd-shim-runc-v2").parent(),
            binary("containerd").parent()
        );
    }
}
