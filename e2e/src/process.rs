//! Child processes of the test bed. Two modes:
//! - `Attached` (tests): children die with the test process, also when it is killed, through
//!   PR_SET_PDEATHSIG. The signal follows the *thread* that forked, so every attached child is
//!   forked from one spawner thread that lives as long as the process.
//! - `Detached` (`testbed up`): children get their own session and outlive the command; `testbed
//!   down` stops them by pid.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Attached,
    Detached,
}

pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Option<Child>,
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the test bed's spawner thread");
        Mutex::new(tx)
    })
}

/// Starts `cmd` with stdout and stderr appended to `log`.
pub fn spawn(name: &str, mut cmd: Command, log: &Path, mode: Mode) -> std::io::Result<Proc> {
    let out = File::options().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = match mode {
        Mode::Attached => {
            // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let (reply_tx, reply_rx) = mpsc::channel();
            spawner()
                .lock()
                .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
                .send((cmd, reply_tx))
                .map_err(|_| std::io::Error::other("spawner thread gone"))?;
            reply_rx
                .recv()
                .map_err(|_| std::io::Error::other("spawner thread gone"))??
        }
        Mode::Detached => {
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.spawn()?
        }
    };
    let pid = child.id();
    if mode == Mode::Attached {
        register_for_exit(pid);
    }
    Ok(Proc {
        name: name.to_string(),
        pid,
        child: Some(child),
    })
}

impl Proc {
    /// A process known only by pid (from a detached bed's state file).
    pub fn from_pid(name: &str, pid: u32) -> Proc {
        Proc {
            name: name.to_string(),
            pid,
            child: None,
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => alive(self.pid),
        }
    }

    /// The exit status once the process ended (attached children only).
    pub fn try_exit_code(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(
                128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0),
            )),
            _ => None,
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on a pid we started.
        unsafe {
            libc::kill(self.pid as i32, sig);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until the process is gone.
    pub fn stop(&mut self, grace: Duration) {
        if grace.is_zero() {
            return self.kill();
        }
        self.signal(libc::SIGTERM);
        if !self.wait_gone(grace) {
            self.signal(libc::SIGKILL);
            self.wait_gone(Duration::from_secs(10));
        }
        unregister_for_exit(self.pid);
    }

    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_gone(Duration::from_secs(10));
        unregister_for_exit(self.pid);
    }

    /// Waits up to `timeout` for the process to end; true when it did.
    pub fn wait_gone(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        !self.is_running()
    }
}

pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as i32, 0) };
    if r != 0 {
        return false;
    }
    // A zombie still "exists"; it is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

// Attached children are also stopped when the test process exits normally (statics are never
// dropped, so a shared bed has no Drop to rely on): an atexit hook kills what is still registered.
fn exit_registry() -> &'static Mutex<Vec<u32>> {
    static PIDS: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    PIDS.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(kill_registered_at_exit);
        }
        Mutex::new(Vec::new())
    })
}

fn register_for_exit(pid: u32) {
    if let Ok(mut pids) = exit_registry().lock() {
        pids.push(pid);
    }
}

fn unregister_for_exit(pid: u32) {
    if let Ok(mut pids) = exit_registry().lock() {
        pids.retain(|p| *p != pid);
    }
}

extern "C" fn kill_registered_at_exit() {
    let pids = match exit_registry().lock() {
        Ok(pids) => pids.clone(),
        Err(_) => return,
    };
    for pid in &pids {
        // SAFETY: kill and waitpid on our own children.
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
            libc::waitpid(*pid as i32, std::ptr::null_mut(), 0);
        }
    }
    for dir in exit_dirs().lock().map(|d| d.clone()).unwrap_or_default() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn exit_dirs() -> &'static Mutex<Vec<std::path::PathBuf>> {
    static DIRS: OnceLock<Mutex<Vec<std::path::PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Removes `dir` when the process exits (after its attached children are killed).
pub fn remove_at_exit(dir: &Path) {
    exit_registry();
    if let Ok(mut dirs) = exit_dirs().lock() {
        dirs.push(dir.to_path_buf());
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the bed starts its processes at once).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The last `n` lines of a log, for error messages.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
