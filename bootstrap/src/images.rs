//! The node's images, built locally with no registry and no Docker engine: each is a root
//! filesystem of a few files (a static binary, or the `ferrite` binary with the shared libraries
//! `ldd` names), committed by buildah (vfs storage, nothing mounted) to an OCI archive and
//! imported into containerd's `k8s.io` namespace. Archives are cached by content, so an unchanged
//! image is never built twice.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::host;

/// One image: its reference, the files of its root filesystem (host source → image path) and
/// its entrypoint.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// `localhost/<name>` (no registry is ever contacted for `localhost/`).
    pub repository: String,
    pub tag: String,
    pub files: Vec<(PathBuf, String)>,
    pub entrypoint: String,
}

impl ImageSpec {
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// An image holding one static binary at `dest`.
    pub fn single_binary(name: &str, tag: &str, binary: &Path, dest: &str) -> ImageSpec {
        ImageSpec {
            repository: format!("localhost/{name}"),
            tag: tag.to_string(),
            files: vec![(binary.to_path_buf(), dest.to_string())],
            entrypoint: dest.to_string(),
        }
    }
}

/// The shared objects a dynamically linked binary loads, from `ldd` output: the resolved paths
/// of `name => /path (addr)` lines and the program interpreter's own line.
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("a shared library is missing: {line}");
        }
        if line.starts_with("linux-vdso") || line.contains("statically linked") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The image of a binary that may be dynamically linked: the binary at `dest` plus every
/// shared library at the path the dynamic loader looks for it (copied, symlinks resolved).
pub fn with_shared_libraries(
    name: &str,
    tag: &str,
    binary: &Path,
    dest: &str,
) -> Result<ImageSpec> {
    let mut spec = ImageSpec::single_binary(name, tag, binary, dest);
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    // ldd exits 1 for a static binary ("not a dynamic executable"): nothing to add.
    if out.status.success() {
        for lib in parse_ldd(&String::from_utf8_lossy(&out.stdout))? {
            let dest = lib.display().to_string();
            spec.files.push((lib, dest));
        }
    }
    Ok(spec)
}

/// A digest of everything that makes up the image (paths, contents, entrypoint, reference).
pub fn content_key(spec: &ImageSpec) -> Result<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(spec.reference().as_bytes());
    ctx.update(spec.entrypoint.as_bytes());
    for (src, dest) in &spec.files {
        ctx.update(dest.as_bytes());
        let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(&bytes);
    }
    Ok(hex(ctx.finish().as_ref()))
}

/// A short content digest of one file (image tags of locally built binaries).
pub fn file_digest(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the image's OCI archive under `cache` unless an archive of the same content is there.
pub fn build(spec: &ImageSpec, cache: &Path) -> Result<PathBuf> {
    let key = content_key(spec)?;
    let name = spec
        .repository
        .trim_start_matches("localhost/")
        .replace('/', "_");
    let archive = cache.join(format!("{name}-{}.tar", &key[..16]));
    if archive.is_file() {
        return Ok(archive);
    }
    std::fs::create_dir_all(cache)?;
    let work = cache.join(format!(".build-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = build_in(spec, &work, &archive);
    let _ = std::fs::remove_dir_all(&work);
    result.with_context(|| format!("building image {}", spec.reference()))?;
    // Each rebuilt binary makes a new archive of ~its size: keep only the newest of each image.
    if let Ok(entries) = std::fs::read_dir(cache) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let stale = file
                .strip_prefix(&format!("{name}-"))
                .is_some_and(|rest| rest.len() == 16 + 4 && rest.ends_with(".tar"));
            if stale && e.path() != archive {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(archive)
}

fn build_in(spec: &ImageSpec, work: &Path, archive: &Path) -> Result<()> {
    let rootfs = work.join("rootfs");
    for (src, dest) in &spec.files {
        let target = rootfs.join(dest.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // fs::copy follows symlinks: the image gets the library itself at the linked name.
        std::fs::copy(src, &target)
            .with_context(|| format!("copying {} into the image", src.display()))?;
    }
    let root = work.join("storage").display().to_string();
    let runroot = work.join("run").display().to_string();
    let buildah = |args: &[&str]| -> Result<String> {
        let mut all = vec![
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--storage-driver",
            "vfs",
        ];
        all.extend(args);
        host::run("buildah", &all)
    };
    let container = buildah(&["from", "--quiet", "scratch"])?.trim().to_string();
    let rootfs_s = rootfs.display().to_string();
    buildah(&["copy", "--quiet", &container, &rootfs_s, "/"])?;
    let entrypoint = serde_json::to_string(&[&spec.entrypoint])?;
    buildah(&[
        "config",
        "--entrypoint",
        &entrypoint,
        "--env",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        &container,
    ])?;
    let partial = archive.with_extension("tar.partial");
    let dest = format!("oci-archive:{}:{}", partial.display(), spec.reference());
    buildah(&[
        "commit", "--quiet", "--format", "oci", "--rm", &container, &dest,
    ])?;
    std::fs::rename(&partial, archive)?;
    Ok(())
}

/// containerd's client for the node's socket, in the namespace the CRI plugin uses.
pub struct Ctr {
    pub binary: PathBuf,
    pub socket: PathBuf,
}

impl Ctr {
    fn run(&self, args: &[&str]) -> Result<String> {
        let socket = self.socket.display().to_string();
        let mut all = vec!["--address", socket.as_str(), "--namespace", "k8s.io"];
        all.extend(args);
        host::run(&self.binary, &all)
    }

    pub fn images(&self) -> Result<Vec<String>> {
        Ok(self
            .run(&["images", "ls", "--quiet"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Imports the archive unless the reference is already there with this content (the
    /// archive's name carries the content key, remembered in `<marker_dir>`).
    pub fn import(&self, spec: &ImageSpec, archive: &Path, marker_dir: &Path) -> Result<()> {
        let marker = marker_dir.join(spec.reference().replace(['/', ':'], "_"));
        let archive_name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let present = self.images()?.contains(&spec.reference());
        if present && std::fs::read_to_string(&marker).ok().as_deref() == Some(&archive_name) {
            return Ok(());
        }
        self.run(&["images", "import", &archive.display().to_string()])?;
        if !self.images()?.contains(&spec.reference()) {
            bail!(
                "containerd does not list {} after importing {}",
                spec.reference(),
                archive.display()
            );
        }
        std::fs::create_dir_all(marker_dir)?;
        std::fs::write(marker, archive_name)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_resolved_libraries_and_the_loader() {
        let out = "\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)
";
        assert_eq!(
            parse_ldd(out).expect("parse"),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error_not_a_broken_image() {
        let out = "\tlibfoo.so.1 => not found\n";
        assert!(parse_ldd(out).is_err());
    }

    #[test]
    fn the_content_key_changes_with_any_file_and_with_the_reference() {
        let dir = std::env::temp_dir().join(format!("ferrite-img-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bin = dir.join("bin");
        std::fs::write(&bin, b"one").expect("write");
        let spec = ImageSpec::single_binary("x", "v1", &bin, "/x");
        let a = content_key(&spec).expect("key");
        assert_eq!(a, content_key(&spec).expect("key"), "stable");
        std::fs::write(&bin, b"two").expect("write");
        let b = content_key(&spec).expect("key");
        assert_ne!(a, b);
        let mut other = spec.clone();
        other.tag = "v2".into();
        assert_ne!(b, content_key(&other).expect("key"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
