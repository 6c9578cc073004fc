//! Helpers for tests that drive real `confab rpc` processes.
#![allow(dead_code)]

pub mod netns;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A `confab ... rpc` child process.
pub struct RpcProcess {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    notifications: VecDeque<Value>,
    next_id: u64,
}

impl RpcProcess {
    /// Starts `confab --data-dir DIR --name NAME --no-mdns --listen /ip4/127.0.0.1/tcp/0 rpc`.
    pub fn spawn(data_dir: &Path, name: &str) -> Self {
        Self::spawn_with(
            data_dir,
            name,
            &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
            None,
        )
    }

    /// Starts a node on loopback with mDNS off that knows only the bootstrap at `bootstrap`.
    pub fn spawn_for_bootstrap(data_dir: &Path, name: &str, bootstrap: &str) -> Self {
        let args = [
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            bootstrap,
        ];
        Self::spawn_with(data_dir, name, &args, None)
    }

    /// Starts `[wrapper...] confab --data-dir DIR --name NAME ARGS... rpc`.
    pub fn spawn_with(
        data_dir: &Path,
        name: &str,
        args: &[&str],
        wrapper: Option<&[&str]>,
    ) -> Self {
        let bin = env!("CARGO_BIN_EXE_confab");
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--name", name])
            .args(args)
            .arg("rpc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !args.contains(&"--no-mdns") {
            cmd.env_remove("CONFAB_NO_MDNS");
        }
        let mut child = cmd.spawn().expect("start confab");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::sync_channel(4096);
        let who = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{who}: stdout line is not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            notifications: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Writes one raw line to stdin.
    pub fn send_line(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the response with `id`, keeping notifications for later.
    pub fn response(&mut self, id: &Value) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{}: no response to request {id}", self.name));
            if value.get("method").is_some() && value.get("id").is_none() {
                self.notifications.push_back(value);
            } else if &value["id"] == id {
                return value;
            } else {
                panic!("{}: unexpected line {value}", self.name);
            }
        }
    }

    /// Calls a method; returns the whole response object (`result` or `error`).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(line.to_string().as_bytes());
        self.response(&id)
    }

    /// Calls a method that must succeed; returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params.clone());
        assert!(
            response.get("error").is_none(),
            "{}: {method} {params} failed: {response}",
            self.name
        );
        response["result"].clone()
    }

    /// Calls a method that must fail; returns the error code.
    pub fn call_err(&mut self, method: &str, params: Value) -> i64 {
        let response = self.request(method, params.clone());
        response["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("{}: {method} {params} should fail: {response}", self.name))
    }

    /// Calls a method that must succeed, retrying while no bootstrap is reachable yet (-32060:
    /// a fresh node dials its bootstrap in the background).
    pub fn call_when_connected(&mut self, method: &str, params: Value) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let response = self.request(method, params.clone());
            match response["error"]["code"].as_i64() {
                None => return response["result"].clone(),
                Some(-32060) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Some(_) => panic!("{}: {method} failed: {response}", self.name),
            }
        }
    }

    /// Waits for a notification `method` whose params satisfy `pred`; returns its params.
    pub fn wait_for(&mut self, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(method, pred, TIMEOUT)
            .unwrap_or_else(|| panic!("{}: no `{method}` notification arrived", self.name))
    }

    /// Like [`Self::wait_for`], but gives up after `timeout` and returns `None`.
    pub fn wait_for_within(
        &mut self,
        method: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let matches = |v: &Value| v["method"] == method && pred(&v["params"]);
        if let Some(pos) = self.notifications.iter().position(matches) {
            return self.notifications.remove(pos).map(|v| v["params"].clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self.lines.recv_timeout(left).ok()?;
            if matches(&value) {
                return Some(value["params"].clone());
            }
            self.notifications.push_back(value);
        }
    }

    /// Every notification `method` received so far (and within `settle`), removed from the queue.
    pub fn drain(&mut self, method: &str, settle: Duration) -> Vec<Value> {
        let deadline = Instant::now() + settle;
        while let Ok(v) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.notifications.push_back(v);
        }
        let (hit, keep): (Vec<Value>, Vec<Value>) = self
            .notifications
            .drain(..)
            .partition(|v| v["method"] == method);
        self.notifications = keep.into();
        hit.into_iter().map(|v| v["params"].clone()).collect()
    }

    /// The first listen address (ends in /p2p/<peer id>) and the peer id.
    pub fn address(&mut self) -> (String, String) {
        let me = self.call("whoami", json!({}));
        let addr = me["listen_addrs"][0]
            .as_str()
            .expect("a listen address")
            .to_owned();
        (addr, me["peer_id"].as_str().unwrap().to_owned())
    }

    /// Kills the process with SIGKILL (`kill -9`): no goodbye, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin (EOF) and waits for a clean exit.
    pub fn close(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.wait_exit()
    }

    /// Calls `shutdown` and waits for the process to exit.
    pub fn shutdown(mut self) -> ExitStatus {
        let result = self.call("shutdown", json!({}));
        assert_eq!(result, json!({}));
        drop(self.stdin.take());
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{}: did not exit", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RpcProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(m);
            }
        }
    }
    newest
}

/// The `confab-bootstrap` binary of this build, beside the test's own target dir. `cargo test
/// --workspace` has just built it; when this package is tested alone and the binary is missing or
/// older than the sources it is built from, it is built first, so a stale one is never used.
pub fn bootstrap_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps/<test>");
            let bin = profile_dir.join("confab-bootstrap");
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let sources = ["bootstrap/src", "node/src", "protocol/src"]
                .iter()
                .map(|d| newest(&root.join(d)))
                .max()
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
            if built.is_none_or(|b| b < sources) {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut build = Command::new(cargo);
                build.args([
                    "build",
                    "--quiet",
                    "-p",
                    "confab-bootstrap",
                    "--bin",
                    "confab-bootstrap",
                ]);
                if profile_dir.file_name().is_some_and(|p| p == "release") {
                    build.arg("--release");
                }
                let status = build.status().expect("run cargo");
                assert!(
                    status.success() && bin.exists(),
                    "could not build {}",
                    bin.display()
                );
            }
            bin
        })
        .clone()
}

/// A `confab-bootstrap` child process; killed on drop.
pub struct BootstrapProcess {
    child: Child,
    /// Its `listening` addresses (each ends in `/p2p/<peer id>`).
    pub addrs: Vec<String>,
}

impl BootstrapProcess {
    /// Starts `[wrapper...] confab-bootstrap --data-dir DIR --no-mdns --listen ADDR...` and waits
    /// for its `listening` lines.
    pub fn spawn(data_dir: &Path, listen: &[&str], wrapper: Option<&[&str]>) -> Self {
        Self::spawn_with_mdns(data_dir, listen, wrapper, false)
    }

    /// Like [`Self::spawn`], with mDNS on when `mdns` (only ever inside a test's own namespace).
    pub fn spawn_with_mdns(
        data_dir: &Path,
        listen: &[&str],
        wrapper: Option<&[&str]>,
        mdns: bool,
    ) -> Self {
        let bin = bootstrap_binary();
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--data-dir").arg(data_dir);
        if mdns {
            cmd.env_remove("CONFAB_NO_MDNS");
        } else {
            cmd.arg("--no-mdns");
        }
        for l in listen {
            cmd.args(["--listen", l]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start confab-bootstrap");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::sync_channel(64);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // One line per address of every interface the listeners bound; they come together.
        let first = rx.recv_timeout(TIMEOUT).expect("a listening line");
        let mut addrs = vec![first];
        while addrs.len() < 64 {
            match rx.recv_timeout(Duration::from_millis(300)) {
                Ok(line) => addrs.push(line),
                Err(_) => break,
            }
        }
        let addrs = addrs
            .into_iter()
            .map(|l| {
                l.strip_prefix("listening ")
                    .unwrap_or_else(|| panic!("unexpected line {l:?}"))
                    .to_owned()
            })
            .collect();
        Self { child, addrs }
    }
}

impl BootstrapProcess {
    /// Kills the server with SIGKILL (`kill -9`): no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a server that must come back on the
/// same address after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Drop for BootstrapProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
