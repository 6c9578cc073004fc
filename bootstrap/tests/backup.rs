//! Backups of a running server: taken under load they restore into a fresh data dir that passes
//! the integrity check and serves logins; periodic ones appear and old generations go.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use confab_bootstrap::limits::BACKUP_GENERATIONS;
use confab_bootstrap::store::backup;
use confab_protocol::bootstrap::{Avatar, BootstrapRequest, BootstrapResponse};

/// How long the writers keep writing.
const LOAD_TIME: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_and_serves_logins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut seed = Client::connect(&server.addr).await;
    assert_session(&seed.register("seed").await, "seed");

    let deadline = Instant::now() + LOAD_TIME;
    // Registrations (argon2 bound), remembering when each was sent and answered.
    let addr = server.addr.clone();
    let registrar = tokio::spawn(async move {
        let mut client = Client::connect(&addr).await;
        let mut made = Vec::new();
        for i in 0..500 {
            if Instant::now() > deadline {
                break;
            }
            let user = format!("load{i}");
            let sent = Instant::now();
            assert_session(&client.register(&user).await, &user);
            made.push((user, sent, Instant::now()));
        }
        made
    });
    // Profile writes (user record, avatars and their counts), as fast as they go.
    let addr = server.addr.clone();
    let writer = tokio::spawn(async move {
        let mut client = Client::connect(&addr).await;
        assert_session(&client.register("writer").await, "writer");
        let mut n = 0u32;
        while n < 100_000 && Instant::now() < deadline {
            let set = BootstrapRequest::ProfileSet {
                nickname: Some(format!("writer {n}")),
                signature: None,
                avatar: Some(Avatar {
                    mime: "image/png".into(),
                    bytes: png((n % 3) as u8),
                }),
            };
            assert_eq!(client.request(set).await, BootstrapResponse::Done);
            n += 1;
        }
        n
    });

    tokio::time::sleep(LOAD_TIME / 3).await;
    let out = dir.path().join("under-load.redb");
    let backup_started = Instant::now();
    let (data2, out2) = (data.clone(), out.clone());
    let said = tokio::task::spawn_blocking(move || {
        run_ok(&data2, &["backup", "--out", out2.to_str().unwrap()])
    })
    .await
    .unwrap();
    let backup_finished = Instant::now();
    assert!(said.starts_with("backup written to"), "{said}");
    let made = registrar.await.unwrap();
    let profile_writes = writer.await.unwrap();
    eprintln!(
        "{} registrations and {profile_writes} profile writes in {LOAD_TIME:?}; the backup took {:?}",
        made.len(),
        backup_finished - backup_started
    );
    assert!(
        made.iter()
            .any(|(_, _, answered)| *answered < backup_started)
            && made
                .iter()
                .any(|(_, _, answered)| *answered > backup_started),
        "the backup was not taken under load"
    );
    assert!(profile_writes > 10, "only {profile_writes} profile writes");

    // The file passes the integrity check on its own (checked on a copy: the check may write).
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&out, &copy).unwrap();
    let info = backup::verify(&copy).unwrap();
    assert_eq!(info.tables, 26);

    // Restored into a fresh data dir: every account answered before the backup began is there,
    // none asked for after it ended is, and nothing else.
    let fresh = dir.path().join("restored");
    let said = run_ok(&fresh, &["restore", "--from", out.to_str().unwrap()]);
    assert!(said.starts_with("restored"), "{said}");
    let restored: BTreeSet<String> = users(&fresh).into_iter().collect();
    assert!(restored.contains("seed") && restored.contains("writer"));
    for (user, sent, answered) in &made {
        if *answered < backup_started {
            assert!(restored.contains(user), "{user} is missing");
        }
        if *sent > backup_finished {
            assert!(!restored.contains(user), "{user} came from the future");
        }
    }
    let known: BTreeSet<String> = made
        .iter()
        .map(|(u, _, _)| u.clone())
        .chain(["seed".into(), "writer".into()])
        .collect();
    assert!(restored.is_subset(&known), "{restored:?}");
    assert_eq!(stat(&stats(&fresh), "users"), restored.len().to_string());

    // A server on it has the original's identity and serves logins.
    let peer_id = server.peer_id.clone();
    server.terminate();
    let server = Server::start(&fresh, &[]);
    assert_eq!(server.peer_id, peer_id);
    let mut device = Client::connect(&server.addr).await;
    assert_session(&device.login("seed", PASSWORD).await, "seed");
    let oldest = &made[0].0;
    assert_session(&device.login(oldest, PASSWORD).await, oldest);
    match device
        .request(BootstrapRequest::ProfileGet {
            user: "writer".into(),
        })
        .await
    {
        BootstrapResponse::Profile(p) => {
            assert!(p.nickname.starts_with("writer"));
            assert!(p.avatar_hash.is_some());
        }
        other => panic!("{other:?}"),
    }
    server.terminate();
}

/// A real node (`confab_node::Client::login`) logs in to a server restored from a backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logs_in_to_a_restored_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut device = Client::connect(&server.addr).await;
    assert_session(&device.register("ann").await, "ann");
    server.terminate();
    // Offline backup this time.
    let out = dir.path().join("offline.redb");
    run_ok(&data, &["backup", "--out", out.to_str().unwrap()]);
    let fresh = dir.path().join("restored");
    run_ok(&fresh, &["restore", "--from", out.to_str().unwrap()]);
    let server = Server::start(&fresh, &[]);

    let mut config = confab_node::Config::new(dir.path().join("node"));
    config.bootstrap = vec![server.addr.clone()];
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    let node = confab_node::start(config).await.unwrap();
    let login = tokio::time::timeout(Duration::from_secs(20), node.login("ann", PASSWORD))
        .await
        .expect("the node's login answered in time");
    assert_eq!(login.unwrap(), "ann");
    let _ = tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await;
    server.terminate();
}

fn backups_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("bootstrap-") && n.ends_with(".redb"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_backups_appear_and_old_generations_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let server = Server::start(
        &data,
        &[
            "--backup-dir",
            backups.to_str().unwrap(),
            "--backup-interval",
            "1",
        ],
    );
    let mut device = Client::connect(&server.addr).await;
    assert_session(&device.register("ann").await, "ann");

    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < BACKUP_GENERATIONS + 2 {
        let now = backups_in(&backups);
        // One more for a moment: a new backup is in place before the oldest goes.
        assert!(now.len() <= BACKUP_GENERATIONS + 1, "{now:?}");
        seen.extend(now);
        assert!(Instant::now() < deadline, "only {seen:?} in 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.terminate();

    let kept = backups_in(&backups);
    seen.extend(kept.iter().cloned());
    let newest: BTreeSet<String> = seen
        .iter()
        .rev()
        .take(BACKUP_GENERATIONS)
        .cloned()
        .collect();
    assert_eq!(kept, newest, "the newest are kept, the others deleted");
    assert!(
        std::fs::read_dir(&backups).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "no temporary file is left"
    );
    // The newest has the account.
    let newest = backups.join(kept.iter().next_back().unwrap());
    let fresh = dir.path().join("restored");
    run_ok(&fresh, &["restore", "--from", newest.to_str().unwrap()]);
    assert_eq!(users(&fresh), ["ann"]);
}
