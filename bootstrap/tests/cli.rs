//! The `confab-bootstrap` binary: prints its listening lines, keeps its identity across restarts,
//! and exits cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(data_dir: &std::path::Path) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab-bootstrap"))
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut listening = Vec::new();
    while listening.len() < 2 {
        let line = lines.next().expect("a listening line").unwrap();
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        listening.push(addr.to_owned());
    }
    (child, listening)
}

fn peer_id(addr: &str) -> &str {
    addr.rsplit_once("/p2p/").expect("ends in /p2p/<peer id>").1
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn prints_listening_lines_and_keeps_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (child, first) = start(dir.path());
    assert!(
        first.iter().any(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
        "{first:?}"
    );
    assert!(
        first.iter().any(|a| a.contains("/quic-v1/p2p/")),
        "{first:?}"
    );
    let id = peer_id(&first[0]).to_owned();
    assert!(first.iter().all(|a| peer_id(a) == id));
    terminate(child);

    let (child, second) = start(dir.path());
    assert_eq!(peer_id(&second[0]), id, "same identity after a restart");
    terminate(child);
}
