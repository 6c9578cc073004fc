//! The account's settings end to end: do-not-disturb and mute decide `notify`, blocking keeps a
//! user's messages, friend requests and invites (and a group's messages) away, and all of it is
//! the same on every device of the account. A real bootstrap and real nodes in-process on
//! loopback (mDNS off).

use std::time::Duration;

use confab_node::{
    Client, Conversation, DeliveryState, Event, FriendError, GroupError, Message, Settings,
};
use confab_tests::chat::*;
use confab_tests::nodes::node;
use tokio::sync::broadcast;
use tokio::time::timeout;

fn group(id: &str) -> Conversation {
    Conversation::Group(id.into())
}

/// Waits until a device hears of settings for which `pred` holds.
async fn expect_settings(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    pred: impl Fn(&Settings) -> bool,
) {
    expect(events, what, |e| matches!(e, Event::Settings(s) if pred(s))).await;
}

/// Sends `text` from `from` to `to` and returns it as `to`'s device shows it.
async fn exchange(
    from: &Client,
    to: &Conversation,
    events: &mut broadcast::Receiver<Event>,
    text: &str,
) -> Message {
    from.send(to, text).await.unwrap();
    expect_message(events, text).await
}

/// No message arrives within `wait`.
async fn nothing_arrives(events: &mut broadcast::Receiver<Event>, wait: Duration) {
    let got = timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(Event::Message(m)) => return Some(m),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await;
    assert!(matches!(got, Err(_) | Ok(None)), "arrived: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_not_disturb_and_mute_silence_alerts_on_every_device() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ann, _) = node(dirs[0].path(), "ann", &server.addr).await;
    ann.register("ann", PASSWORD).await.unwrap();
    let (ben, mut ben_events) = node(dirs[1].path(), "ben", &server.addr).await;
    ben.register("ben", PASSWORD).await.unwrap();
    let (tablet, mut tablet_events) = node(dirs[2].path(), "ben's tablet", &server.addr).await;
    tablet.login("ben", PASSWORD).await.unwrap();
    let to_ben = Conversation::User("ben".into());

    let m = exchange(&ann, &to_ben, &mut ben_events, "alert me").await;
    assert!(m.notify);

    // Do-not-disturb on the tablet: the phone hears of it, and stays silent.
    let s = tablet.set_dnd(true).await.unwrap();
    assert!(s.dnd);
    expect_settings(&mut ben_events, "dnd on", |s| s.dnd).await;
    let m = exchange(&ann, &to_ben, &mut ben_events, "quietly").await;
    assert!(!m.notify, "{m:?}");
    let m = expect_message(&mut tablet_events, "quietly").await;
    assert!(!m.notify, "{m:?}");

    // Off again, but ann's conversation muted: silent for ann, not for others.
    ben.set_dnd(false).await.unwrap();
    let ann_chat = Conversation::User("ann".into());
    let s = ben.set_muted(&ann_chat, true).await.unwrap();
    assert_eq!(s.muted, std::slice::from_ref(&ann_chat));
    expect_settings(&mut tablet_events, "ann muted", |s| {
        !s.dnd && s.muted.contains(&ann_chat)
    })
    .await;
    let m = exchange(&ann, &to_ben, &mut tablet_events, "muted now").await;
    assert!(!m.notify, "{m:?}");
    ben.set_muted(&ann_chat, false).await.unwrap();
    expect_settings(&mut tablet_events, "ann unmuted", |s| s.muted.is_empty()).await;
    let m = exchange(&ann, &to_ben, &mut tablet_events, "loud again").await;
    assert!(m.notify, "{m:?}");

    // The settings survive a restart of a device.
    tablet.set_dnd(true).await.unwrap();
    expect_settings(&mut ben_events, "dnd on again", |s| s.dnd).await;
    ben.shutdown().await.unwrap();
    let (ben, _) = node(dirs[1].path(), "ben", &server.addr).await;
    assert!(ben.settings().await.unwrap().dnd);

    for client in [ann, ben, tablet] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_users_and_groups_are_kept_away_on_every_device() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ann, mut ann_events) = node(dirs[0].path(), "ann", &server.addr).await;
    ann.register("ann", PASSWORD).await.unwrap();
    let (ben, mut ben_events) = node(dirs[1].path(), "ben", &server.addr).await;
    ben.register("ben", PASSWORD).await.unwrap();
    let (tablet, mut tablet_events) = node(dirs[2].path(), "ben's tablet", &server.addr).await;
    tablet.login("ben", PASSWORD).await.unwrap();
    let (cal, mut cal_events) = node(dirs[3].path(), "cal", &server.addr).await;
    cal.register("cal", PASSWORD).await.unwrap();
    let to_ben = Conversation::User("ben".into());
    let ann_user = Conversation::User("ann".into());

    // ben blocks ann on his phone; his tablet knows it too.
    let s = ben.set_blocked(&ann_user, true).await.unwrap();
    assert_eq!(s.blocked, std::slice::from_ref(&ann_user));
    expect_settings(&mut tablet_events, "ann blocked", |s| {
        s.blocked.contains(&ann_user)
    })
    .await;
    assert_eq!(
        tablet.settings().await.unwrap().blocked,
        std::slice::from_ref(&ann_user)
    );

    // ann's message is refused for good; no device of ben's shows it.
    let id = ann.send(&to_ben, "can you hear me?").await.unwrap();
    expect(
        &mut ann_events,
        "the refusal",
        |e| matches!(e, Event::Delivery { id: got, state: DeliveryState::Failed } if *got == id),
    )
    .await;
    // Her friend request and her invitation are refused too.
    assert!(matches!(
        ann.friend_add("ben").await,
        Err(FriendError::NotAllowed(_))
    ));
    assert!(matches!(
        ann.group_create("with ben", &["ben", "cal"]).await,
        Err(GroupError::NotAllowed(_))
    ));
    nothing_arrives(&mut ben_events, Duration::from_millis(300)).await;
    nothing_arrives(&mut tablet_events, Duration::from_millis(10)).await;
    assert!(ben.history(&ann_user, 10).await.unwrap().is_empty());

    // Unblocked (on the tablet): her next message arrives on both devices.
    tablet.set_blocked(&ann_user, false).await.unwrap();
    expect_settings(&mut ben_events, "ann unblocked", |s| s.blocked.is_empty()).await;
    exchange(&ann, &to_ben, &mut ben_events, "there you are").await;
    expect_message(&mut tablet_events, "there you are").await;

    // A group ben blocks: its messages reach cal, not ben.
    let team = ann.group_create("team", &["ben", "cal"]).await.unwrap();
    expect(
        &mut ben_events,
        "the invitation",
        |e| matches!(e, Event::GroupInvited { group, .. } if *group == team.id),
    )
    .await;
    exchange(&ann, &group(&team.id), &mut ben_events, "before the block").await;
    ben.set_blocked(&group(&team.id), true).await.unwrap();
    expect_settings(&mut tablet_events, "the group blocked", |s| {
        s.blocked.contains(&group(&team.id))
    })
    .await;
    exchange(&ann, &group(&team.id), &mut cal_events, "after the block").await;
    nothing_arrives(&mut ben_events, Duration::from_millis(300)).await;
    assert_eq!(
        texts(&ben.history(&group(&team.id), 10).await.unwrap()),
        ["before the block"]
    );

    for client in [ann, ben, tablet, cal] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}
