//! mDNS discovery end to end: two `confab rpc` processes, each in a network namespace of its own
//! joined by a veth pair, find each other over mDNS, connect, and exchange a direct message.
//!
//! mDNS never runs on a real interface here: the namespaces (and the 10.x.y.0/24 addresses on the
//! veth ends) exist only for the duration of the test and are deleted by a drop guard, also when
//! the test fails. Creating namespaces needs root and the `ip` command; without them the test is
//! skipped, unless `CI` is set, in which case it fails.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::RpcProcess;
use serde_json::{Value, json};

/// How long a freshly configured veth may take to become operationally up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

// ---- network namespaces ---------------------------------------------------------------------

/// Runs `ip ARGS`; `Err` carries what went wrong.
fn ip(args: &[&str]) -> Result<(), String> {
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

/// Waits until link `dev` in namespace `ns` is operationally up (at most [`LINK_UP_TIMEOUT`]).
fn wait_until_running(ns: &str, dev: &str) -> Result<(), String> {
    let deadline = Instant::now() + LINK_UP_TIMEOUT;
    let mut last = String::new();
    for _ in 0..(LINK_UP_TIMEOUT.as_millis() / 20 + 1) {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", dev])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `ip`: {e}"))?;
        last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && last.contains(" state UP ") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{dev} in {ns} is not operationally up after {LINK_UP_TIMEOUT:?}: {last}"
    ))
}

/// Two network namespaces joined by a veth pair; deleted on drop.
struct Lab {
    /// The namespaces created so far (deleted on drop, in reverse order).
    created: Vec<String>,
    a: String,
    b: String,
    a_addr: String,
    b_addr: String,
}

impl Lab {
    /// Sets up the namespaces, or says what is missing.
    fn create() -> Result<Self, String> {
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("the `ip` command (iproute2) is not installed".to_owned());
        }
        if let Ok(out) = Command::new("id").arg("-u").output() {
            let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && uid != "0" {
                return Err(format!(
                    "creating network namespaces needs root (running as uid {uid})"
                ));
            }
        }
        let pid = std::process::id();
        // The subnet only exists inside the two namespaces; derive it from the pid anyway so
        // that concurrent runs are easy to tell apart.
        let (x, y) = (100 + (pid / 256) % 100, pid % 256);
        let mut lab = Lab {
            created: Vec::new(),
            a: format!("confab-t-{pid}-a"),
            b: format!("confab-t-{pid}-b"),
            a_addr: format!("10.{x}.{y}.1"),
            b_addr: format!("10.{x}.{y}.2"),
        };
        for ns in [lab.a.clone(), lab.b.clone()] {
            // A namespace with this process id in its name can only be a leftover of a killed
            // run whose pid was reused: remove it.
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])
                .map_err(|e| format!("cannot create a network namespace: {e}"))?;
            lab.created.push(ns);
        }
        let (a, b) = (lab.a.clone(), lab.b.clone());
        // Both ends are created straight inside the namespaces; nothing touches the host's.
        ip(&[
            "-n", &a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns",
            &b,
        ])
        .map_err(|e| format!("cannot create a veth pair: {e}"))?;
        // From here on a failure is a failure of the test, not a missing capability.
        lab.configure().unwrap_or_else(|e| panic!("{e}"));
        Ok(lab)
    }

    /// Addresses the veth ends, brings them and `lo` up, and waits until both ends run.
    fn configure(&self) -> Result<(), String> {
        let ends = [
            (&self.a, "veth-a", &self.a_addr),
            (&self.b, "veth-b", &self.b_addr),
        ];
        for (ns, dev, addr) in ends {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            // No multicast route is needed: mdns-sd sends on each interface with
            // IP_MULTICAST_IF, and veth links have MULTICAST set by default.
        }
        // mdns-sd only uses interfaces that are operationally up (IFF_RUNNING) when its daemon
        // starts and looks again only every 5 s. The kernel sets the operational state of a
        // link that just got its carrier asynchronously (linkwatch, up to a second later), so
        // wait for it; otherwise the node started in a namespace whose veth is not "running"
        // yet finds nothing for 5 s.
        for (ns, dev, _) in ends {
            wait_until_running(ns, dev)?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: {e}");
            }
        }
    }
}

// ---- the test -----------------------------------------------------------------------------------

fn start_in(ns: &str, name: &str, data_dir: &std::path::Path) -> RpcProcess {
    // Default listen addresses (every interface of the namespace) and mDNS on.
    RpcProcess::spawn_with(data_dir, name, &[], Some(&["ip", "netns", "exec", ns]))
}

/// Waits (bounded) until `node` lists `peer` as found by mDNS.
fn listed_as_mdns(node: &mut RpcProcess, peer: &str) -> bool {
    for _ in 0..100 {
        let peers = node.call("peers", json!({}));
        let found = peers
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["peer_id"] == peer && p["source"] == "mdns" && p["connected"] == true);
        if found {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn two_nodes_in_namespaces_find_each_other_over_mdns_and_chat() {
    // Declaration order matters: locals drop in reverse, so the processes are killed before
    // their data dirs and the namespaces are removed.
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(missing) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but the mDNS test cannot run: {missing}");
            }
            eprintln!("note: skipping the mDNS discovery test: {missing}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("temp dir");

    let started = Instant::now();
    let mut ann = start_in(&lab.a, "ann", &tmp.path().join("ann"));
    let mut ben = start_in(&lab.b, "ben", &tmp.path().join("ben"));
    let ann_me = ann.call("whoami", json!({}));
    let ben_me = ben.call("whoami", json!({}));
    let ann_id = ann_me["peer_id"].as_str().unwrap().to_owned();
    let ben_id = ben_me["peer_id"].as_str().unwrap().to_owned();
    let listens_on = |me: &Value, addr: &str| {
        me["listen_addrs"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|x| x.contains(addr)))
        })
    };
    assert!(
        listens_on(&ann_me, &lab.a_addr),
        "ann does not listen on the veth: {ann_me}"
    );
    assert!(
        listens_on(&ben_me, &lab.b_addr),
        "ben does not listen on the veth: {ben_me}"
    );

    // Neither node is told about the other: whatever connects them is mDNS.
    let ann_saw = ann.wait_for("peer_discovered", |p| p["peer_id"] == ben_id.as_str());
    let ann_at = started.elapsed();
    let ben_saw = ben.wait_for("peer_discovered", |p| p["peer_id"] == ann_id.as_str());
    let ben_at = started.elapsed();
    eprintln!(
        "discovery took {} ms (ann saw ben after {} ms via {}; ben saw ann after {} ms via {})",
        ann_at.max(ben_at).as_millis(),
        ann_at.as_millis(),
        ann_saw["source"],
        ben_at.as_millis(),
        ben_saw["source"],
    );
    assert_eq!(ann_saw["name"], "ben");
    assert_eq!(ben_saw["name"], "ann");
    // The node whose browser resolves the other first dials it; the other may learn of the peer
    // from that inbound connection ("dial") a moment before its own browser resolves it. Either
    // way, each ends up listing the other as found by mDNS.
    for saw in [&ann_saw, &ben_saw] {
        assert!(saw["source"] == "mdns" || saw["source"] == "dial", "{saw}");
    }
    assert!(ann_saw["source"] == "mdns" || ben_saw["source"] == "mdns");
    assert!(
        listed_as_mdns(&mut ann, &ben_id),
        "ann's mDNS never resolved ben"
    );
    assert!(
        listed_as_mdns(&mut ben, &ann_id),
        "ben's mDNS never resolved ann"
    );

    // Ann writes to ben; ben answers.
    let id = ann.call(
        "send",
        json!({"to": format!("peer:{ben_id}"), "text": "hello over mdns"}),
    )["id"]
        .clone();
    let got = ben.wait_for("message", |m| m["id"] == id);
    assert_eq!(got["conversation"], format!("peer:{ann_id}"));
    assert_eq!(got["from"]["peer_id"], ann_id.as_str());
    assert_eq!(got["from"]["name"], "ann");
    assert_eq!(got["text"], "hello over mdns");
    ann.wait_for("delivery", |d| d["id"] == id && d["state"] == "delivered");

    let id = ben.call(
        "send",
        json!({"to": format!("peer:{ann_id}"), "text": "hello back"}),
    )["id"]
        .clone();
    let got = ann.wait_for("message", |m| m["id"] == id && m["notify"] == true);
    assert_eq!(got["from"]["peer_id"], ben_id.as_str());
    assert_eq!(got["text"], "hello back");

    let history = ann.call("history", json!({"with": format!("peer:{ben_id}")}));
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello over mdns", "hello back"]);

    assert!(ann.shutdown().success(), "ann exited with an error");
    assert!(ben.shutdown().success(), "ben exited with an error");
}
