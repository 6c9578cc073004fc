//! The JSON-RPC contract for conversations (docs/rpc.md): groups, mark_read, recall and delete,
//! do-not-disturb, mute and blocking, with their notifications and error codes. A real bootstrap
//! and real nodes in-process on loopback (mDNS off), spoken to through `confab_node::rpc::serve`.

use confab_tests::chat::*;
use confab_tests::nodes::node;
use confab_tests::rpc::Rpc;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_receipts_recall_and_settings_over_json_rpc() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut rpcs = Vec::new();
    for (dir, name) in dirs.iter().zip(["ann", "ben", "cal"]) {
        let (client, _) = node(dir.path(), name, &server.addr).await;
        let mut rpc = Rpc::serve(client);
        rpc.ok("register", json!({"user": name, "password": PASSWORD}))
            .await;
        rpcs.push(rpc);
    }
    let [mut ann, mut ben, mut cal] = <[Rpc; 3]>::try_from(rpcs).ok().unwrap();

    // Groups.
    let created = ann
        .ok("group_create", json!({"name": "team", "members": ["ben"]}))
        .await;
    let group = created["group"].as_str().unwrap().to_owned();
    assert_eq!(
        created["roster"]["members"][0],
        json!({"user": "ann", "role": "owner"})
    );
    let invited = ben.note("group_invited", |p| p["group"] == group).await;
    assert_eq!(invited["name"], "team");
    let groups = ben.ok("groups", json!({})).await;
    assert_eq!(groups[0]["role"], "member");
    assert_eq!(groups[0]["members"], 2);
    assert_eq!(
        ben.code("group_invite", json!({"group": group, "user": "cal"}))
            .await,
        -32066,
        "members do not invite"
    );
    ann.ok(
        "group_set_role",
        json!({"group": group, "user": "ben", "role": "admin"}),
    )
    .await;
    ben.note("group_updated", |p| p["group"] == group).await;
    ben.ok("group_invite", json!({"group": group, "user": "cal"}))
        .await;
    cal.note("group_invited", |p| p["group"] == group).await;
    ann.note("group_member_added", |p| p["user"] == "cal").await;
    let members = cal.ok("group_members", json!({"group": group})).await;
    assert_eq!(members.as_array().unwrap().len(), 3);
    let to_group = format!("group:{group}");
    ann.ok("send", json!({"to": to_group, "text": "hello team"}))
        .await;
    let m = cal.note("message", |p| p["text"] == "hello team").await;
    assert_eq!(m["conversation"], to_group);
    assert_eq!(m["notify"], true);

    // Read receipts: ben reads ann's direct message; ann sees `read`.
    let sent = ann
        .ok("send", json!({"to": "user:ben", "text": "read me"}))
        .await;
    let id = sent["id"].as_str().unwrap().to_owned();
    ben.note("message", |p| p["id"] == id).await;
    assert_eq!(
        ben.ok("mark_read", json!({"conversation": "user:ann"}))
            .await,
        json!({"marked": 1})
    );
    ann.note("delivery", |p| p["id"] == id && p["state"] == "read")
        .await;

    // Recall: only the author; the receiver's copy becomes recalled.
    assert_eq!(ben.code("recall", json!({"id": id})).await, -32066);
    ann.ok("recall", json!({"id": id})).await;
    ben.note("recalled", |p| p["id"] == id).await;
    let history = ben.ok("history", json!({"with": "user:ann"})).await;
    let copy = history
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap();
    assert_eq!(copy["recalled"], true);
    assert_eq!(copy["text"], json!(null));
    // Delete: mine only.
    ben.ok("delete", json!({"id": id})).await;
    ben.note("deleted", |p| p["id"] == id).await;
    assert_eq!(
        ben.ok("history", json!({"with": "user:ann"})).await,
        json!([])
    );
    assert_eq!(
        ann.ok("history", json!({"with": "user:ben"})).await[0]["id"],
        id
    );

    // Settings: dnd and mute silence alerts; block refuses.
    let s = cal.ok("dnd", json!({"enabled": true})).await;
    assert_eq!(s["dnd"], true);
    ann.ok("send", json!({"to": "user:cal", "text": "quiet please"}))
        .await;
    let m = cal.note("message", |p| p["text"] == "quiet please").await;
    assert_eq!(m["notify"], false);
    cal.ok("dnd", json!({"enabled": false})).await;
    let s = cal
        .ok("mute", json!({"conversation": to_group, "muted": true}))
        .await;
    assert_eq!(s["muted"], json!([to_group]));
    ann.ok("send", json!({"to": to_group, "text": "muted here"}))
        .await;
    let m = cal.note("message", |p| p["text"] == "muted here").await;
    assert_eq!(m["notify"], false);
    let s = cal.ok("block", json!({"target": "user:ann"})).await;
    assert_eq!(s["blocked"], json!(["user:ann"]));
    assert_eq!(cal.ok("blocked", json!({})).await, json!(["user:ann"]));
    assert_eq!(
        cal.code("block", json!({"target": "broadcast"})).await,
        -32602
    );
    let refused = ann
        .ok("send", json!({"to": "user:cal", "text": "blocked?"}))
        .await;
    ann.note("delivery", |p| {
        p["id"] == refused["id"] && p["state"] == "failed"
    })
    .await;
    assert_eq!(ann.code("friend_add", json!({"user": "cal"})).await, -32066);
    cal.ok("unblock", json!({"target": "user:ann"})).await;

    // Leaving: the group is gone from the leaver's list.
    cal.ok("group_leave", json!({"group": group})).await;
    assert_eq!(cal.ok("groups", json!({})).await, json!([]));
    assert_eq!(
        cal.code("send", json!({"to": to_group, "text": "x"})).await,
        -32064
    );

    server.bootstrap.shutdown().await;
}
