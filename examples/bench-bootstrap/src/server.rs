//! The server under test: the real `confab-bootstrap` binary as a child process on
//! `127.0.0.1`, with mDNS off and a fresh data dir, and what `/proc` says about it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

/// Most time `cargo build` of the server may take (a cold release build on 2 cores, waiting
/// for other builds holding the cargo lock).
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Most time the server may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Most time the server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the server's log shown when it misbehaves.
const LOG_TAIL_LINES: usize = 20;

/// Builds `confab-bootstrap` in release mode from this workspace and returns the binary's path,
/// as cargo reports it (so the target dir, wherever it is, does not matter).
pub async fn build() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = Command::new(&cargo);
    // `cargo run` gives this process the variables it gives a crate (`CARGO_PKG_NAME`,
    // `CARGO_MANIFEST_DIR`, ...). Build scripts that watch them (ring's does) would see a
    // change and rebuild half the dependency tree twice per run; the nested build must not
    // inherit them.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            command.env_remove(key.as_ref());
        }
    }
    let child = command
        .args([
            "build",
            "--release",
            "-p",
            "confab-bootstrap",
            "--bin",
            "confab-bootstrap",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    let output = timeout(BUILD_TIMEOUT, child.wait_with_output())
        .await
        .context("building confab-bootstrap timed out")??;
    if !output.status.success() {
        bail!("building confab-bootstrap failed ({})", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "confab-bootstrap")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report a confab-bootstrap executable")
}

/// Memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`): since the process started, or since the last
    /// [`Server::reset_peak`].
    pub hwm_kib: u64,
    /// Threads of the process (`Threads`).
    pub threads: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid` (`None`: this process).
pub fn memory(pid: Option<u32>) -> Result<Memory> {
    let path = proc_path(pid, "status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// The soft limit on open files of `pid` (`None`: this process), from `/proc/<pid>/limits`.
pub fn open_files_limit(pid: Option<u32>) -> Result<u64> {
    let path = proc_path(pid, "limits");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .with_context(|| format!("no open-files limit in {path}"))
}

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// A running `confab-bootstrap` child process.
pub struct Server {
    child: Child,
    pid: u32,
    /// Where to dial it (`/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>`).
    pub addr: Multiaddr,
    /// Its peer id.
    pub peer: PeerId,
    /// Kept open so the server never writes into a closed pipe.
    _stdout: ChildStdout,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `binary` on a random TCP port of 127.0.0.1 with mDNS off and a fresh data dir, and
    /// waits for its `listening <addr>/p2p/<id>` line. Its log goes to a file in the temp dir.
    pub async fn start(binary: &Path) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut child = Command::new(binary)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .env("CONFAB_NO_MDNS", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let found = timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening ") {
                    return Ok(addr.parse::<Multiaddr>()?);
                }
            }
            Err(anyhow!("the server exited before it listened"))
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("no `listening` line within {START_TIMEOUT:?}")));
        let addr = match found {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill().await;
                bail!("{e:#}; {}", log_tail(dir.path()));
            }
        };
        let peer = addr
            .iter()
            .find_map(|p| match p {
                Protocol::P2p(peer) => Some(peer),
                _ => None,
            })
            .with_context(|| format!("{addr} has no /p2p/ part"))?;
        Ok(Server {
            child,
            pid,
            addr,
            peer,
            _stdout: lines.into_inner().into_inner(),
            dir,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's memory now.
    pub fn memory(&self) -> Result<Memory> {
        memory(Some(self.pid))
    }

    /// Resets the server's `VmHWM` to its current RSS (`echo 5 > /proc/<pid>/clear_refs`), so
    /// that a later [`Server::memory`] gives the peak since now.
    pub fn reset_peak(&self) -> Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid);
        std::fs::write(&path, "5").with_context(|| format!("writing {path}"))
    }

    /// How many sockets the server has open (each TCP connection is one).
    pub fn sockets(&self) -> Result<usize> {
        let path = format!("/proc/{}/fd", self.pid);
        let entries = std::fs::read_dir(&path).with_context(|| format!("reading {path}"))?;
        Ok(entries
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count())
    }

    /// The server's soft limit on open files.
    pub fn open_files_limit(&self) -> Result<u64> {
        open_files_limit(Some(self.pid))
    }

    /// Stops the server with SIGTERM (its clean shutdown) and waits for it; kills it if it does
    /// not exit in time. An unclean exit is an error that quotes the end of its log.
    pub async fn stop(mut self) -> Result<()> {
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let exited = if signalled {
            timeout(STOP_TIMEOUT, self.child.wait()).await.ok()
        } else {
            None
        };
        match exited {
            Some(Ok(status)) if status.success() => Ok(()),
            Some(Ok(status)) => bail!(
                "the server exited with {status}; {}",
                log_tail(self.dir.path())
            ),
            Some(Err(e)) => Err(e.into()),
            None => {
                let _ = self.child.kill().await;
                bail!(
                    "the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; {}",
                    log_tail(self.dir.path())
                )
            }
        }
    }
}

/// The last lines of the server's log, for error messages.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!("server log (last lines):\n{tail}")
}
