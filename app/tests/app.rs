//! The real app, driven through its accessibility tree with `egui_kittest`, against real nodes
//! and a real bootstrap in this process on loopback (mDNS off: peers connect by dialling).
//! Widgets are found by their accessible labels, as a screen reader would.

use std::path::Path;
use std::time::{Duration, Instant};

use confab_app::ConfabApp;
use confab_node::{Client, Config, Conversation, Event};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "seven quiet owls";

/// A runtime for the nodes and the bootstrap (the UI runs on the test's thread).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A bootstrap on loopback; returns it with its address.
fn bootstrap(rt: &tokio::runtime::Runtime, dir: &Path) -> (confab_bootstrap::Bootstrap, String) {
    let mut config = confab_bootstrap::Config::new(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.mdns = false;
    let server = rt.block_on(confab_bootstrap::start(config)).unwrap();
    let addr = server.listen_addrs[0].clone();
    (server, addr)
}

/// A node's configuration: loopback, mDNS off, the bootstrap if any.
fn config(dir: &Path, name: Option<&str>, bootstrap: Option<&str>) -> Config {
    let mut config = Config::new(dir);
    config.name = name.map(str::to_owned);
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.bootstrap = bootstrap.into_iter().map(str::to_owned).collect();
    config
}

/// A plain node (the other side of the conversation).
fn node(rt: &tokio::runtime::Runtime, config: Config) -> (Client, broadcast::Receiver<Event>) {
    let client = rt.block_on(confab_node::start(config)).unwrap();
    let events = client.subscribe();
    (client, events)
}

/// The app on a harness of desktop size.
fn window(app: ConfabApp) -> Harness<'static, ConfabApp> {
    Harness::builder()
        .with_size([1100.0, 760.0])
        .build_ui_state(|ui, app: &mut ConfabApp| app.frame(ui), app)
}

/// Runs frames until `done` holds (bounded).
fn wait(
    h: &mut Harness<'_, ConfabApp>,
    what: &str,
    done: impl Fn(&Harness<'_, ConfabApp>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        h.step();
        if done(h) {
            return;
        }
        if Instant::now() > deadline {
            let labels: Vec<String> = h
                .query_all_by(|_| true)
                .filter_map(|n| n.accesskit_node().label())
                .collect();
            eprintln!("labels: {labels:?}");
            let model = h.state().model();
            panic!(
                "timed out waiting for {what}; status {:?}, user {:?}, peers {:?}",
                model.map(|m| &m.status),
                model.map(|m| &m.user),
                model.map(|m| m.peers.values().collect::<Vec<_>>()),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for a node event matching `pred`.
fn expect(
    rt: &tokio::runtime::Runtime,
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    rt.block_on(async {
        tokio::time::timeout(WAIT, async {
            loop {
                match events.recv().await {
                    Ok(e) if pred(&e) => return e,
                    Ok(_) => {}
                    Err(e) => panic!("events: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what}"))
    })
}

/// Focuses the input labelled `label` and types `text` into it.
fn type_into(h: &mut Harness<'_, ConfabApp>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.step();
    h.get_by_label(label).type_text(text);
    h.step();
}

fn shown(h: &Harness<'_, ConfabApp>, label: &str) -> bool {
    h.query_by_label(label).is_some()
}

/// Fills the account form and presses `button` ("Register" or "Sign in").
fn sign_in(h: &mut Harness<'_, ConfabApp>, user: &str, button: &str) {
    wait(h, "the account form", |h| shown(h, "Username"));
    type_into(h, "Username", user);
    type_into(h, "Password", PASSWORD);
    h.step();
    h.get_by_label(button).click_accesskit();
    let want = format!("signed in as {user}");
    wait(h, "the session", |h| {
        h.state().model().and_then(|m| m.user.as_deref()) == Some(user)
            && h.query_by_label(&want).is_some()
    });
}

/// Runs frames until `check` (asking a node, not the window) says done; `Err` carries what it
/// saw, for the failure message.
fn wait_node(
    h: &mut Harness<'_, ConfabApp>,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        h.step();
        match check() {
            Ok(()) => return,
            Err(seen) if Instant::now() > deadline => {
                panic!("timed out waiting for {what}: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A bootstrap; bob's node registered on it; alice's window registered and signed in.
struct AliceAndBob {
    h: Harness<'static, ConfabApp>,
    bob: Client,
    bob_events: broadcast::Receiver<Event>,
    _server: confab_bootstrap::Bootstrap,
}

fn alice_and_bob(rt: &tokio::runtime::Runtime, dirs: &[tempfile::TempDir]) -> AliceAndBob {
    let (server, addr) = bootstrap(rt, dirs[2].path());
    let (bob, bob_events) = node(rt, config(dirs[1].path(), Some("bob"), Some(&addr)));
    rt.block_on(bob.register("bob", PASSWORD)).unwrap();
    let mut h = window(ConfabApp::new(
        config(dirs[0].path(), Some("Alice"), Some(&addr)),
        rt.handle().clone(),
    ));
    sign_in(&mut h, "alice", "Register");
    AliceAndBob {
        h,
        bob,
        bob_events,
        _server: server,
    }
}

#[test]
fn first_run_register_see_a_peer_and_chat() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (_server, addr) = bootstrap(&rt, dirs[2].path());
    let _guard = rt.enter();

    // First run: no name yet, so the app asks for one, then starts the node.
    let alice_config = config(dirs[0].path(), None, Some(&addr));
    let mut h = window(ConfabApp::new(alice_config, rt.handle().clone()));
    h.step();
    type_into(&mut h, "Your display name", "Alice");
    h.get_by_label("Continue").click_accesskit();
    wait(&mut h, "the node", |h| h.state().model().is_some());
    assert_eq!(h.state().prefs().name.as_deref(), Some("Alice"));
    // Nobody around yet: the empty state says so.
    wait(&mut h, "the main window", |h| shown(h, "LAN peers"));
    h.get_by_label("LAN peers").click_accesskit();
    wait(&mut h, "the empty state", |h| {
        h.query_by_label_contains("No one on this LAN yet")
            .is_some()
    });

    sign_in(&mut h, "alice", "Register");

    // Bob's device connects: he appears among the peers.
    let (bob, mut bob_events) = node(&rt, config(dirs[1].path(), Some("bob"), Some(&addr)));
    let alice_addr = h.state().model().unwrap().me.as_ref().unwrap().listen_addrs[0].clone();
    rt.block_on(bob.dial(&alice_addr)).unwrap();
    wait(&mut h, "bob among the peers", |h| {
        h.query_by_label("● bob — connected directly").is_some()
    });

    // Alice opens him and writes; he gets it.
    h.get_by_label("● bob — connected directly")
        .click_accesskit();
    wait(&mut h, "the conversation", |h| shown(h, "Message"));
    type_into(&mut h, "Message", "hello bob");
    h.step();
    h.get_by_label("Send").click_accesskit();
    h.step();
    let got = expect(
        &rt,
        &mut bob_events,
        "alice's message",
        |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some("hello bob")),
    );
    let Event::Message(got) = got else {
        unreachable!()
    };
    assert_eq!(got.from.name, "Alice");
    // Her own bubble shows it, and the draft is empty again.
    wait(&mut h, "alice's bubble", |h| shown(h, "hello bob"));

    // He answers; it shows in her window.
    let alice_peer = Conversation::Peer(
        rt.block_on(bob.peers())
            .unwrap()
            .into_iter()
            .find(|p| p.name.as_deref() == Some("Alice"))
            .unwrap()
            .peer_id,
    );
    rt.block_on(bob.send(&alice_peer, "hi alice")).unwrap();
    wait(&mut h, "bob's answer", |h| shown(h, "hi alice"));

    // A broadcast to everyone nearby, from its entry at the top of the chats.
    h.get_by_label_contains("Chats").click_accesskit();
    wait(&mut h, "the broadcast entry", |h| {
        shown(h, "Everyone nearby (broadcast)")
    });
    h.get_by_label("Everyone nearby (broadcast)")
        .click_accesskit();
    wait(&mut h, "the broadcast conversation", |h| {
        h.query_by_label_contains("No messages yet").is_some()
    });
    type_into(&mut h, "Message", "hello everyone");
    h.get_by_label("Send").click_accesskit();
    h.step();
    h.step();
    expect(&rt, &mut bob_events, "the broadcast", |e| {
        matches!(e, Event::Message(m)
            if m.conversation == Conversation::Broadcast && m.text.as_deref() == Some("hello everyone"))
    });

    h.state_mut().shut_down();
    rt.block_on(bob.shutdown()).unwrap();
}

#[test]
fn a_group_is_created_and_posted_to_from_the_window() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _guard = rt.enter();
    let AliceAndBob {
        mut h,
        bob,
        mut bob_events,
        _server,
    } = alice_and_bob(&rt, &dirs);

    h.get_by_label("Groups").click_accesskit();
    wait(&mut h, "the group form", |h| shown(h, "Group name"));
    type_into(&mut h, "Group name", "team");
    type_into(&mut h, "Members (usernames)", "bob");
    h.step();
    h.get_by_label("Create group").click_accesskit();
    wait(&mut h, "the new group", |h| shown(h, "team (2 members)"));
    expect(
        &rt,
        &mut bob_events,
        "bob's invitation",
        |e| matches!(e, Event::GroupInvited { name, .. } if name == "team"),
    );

    h.get_by_label("team (2 members)").click_accesskit();
    wait(&mut h, "the group conversation", |h| shown(h, "Message"));
    type_into(&mut h, "Message", "hello team");
    h.step();
    h.get_by_label("Send").click_accesskit();
    h.step();
    let got = expect(
        &rt,
        &mut bob_events,
        "the group post",
        |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some("hello team")),
    );
    let Event::Message(got) = got else {
        unreachable!()
    };
    assert!(matches!(got.conversation, Conversation::Group(_)));
    assert_eq!(got.from.user.as_deref(), Some("alice"));
    wait(&mut h, "the post in the window", |h| shown(h, "hello team"));

    // Rename it and make bob an admin, from the members panel.
    h.get_by_label("Members (2)").click_accesskit();
    wait(&mut h, "the members panel", |h| shown(h, "New name"));
    type_into(&mut h, "New name", "crew");
    h.get_by_label("Rename").click_accesskit();
    wait(&mut h, "the new name", |h| shown(h, "crew (2 members)"));
    h.get_by_label("Make bob an admin").click_accesskit();
    wait(&mut h, "bob as admin", |h| shown(h, "Make bob a member"));
    wait_node(&mut h, "bob's node to see his new role", || {
        let groups = rt.block_on(bob.groups()).unwrap();
        match groups.first() {
            Some(g) if g.role_of("bob") == Some(confab_node::Role::Admin) => Ok(()),
            _ => Err(format!("{groups:?}")),
        }
    });
    assert_eq!(rt.block_on(bob.groups()).unwrap()[0].name, "crew");

    h.state_mut().shut_down();
    rt.block_on(bob.shutdown()).unwrap();
}

#[test]
fn a_dropped_file_is_sent_and_the_other_window_downloads_it_to_100_percent() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _guard = rt.enter();
    let mut alice = window(ConfabApp::new(
        config(dirs[0].path(), Some("alice"), None),
        rt.handle().clone(),
    ));
    let mut bob = window(ConfabApp::new(
        config(dirs[1].path(), Some("bob"), None),
        rt.handle().clone(),
    ));
    wait(&mut alice, "alice's node", |h| {
        h.state().model().is_some_and(|m| m.me.is_some())
    });
    wait(&mut bob, "bob's node", |h| {
        h.state().model().is_some_and(|m| m.me.is_some())
    });
    let bob_addr = bob
        .state()
        .model()
        .unwrap()
        .me
        .as_ref()
        .unwrap()
        .listen_addrs[0]
        .clone();
    rt.block_on(alice.state().client().unwrap().dial(&bob_addr))
        .unwrap();

    alice.get_by_label("LAN peers").click_accesskit();
    wait(&mut alice, "bob among the peers", |h| {
        shown(h, "● bob — connected directly")
    });
    alice
        .get_by_label("● bob — connected directly")
        .click_accesskit();
    wait(&mut alice, "the conversation", |h| shown(h, "Message"));

    // A 3 MiB file dropped on the window goes to the open conversation.
    let path = dirs[2].path().join("holiday.bin");
    let content: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&path, &content).unwrap();
    alice.input_mut().dropped_files.push(egui::DroppedFile {
        path: Some(path.clone()),
        name: "holiday.bin".into(),
        ..Default::default()
    });
    alice.step();
    wait(&mut alice, "the file in alice's window", |h| {
        shown(h, "📎 holiday.bin (3.0 MiB)")
    });

    bob.get_by_label("LAN peers").click_accesskit();
    wait(&mut bob, "alice among bob's peers", |h| {
        shown(h, "● alice — connected directly")
    });
    bob.get_by_label("● alice — connected directly")
        .click_accesskit();
    wait(&mut bob, "the file in bob's window", |h| {
        shown(h, "Download")
    });
    bob.get_by_label("Download").click_accesskit();
    wait(&mut bob, "the progress bar at 100 %", |h| shown(h, "100 %"));
    // Complete: saved, and it can be opened.
    wait(&mut bob, "the saved file", |h| shown(h, "Open"));
    let saved = dirs[1].path().join("downloads").join("holiday.bin");
    assert!(std::fs::read(&saved).unwrap() == content, "byte-identical");

    alice.state_mut().shut_down();
    bob.state_mut().shut_down();
}

#[test]
fn do_not_disturb_stops_notifications() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _guard = rt.enter();
    let AliceAndBob {
        mut h,
        bob,
        bob_events: _,
        _server,
    } = alice_and_bob(&rt, &dirs);
    // The window is in the background from now on.
    h.input_mut().focused = false;
    let to_alice = Conversation::User("alice".into());
    let chat_has = |h: &Harness<'_, ConfabApp>, text: &str| {
        h.state().model().is_some_and(|m| {
            m.chats
                .get("user:bob")
                .is_some_and(|c| c.messages.iter().any(|x| x.text.as_deref() == Some(text)))
        })
    };

    // Without do-not-disturb, a message in the background raises a notification.
    rt.block_on(bob.send(&to_alice, "first")).unwrap();
    wait(&mut h, "the first message", |h| chat_has(h, "first"));
    let notices = h.state().model().unwrap().notices.clone();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].body, "first");

    // With it, none.
    h.get_by_label("Do not disturb").click_accesskit();
    wait(&mut h, "do-not-disturb on", |h| {
        h.state().model().is_some_and(|m| m.settings.dnd)
    });
    let client = h.state().client().unwrap();
    wait_node(&mut h, "the node to have do-not-disturb on", || {
        let settings = rt.block_on(client.settings()).unwrap();
        if settings.dnd {
            Ok(())
        } else {
            Err(format!("{settings:?}"))
        }
    });
    rt.block_on(bob.send(&to_alice, "second")).unwrap();
    wait(&mut h, "the second message", |h| chat_has(h, "second"));
    for _ in 0..10 {
        h.step();
    }
    assert_eq!(
        h.state().model().unwrap().notices.len(),
        1,
        "no new notification"
    );

    h.state_mut().shut_down();
    rt.block_on(bob.shutdown()).unwrap();
}

#[test]
fn a_long_conversation_lays_out_only_what_is_visible() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let _guard = rt.enter();
    let mut h = window(ConfabApp::new(
        config(dir.path(), Some("alice"), None),
        rt.handle().clone(),
    ));
    wait(&mut h, "the node", |h| {
        h.state().model().is_some_and(|m| m.me.is_some())
    });
    let chat = Conversation::Peer("12D3KooWQuek19zNCNkaNawuzoXaNkJzX4RRcDJ9veVpcXbbWetR".into());
    let messages = confab_app::model::sample_messages(&chat, 10_000);
    h.state_mut().model_mut().unwrap().chat(&chat).messages = messages;
    h.state_mut().open(chat);
    wait(&mut h, "the last message", |h| {
        shown(h, "message number 9999")
    });
    for _ in 0..5 {
        h.step();
    }
    let rows = h.state().rows_laid_out();
    assert!((1..=60).contains(&rows), "{rows} rows laid out of 10,000");
    assert!(
        !shown(&h, "message number 10"),
        "a row far above is not laid out"
    );
    h.state_mut().shut_down();
}

#[test]
fn the_profile_is_edited_and_people_are_found_and_added() {
    let rt = runtime();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _guard = rt.enter();
    let AliceAndBob {
        mut h,
        bob,
        mut bob_events,
        _server,
    } = alice_and_bob(&rt, &dirs);

    // The profile editor.
    h.get_by_label("Profile…").click_accesskit();
    wait(&mut h, "the profile editor", |h| shown(h, "Status line"));
    for _ in 0..5 {
        h.step();
    }
    type_into(&mut h, "Status line", "down the rabbit hole");
    h.get_by_label("Save profile").click_accesskit();
    wait_node(&mut h, "the new status line", || {
        let profile = rt.block_on(bob.profile_get("alice")).unwrap();
        if profile.signature == "down the rabbit hole" {
            Ok(())
        } else {
            Err(format!("{profile:?}"))
        }
    });

    // Finding bob and asking him to be friends.
    h.get_by_label("Friends").click_accesskit();
    wait(&mut h, "the search field", |h| shown(h, "Find people"));
    type_into(&mut h, "Find people", "bo");
    h.get_by_label("Search").click_accesskit();
    wait(&mut h, "bob in the results", |h| shown(h, "Add bob"));
    h.get_by_label("Add bob").click_accesskit();
    h.step();
    h.step();
    expect(
        &rt,
        &mut bob_events,
        "alice's friend request",
        |e| matches!(e, Event::FriendRequest { from } if from == "alice"),
    );

    h.state_mut().shut_down();
    rt.block_on(bob.shutdown()).unwrap();
}
