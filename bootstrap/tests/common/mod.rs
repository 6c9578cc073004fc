//! Shared by the integration tests: the real `confab-bootstrap` binary as a process (serving on
//! 127.0.0.1 with mDNS off), its admin subcommands, and a minimal libp2p client that speaks
//! `/confab/bootstrap/1` (so accounts are made over the network, with the real argon2 parameters).
//! Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use confab_node::net::{self, WireCodec};
use confab_protocol::bootstrap::{BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identity, ping};

pub const BIN: &str = env!("CARGO_BIN_EXE_confab-bootstrap");

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an admin subcommand may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a request over the network may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

fn stderr() -> Stdio {
    // CONFAB_TEST_LOG=1 shows the servers' logs.
    if std::env::var_os("CONFAB_TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A `confab-bootstrap` process. Killed (SIGKILL) when dropped, so a failing test leaks nothing.
pub struct Server {
    child: Option<Child>,
    /// Its TCP listen address, ending in `/p2p/<peer id>`.
    pub addr: String,
    /// Its peer id.
    pub peer_id: String,
}

impl Server {
    /// Starts a server on `data_dir`, listening on 127.0.0.1 (TCP, any port), mDNS off, with
    /// `extra` options; returns once it printed its listening line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .args(extra)
            .env("CONFAB_NO_MDNS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::sync_channel(4);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            peer_id: String::new(),
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            other => panic!("no listening line from the server: {other:?}"),
        };
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        server.peer_id = addr
            .rsplit_once("/p2p/")
            .expect("ends in /p2p/<peer id>")
            .1
            .to_owned();
        server.addr = addr.to_owned();
        server
    }

    /// `kill -9`: no chance to close anything.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn terminate(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "exit status {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `confab-bootstrap <args> --data-dir <data_dir>` (bounded in time).
pub fn run(data_dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CONFAB_NO_MDNS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let pid = child.id();
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => output.expect("the command ran"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("confab-bootstrap {args:?} took over {COMMAND_TIMEOUT:?}");
        }
    }
}

/// Like [`run`], and it must succeed; returns its standard output.
pub fn run_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = run(data_dir, args);
    assert!(
        out.status.success(),
        "confab-bootstrap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Like [`run`], and it must fail; returns its standard error.
pub fn run_err(data_dir: &Path, args: &[&str]) -> String {
    let out = run(data_dir, args);
    assert!(
        !out.status.success(),
        "confab-bootstrap {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8")
}

/// `user list`.
pub fn users(data_dir: &Path) -> Vec<String> {
    run_ok(data_dir, &["user", "list"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `stats`, as `name: value` pairs.
pub fn stats(data_dir: &Path) -> Vec<(String, String)> {
    run_ok(data_dir, &["stats"])
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// One value of [`stats`].
pub fn stat(stats: &[(String, String)], name: &str) -> String {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
        .1
        .clone()
}

/// A password the server accepts.
pub const PASSWORD: &str = "correct horse battery";

/// The smallest PNG there is (the server checks the magic bytes).
pub fn png(tag: u8) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&[tag; 16]);
    bytes
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    bootstrap: request_response::Behaviour<WireCodec<BootstrapRequest, BootstrapResponse>>,
}

/// One device talking to a bootstrap over `/confab/bootstrap/1` (a fresh identity each time).
pub struct Client {
    swarm: Swarm<Behaviour>,
    server: PeerId,
}

impl Client {
    /// Connects to the bootstrap at `addr` (ending in `/p2p/<peer id>`).
    pub async fn connect(addr: &str) -> Client {
        let addr: Multiaddr = addr.parse().expect("a multiaddr");
        let Some(Protocol::P2p(server)) = addr.iter().last() else {
            panic!("{addr} does not end in /p2p/<peer id>");
        };
        let mut swarm = net::build_swarm(
            identity::Keypair::generate_ed25519(),
            Duration::from_secs(60),
            |_| {
                Ok(Behaviour {
                    ping: ping::Behaviour::new(ping::Config::new()),
                    bootstrap: request_response::Behaviour::with_codec(
                        WireCodec::default(),
                        [(
                            StreamProtocol::new(BOOTSTRAP_PROTOCOL),
                            ProtocolSupport::Outbound,
                        )],
                        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                    ),
                })
            },
        )
        .expect("a swarm");
        swarm.dial(addr.clone()).expect("dial");
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == server => {
                        return;
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("cannot connect to {addr}: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("connected in time");
        Client { swarm, server }
    }

    /// Sends one request and waits for its answer.
    pub async fn request(&mut self, request: BootstrapRequest) -> BootstrapResponse {
        let id = self
            .swarm
            .behaviour_mut()
            .bootstrap
            .send_request(&self.server, request);
        tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(1), async {
            loop {
                match self.swarm.select_next_some().await {
                    SwarmEvent::Behaviour(BehaviourEvent::Bootstrap(
                        request_response::Event::Message {
                            message:
                                request_response::Message::Response {
                                    request_id,
                                    response,
                                },
                            ..
                        },
                    )) if request_id == id => return response,
                    SwarmEvent::Behaviour(BehaviourEvent::Bootstrap(
                        request_response::Event::OutboundFailure {
                            request_id, error, ..
                        },
                    )) if request_id == id => panic!("request failed: {error}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("answered in time")
    }

    /// Registers `user` (this device is then logged in as `user`).
    pub async fn register(&mut self, user: &str) -> BootstrapResponse {
        self.request(BootstrapRequest::Register {
            user: user.into(),
            password: PASSWORD.into(),
        })
        .await
    }

    /// Logs in as `user` with `password`.
    pub async fn login(&mut self, user: &str, password: &str) -> BootstrapResponse {
        self.request(BootstrapRequest::Login {
            user: user.into(),
            password: password.into(),
        })
        .await
    }
}

/// Asserts that `response` is a session of `user`.
pub fn assert_session(response: &BootstrapResponse, user: &str) {
    match response {
        BootstrapResponse::Session { user: u, .. } => assert_eq!(u, user),
        other => panic!("expected a session of {user}, got {other:?}"),
    }
}

/// A temporary directory's path for a data dir that does not exist yet.
pub fn fresh(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
