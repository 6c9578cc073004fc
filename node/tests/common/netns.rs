//! Network namespaces for tests: hosts of the test's own, joined by veth pairs, deleted on drop.
//! Creating them needs root and `ip` (iproute2); [`require`] skips the test without them, unless
//! `CI` is set, when it fails.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a freshly configured veth may take to become operationally up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `ip ARGS`; `Err` says what went wrong.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process can create namespaces; `Err` names what is missing.
pub fn available() -> Result<(), String> {
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("the `ip` command (iproute2) is not installed".to_owned());
    }
    if let Ok(out) = Command::new("id").arg("-u").output() {
        let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && uid != "0" {
            return Err(format!(
                "network namespaces need root (running as uid {uid})"
            ));
        }
    }
    Ok(())
}

/// `true` if the test may go on; `false` (after a note) if it must be skipped. Panics when `CI`
/// is set and namespaces are not available: there the test must run.
pub fn require(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(missing) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but {test} cannot run: {missing}")
        }
        Err(missing) => {
            eprintln!("note: skipping {test}: {missing}");
            false
        }
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name (for `ip netns exec`).
    pub name: String,
}

impl Netns {
    /// Creates `confab-t-<pid>-<tag>` with its loopback up. A leftover of a killed run with the
    /// same pid is replaced.
    pub fn create(tag: &str) -> Result<Self, String> {
        let name = format!("confab-t-{}-{tag}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The command prefix that runs a program inside this namespace.
    pub fn exec_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// Joins two namespaces with a veth pair `dev_a`/`dev_b` (created straight inside them: nothing
/// touches the host's links), gives each end an address (`10.x.y.z/24`), brings them up and waits
/// until both run. mdns-sd only uses interfaces that are operationally up when it starts, and the
/// kernel marks a new link so asynchronously, hence the wait.
pub fn link(
    a: &Netns,
    dev_a: &str,
    addr_a: &str,
    b: &Netns,
    dev_b: &str,
    addr_b: &str,
) -> Result<(), String> {
    ip(&[
        "-n", &a.name, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns",
        &b.name,
    ])?;
    for (ns, dev, addr) in [(a, dev_a, addr_a), (b, dev_b, addr_b)] {
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            dev,
        ])?;
        ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
    }
    for (ns, dev) in [(a, dev_a), (b, dev_b)] {
        wait_until_running(&ns.name, dev)?;
    }
    Ok(())
}

fn wait_until_running(ns: &str, dev: &str) -> Result<(), String> {
    let deadline = Instant::now() + LINK_UP_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", dev])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `ip`: {e}"))?;
        last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && last.contains(" state UP ") {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{dev} in {ns} is not up after {LINK_UP_TIMEOUT:?}: {last}"
    ))
}

/// A private /16 for this run's links, derived from the pid so concurrent runs differ; the
/// addresses exist only inside the test's namespaces.
pub fn subnet() -> String {
    let pid = std::process::id();
    format!("10.{}", 100 + pid % 100)
}
