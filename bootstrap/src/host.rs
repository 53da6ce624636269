//! The host side of a local node: commands, Debian packages, long-running daemons (containerd,
//! the kubelet) that outlive `ferrite bootstrap up`, and the removal of every trace they leave
//! outside the node's directory.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Runs a command to completion; on failure the error carries the command and its output's tail.
pub fn run(program: impl AsRef<OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} {} failed ({}):\n{}{}",
            program.to_string_lossy(),
            args.join(" "),
            out.status,
            tail(&stdout, 20),
            tail(&stderr, 20)
        );
    }
    Ok(stdout)
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut s = lines[lines.len().saturating_sub(n)..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// The Debian packages a local node needs: runc, the CNI plugins (bridge, host-local, loopback,
/// portmap), buildah for the images, iptables for the bridge plugin's masquerading.
pub const PACKAGES: &[&str] = &["runc", "containernetworking-plugins", "buildah", "iptables"];

/// Installs the missing ones (apt-get update first, once); nothing when all are there.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(?missing, "installing Debian packages");
    // Another apt run (unattended upgrades, a parallel install) holds the lock for a while.
    let lock = "DPkg::Lock::Timeout=300";
    run("apt-get", &["-o", lock, "update", "-q"])?;
    let mut args = vec!["-o", lock, "install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    let out = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running apt-get install")?;
    if !out.status.success() {
        bail!(
            "apt-get install {} failed:\n{}",
            missing.join(" "),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    Ok(())
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The address of the interface that holds the default route (`ip -4 route get` output's
/// `src`); the node's InternalIP and the apiserver's advertise address.
pub fn parse_route_src(route_get: &str) -> Option<String> {
    let words: Vec<&str> = route_get.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "src")
        .map(|w| w[1].to_string())
}

pub fn default_node_ip() -> Result<String> {
    // A route lookup only: no packet is sent.
    let out = run("ip", &["-4", "route", "get", "192.0.2.254"])
        .or_else(|_| run("ip", &["-4", "route", "get", "1.1.1.1"]))?;
    parse_route_src(&out).context("no source address on the default route; pass --node-ip")
}

/// A daemon of the node: started in its own session so that it outlives this command, its pid
/// in `<dir>/<name>.pid`, its output appended to `<dir>/logs/<name>.log`.
pub struct Daemon {
    pub name: &'static str,
    pub pidfile: PathBuf,
    /// A string every genuine instance has on its command line (the node's directory), so a
    /// recycled pid is never signalled.
    pub marker: String,
}

impl Daemon {
    pub fn new(name: &'static str, node_dir: &Path) -> Daemon {
        Daemon {
            name,
            pidfile: node_dir.join(format!("{name}.pid")),
            marker: node_dir.display().to_string(),
        }
    }

    /// The pid, when the daemon runs.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains(&self.marker) && !is_zombie(pid)).then_some(pid)
    }

    pub fn start(&self, mut cmd: Command, log: &Path) -> Result<i32> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: setsid is async-signal-safe and nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        // Not waited for: it outlives this command (init reaps it in the end).
        let pid = child.id() as i32;
        drop(child);
        std::fs::write(&self.pidfile, pid.to_string())?;
        Ok(pid)
    }

    /// SIGTERM, SIGKILL after `grace`; returns once it is gone.
    pub fn stop(&self, grace: Duration) {
        if let Some(pid) = self.pid() {
            signal_and_wait(pid, grace);
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 && !is_zombie(pid) }
}

pub fn signal_and_wait(pid: i32, grace: Duration) {
    // SAFETY: kill(2) on a pid whose command line was checked by the caller.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    if !wait_gone(pid, grace) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        wait_gone(pid, Duration::from_secs(10));
    }
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !alive(pid)
}

/// Pids whose command line contains `needle` (e.g. containerd's shims, which name the node's
/// containerd socket).
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Every cgroup directory named `name` at the top of each cgroup hierarchy (v1: one per
/// controller; v2: the unified root).
pub fn top_level_cgroups(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    if root.join(name).is_dir() {
        found.push(root.join(name));
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path().join(name);
            if p.is_dir() {
                found.push(p);
            }
        }
    }
    found
}

/// Kills every process in the cgroup trees and removes the trees (deepest first).
pub fn remove_cgroup_trees(trees: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut pids = Vec::new();
        for t in trees {
            collect_procs(t, &mut pids);
        }
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            // SAFETY: the processes of the node's own pod cgroups.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for t in trees {
        let mut dirs = Vec::new();
        collect_dirs(t, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Mount points at or under `dir` (from /proc/self/mountinfo; octal escapes decoded), deepest
/// first.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.display().to_string();
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or under `dir`.
pub fn unmount_under(dir: &Path) {
    for _ in 0..3 {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = mounts_under(&info, dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: umount2 with a valid C string.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}

const IPTABLES: [&str; 2] = ["iptables", "ip6tables"];
const TABLES: [&str; 3] = ["filter", "nat", "mangle"];

fn node_chain(name: &str) -> bool {
    name.starts_with("KUBE-") || name.starts_with("CNI-")
}

/// The kubelet's (KUBE-*) and the CNI plugins' (CNI-*) iptables chains that exist now, as
/// `tool/table/chain`.
pub fn iptables_node_chains() -> Vec<String> {
    let mut found = Vec::new();
    for tool in IPTABLES {
        for table in TABLES {
            let rules = run(tool, &["-w", "-t", table, "-S"]).unwrap_or_default();
            found.extend(
                rules
                    .lines()
                    .filter_map(|l| l.strip_prefix("-N "))
                    .filter(|c| node_chain(c))
                    .map(|c| format!("{tool}/{table}/{c}")),
            );
        }
    }
    found
}

/// Whether a rule (from `iptables -S`, without `-A`) belongs to the node: it sits in, or jumps
/// to, a KUBE-/CNI- chain that is not in `keep` (chains that existed before the node).
pub fn rule_is_the_nodes(args: &[String], tool: &str, table: &str, keep: &[String]) -> bool {
    args.iter()
        .filter(|w| node_chain(w))
        .any(|w| !keep.contains(&format!("{tool}/{table}/{w}")))
}

/// Removes the rules and chains the kubelet and the CNI plugins added, leaving the chains in
/// `keep` (and their rules) alone.
pub fn remove_iptables_chains(keep: &[String]) {
    for tool in IPTABLES {
        for table in TABLES {
            let Ok(rules) = run(tool, &["-w", "-t", table, "-S"]) else {
                continue;
            };
            for rule in rules.lines().filter_map(|r| r.strip_prefix("-A ")) {
                let Some(args) = shell_words(rule) else {
                    continue;
                };
                if !rule_is_the_nodes(&args, tool, table, keep) {
                    continue;
                }
                let mut del = vec!["-w", "-t", table, "-D"];
                del.extend(args.iter().map(String::as_str));
                let _ = run(tool, &del);
            }
            let chains = run(tool, &["-w", "-t", table, "-S"]).unwrap_or_default();
            for chain in chains
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| node_chain(c) && !keep.contains(&format!("{tool}/{table}/{c}")))
            {
                let _ = run(tool, &["-w", "-t", table, "-F", chain]);
                let _ = run(tool, &["-w", "-t", table, "-X", chain]);
            }
        }
    }
}

/// Splits an `iptables -S` rule into arguments: double quotes group, a backslash escapes the
/// next character (iptables prints comments as `"name: \"x\""`).
pub fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has = false;
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                cur.push(chars.next()?);
                has = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                has = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if in_quotes {
        return None;
    }
    if has {
        words.push(cur);
    }
    Some(words)
}

pub fn read_ip_forward() -> Option<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn write_ip_forward(v: &str) {
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_ip_is_the_default_routes_source_address() {
        let out = "192.0.2.254 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \n    cache \n";
        assert_eq!(parse_route_src(out).as_deref(), Some("192.0.2.2"));
        assert_eq!(parse_route_src("unreachable"), None);
    }

    #[test]
    fn mounts_under_the_node_directory_come_deepest_first_and_decoded() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
40 22 0:50 / /node/containerd/state/x rw - tmpfs tmpfs rw
41 22 0:51 / /node/kubelet/root/pods/a/volumes/my\\040vol rw - tmpfs tmpfs rw
42 22 0:52 / /node-other/x rw - tmpfs tmpfs rw
43 40 0:53 / /node/containerd/state/x/y rw - tmpfs tmpfs rw
";
        let m = mounts_under(info, Path::new("/node"));
        assert_eq!(
            m,
            [
                PathBuf::from("/node/kubelet/root/pods/a/volumes/my vol"),
                PathBuf::from("/node/containerd/state/x/y"),
                PathBuf::from("/node/containerd/state/x"),
            ]
        );
    }

    #[test]
    fn only_rules_in_or_into_chains_the_node_added_are_the_nodes() {
        let keep = vec!["iptables/nat/KUBE-MARK-MASQ".to_string()];
        let words = |s: &str| shell_words(s).expect("words");
        assert!(rule_is_the_nodes(
            &words("POSTROUTING -s 10.244.0.5/32 -j CNI-abc"),
            "iptables",
            "nat",
            &keep
        ));
        assert!(!rule_is_the_nodes(
            &words("KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"),
            "iptables",
            "nat",
            &keep
        ));
        assert!(!rule_is_the_nodes(
            &words("POSTROUTING -o eth0 -j MASQUERADE"),
            "iptables",
            "nat",
            &keep
        ));
        // The same chain name in another table was not there before.
        assert!(rule_is_the_nodes(
            &words("KUBE-MARK-MASQ -j RETURN"),
            "iptables",
            "filter",
            &keep
        ));
    }

    #[test]
    fn iptables_rules_split_into_arguments_with_quoted_comments() {
        let w = shell_words(
            r#"POSTROUTING -s 10.244.0.5/32 -m comment --comment "name: \"ferrite\" id: \"abc\"" -j CNI-1"#,
        )
        .expect("words");
        assert_eq!(w[0], "POSTROUTING");
        assert_eq!(w[6], r#"name: "ferrite" id: "abc""#);
        assert_eq!(w.last().map(String::as_str), Some("CNI-1"));
        assert!(shell_words(r#"A "unterminated"#).is_none());
    }
}
