//! The screens. Each draws from the [`Model`](crate::model::Model) and turns clicks into
//! requests on [`Running`]; nothing here waits. Every input has a visible label tied to it, so
//! screen readers (and the UI tests, which find widgets by their accessible labels) can name it.

use confab_node::{
    Conversation, DeliveryState, FileHoldState, Message, MessageId, PeerSource, Role,
};
use egui::RichText;

use crate::app::{Running, Tab};
use crate::model::Transfer;
use crate::prefs::Prefs;

/// The first-run screen: pick a display name. Returns it once chosen.
pub fn first_run(ui: &mut egui::Ui, name: &mut String) -> Option<String> {
    let mut chosen = None;
    egui::CentralPanel::default().show(ui, |ui| {
        ui.vertical_centered(|ui| {
            ui.add_space(60.0);
            ui.heading("Welcome to Confab");
            ui.label("Chat with the people around you and with your friends anywhere.");
            ui.add_space(20.0);
            let label = ui.label("Your display name");
            let edit = ui
                .add(egui::TextEdit::singleline(name).hint_text("e.g. Ann"))
                .labelled_by(label.id);
            let ok = !name.trim().is_empty();
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.add_enabled(ok, egui::Button::new("Continue")).clicked() || (ok && enter) {
                chosen = Some(name.trim().to_owned());
            }
        });
    });
    chosen
}

/// The main window while the node runs.
pub fn running(ui: &mut egui::Ui, app: &mut Running, prefs: &mut Prefs) {
    top_bar(ui, app, prefs);
    status_bar(ui, app);
    egui::Panel::left("sidebar")
        .default_size(260.0)
        .show(ui, |ui| sidebar(ui, app));
    egui::CentralPanel::default().show(ui, |ui| match app.view.selected.clone() {
        Some(c) => conversation(ui, app, prefs, &c),
        None => {
            ui.centered_and_justified(|ui| {
                ui.label("Pick a conversation, or someone from LAN peers or Friends.");
            });
        }
    });
    image_viewer(ui, app);
    dropped_files(ui, app);
}

fn top_bar(ui: &mut egui::Ui, app: &mut Running, prefs: &mut Prefs) {
    egui::Panel::top("top").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.heading("Confab");
            if let Some(me) = &app.model.me {
                ui.label(RichText::new(&me.name).strong());
            }
            if let Some(user) = &app.model.user {
                ui.label(format!("signed in as {user}"));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let mut light = prefs.light;
                if ui.checkbox(&mut light, "Light theme").changed() {
                    prefs.light = light;
                }
                let mut dnd = app.model.settings.dnd;
                let signed_in = app.model.user.is_some();
                let toggle = ui
                    .add_enabled(signed_in, egui::Checkbox::new(&mut dnd, "Do not disturb"))
                    .on_disabled_hover_text("Sign in to use do-not-disturb on all your devices");
                if toggle.changed() {
                    app.set_dnd(dnd);
                }
            });
        });
        if let Some(banner) = app.model.banner.clone() {
            ui.horizontal(|ui| {
                ui.label(RichText::new(format!("While you were away: {banner}")).strong());
                if ui.button("Dismiss").clicked() {
                    app.model.banner = None;
                }
            });
        }
    });
}

fn status_bar(ui: &mut egui::Ui, app: &mut Running) {
    egui::Panel::bottom("status").show(ui, |ui| {
        ui.horizontal(|ui| match &app.model.status {
            Some(Ok(note)) if !note.is_empty() => {
                ui.label(note.as_str());
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
            }
            _ => {
                let peers = app.model.peers.values().filter(|p| p.connected).count();
                ui.label(format!("{peers} peers connected"));
            }
        });
    });
}

fn sidebar(ui: &mut egui::Ui, app: &mut Running) {
    account(ui, app);
    ui.separator();
    ui.horizontal_wrapped(|ui| {
        let unread: usize = app.model.chats.values().map(|c| c.unread).sum();
        let chats = if unread > 0 {
            format!("Chats ({unread})")
        } else {
            "Chats".to_owned()
        };
        for (tab, label) in [
            (Tab::Chats, chats),
            (Tab::Friends, "Friends".to_owned()),
            (Tab::Groups, "Groups".to_owned()),
            (Tab::Peers, "LAN peers".to_owned()),
        ] {
            if ui.selectable_label(app.view.tab == tab, label).clicked() {
                app.view.tab = tab;
            }
        }
    });
    ui.separator();
    egui::ScrollArea::vertical().show(ui, |ui| match app.view.tab {
        Tab::Chats => chats(ui, app),
        Tab::Friends => friends(ui, app),
        Tab::Groups => groups(ui, app),
        Tab::Peers => peers(ui, app),
    });
}

fn account(ui: &mut egui::Ui, app: &mut Running) {
    if let Some(user) = app.model.user.clone() {
        ui.horizontal(|ui| {
            ui.label(format!("Account: {user}"));
            if ui.button("Profile…").clicked() {
                app.edit_profile();
            }
            if ui.button("Sign out").clicked() {
                app.sign_out();
            }
        });
        profile_editor(ui, app);
        if app.view.deleting_account {
            ui.horizontal(|ui| {
                let label = ui.label("Password to delete");
                ui.add(
                    egui::TextEdit::singleline(&mut app.view.delete_password)
                        .password(true)
                        .desired_width(100.0),
                )
                .labelled_by(label.id);
                if ui.button("Delete for good").clicked() {
                    app.delete_account();
                }
                if ui.button("Keep it").clicked() {
                    app.view.deleting_account = false;
                }
            });
        } else if ui.small_button("Delete account…").clicked() {
            app.view.deleting_account = true;
        }
        return;
    }
    egui::CollapsingHeader::new("Account")
        .default_open(true)
        .show(ui, |ui| {
            let label = ui.label("Username");
            ui.text_edit_singleline(&mut app.view.username)
                .labelled_by(label.id);
            let label = ui.label("Password");
            ui.add(egui::TextEdit::singleline(&mut app.view.password).password(true))
                .labelled_by(label.id);
            let label = ui.label("Server address (optional)");
            ui.add(
                egui::TextEdit::singleline(&mut app.view.bootstrap)
                    .hint_text("found on the LAN, or /ip4/…/p2p/…"),
            )
            .labelled_by(label.id);
            let ready = !app.view.username.trim().is_empty() && !app.view.password.is_empty();
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(ready, egui::Button::new("Sign in"))
                    .clicked()
                {
                    app.sign_in(false);
                }
                if ui
                    .add_enabled(ready, egui::Button::new("Register"))
                    .clicked()
                {
                    app.sign_in(true);
                }
            });
        });
}

/// The profile editor window: display name, status line, avatar.
fn profile_editor(ui: &mut egui::Ui, app: &mut Running) {
    if !app.view.editing_profile {
        return;
    }
    if let Some(p) = app.model.profile.take() {
        // Freshly read: fill the fields once, unless the user has started typing.
        if !app.view.profile_edited {
            app.view.nickname = p.nickname.clone();
            app.view.signature = p.signature.clone();
        }
        app.model.profile = None;
    }
    let mut open = true;
    let mut save = false;
    egui::Window::new("Your profile")
        .open(&mut open)
        .collapsible(false)
        .show(ui.ctx(), |ui| {
            let label = ui.label("Display name");
            let edited = ui
                .text_edit_singleline(&mut app.view.nickname)
                .labelled_by(label.id)
                .changed();
            app.view.profile_edited |= edited;
            let label = ui.label("Status line");
            let edited = ui
                .text_edit_singleline(&mut app.view.signature)
                .labelled_by(label.id)
                .changed();
            app.view.profile_edited |= edited;
            let label = ui.label("Avatar picture (a file path; empty keeps it)");
            ui.text_edit_singleline(&mut app.view.avatar)
                .labelled_by(label.id);
            if ui.button("Save profile").clicked() {
                save = true;
            }
        });
    if save {
        app.save_profile();
        app.view.editing_profile = false;
    } else if !open {
        app.view.editing_profile = false;
    }
}

fn chats(ui: &mut egui::Ui, app: &mut Running) {
    let rows: Vec<(Conversation, String, String, usize)> = app
        .model
        .chats_by_recency()
        .into_iter()
        .map(|c| {
            (
                c.conversation.clone(),
                app.model.title(&c.conversation),
                c.preview(),
                c.unread,
            )
        })
        .collect();
    let everyone = Conversation::Broadcast;
    if !rows.iter().any(|r| r.0 == everyone)
        && ui
            .selectable_label(
                app.view.selected.as_ref() == Some(&everyone),
                app.model.title(&everyone),
            )
            .clicked()
    {
        app.open(everyone);
    }
    if rows.is_empty() {
        ui.label("No conversations yet. Say hello to someone from LAN peers or Friends.");
    }
    for (c, title, preview, unread) in rows {
        let selected = app.view.selected.as_ref() == Some(&c);
        let badge = if unread > 0 {
            format!("  ({unread} unread)")
        } else {
            String::new()
        };
        if ui
            .selectable_label(selected, format!("{title}{badge}\n{preview}"))
            .clicked()
        {
            app.open(c);
        }
    }
}

fn friends(ui: &mut egui::Ui, app: &mut Running) {
    if app.model.user.is_none() {
        ui.label("Sign in to see your friends.");
        return;
    }
    for from in app.model.friends.incoming.clone() {
        ui.horizontal(|ui| {
            ui.label(format!("{from} wants to be friends"));
            if ui.button("Accept").clicked() {
                app.friend_accept(from.clone());
            }
            if ui.button("Decline").clicked() {
                app.friend_remove(from.clone());
            }
        });
    }
    ui.horizontal(|ui| {
        let label = ui.label("Add a friend");
        ui.add(egui::TextEdit::singleline(&mut app.view.friend).desired_width(110.0))
            .labelled_by(label.id);
        if ui.button("Add").clicked() && !app.view.friend.trim().is_empty() {
            let user = std::mem::take(&mut app.view.friend).trim().to_owned();
            app.friend_add(user);
        }
    });
    ui.horizontal(|ui| {
        let label = ui.label("Find people");
        ui.add(egui::TextEdit::singleline(&mut app.view.search).desired_width(110.0))
            .labelled_by(label.id);
        if ui.button("Search").clicked() && !app.view.search.trim().is_empty() {
            app.search_users();
        }
    });
    for found in app.model.found.clone() {
        let me = app.model.user.as_deref() == Some(found.user.as_str());
        let known = app
            .model
            .friends
            .friends
            .iter()
            .any(|f| f.user == found.user);
        ui.horizontal(|ui| {
            let dot = if found.online { "●" } else { "○" };
            ui.label(format!("{dot} {} ({})", found.nickname, found.user));
            if !me && !known && ui.button(format!("Add {}", found.user)).clicked() {
                app.friend_add(found.user.clone());
            }
        });
    }
    for user in app.model.friends.outgoing.clone() {
        ui.label(RichText::new(format!("asked {user}, waiting")).weak());
    }
    let friends = app.model.friends.friends.clone();
    if friends.is_empty() {
        ui.label("No friends yet: add someone by their username.");
    }
    for friend in friends {
        let c = Conversation::User(friend.user.clone());
        let dot = if friend.online { "●" } else { "○" };
        let name = if friend.nickname.is_empty() || friend.nickname == friend.user {
            friend.user.clone()
        } else {
            format!("{} ({})", friend.nickname, friend.user)
        };
        let response = ui.selectable_label(
            app.view.selected.as_ref() == Some(&c),
            format!("{dot} {name}"),
        );
        if response.clicked() {
            app.open(c.clone());
        }
        response.context_menu(|ui| {
            if ui.button("Remove friend").clicked() {
                app.friend_remove(friend.user.clone());
                ui.close();
            }
            if ui.button("Block").clicked() {
                app.set_blocked(&c, true);
                ui.close();
            }
        });
    }
    let blocked = app.model.settings.blocked.clone();
    if !blocked.is_empty() {
        ui.separator();
        ui.label("Blocked");
        for target in blocked {
            ui.horizontal(|ui| {
                ui.label(target.to_string());
                if ui.button("Unblock").clicked() {
                    app.set_blocked(&target, false);
                }
            });
        }
    }
}

fn groups(ui: &mut egui::Ui, app: &mut Running) {
    if app.model.user.is_none() {
        ui.label("Sign in to see your groups.");
        return;
    }
    let groups = app.model.groups.clone();
    if groups.is_empty() {
        ui.label("No groups yet.");
    }
    for g in groups {
        let c = Conversation::Group(g.id.clone());
        if ui
            .selectable_label(
                app.view.selected.as_ref() == Some(&c),
                format!("{} ({} members)", g.name, g.members.len()),
            )
            .clicked()
        {
            app.open(c);
        }
    }
    ui.separator();
    ui.label(RichText::new("New group").strong());
    let label = ui.label("Group name");
    ui.text_edit_singleline(&mut app.view.group_name)
        .labelled_by(label.id);
    let label = ui.label("Members (usernames)");
    ui.add(egui::TextEdit::singleline(&mut app.view.group_members).hint_text("bob, carol"))
        .labelled_by(label.id);
    if ui
        .add_enabled(
            !app.view.group_name.trim().is_empty(),
            egui::Button::new("Create group"),
        )
        .clicked()
    {
        app.group_create();
    }
}

fn peers(ui: &mut egui::Ui, app: &mut Running) {
    let peers: Vec<_> = app
        .model
        .peers
        .values()
        .filter(|p| p.connected)
        .cloned()
        .collect();
    if peers.is_empty() {
        ui.label("No one on this LAN yet — is the other device on the same network?");
    }
    for p in peers {
        let c = Conversation::Peer(p.peer_id.clone());
        let how = match p.source {
            PeerSource::Mdns => "on this LAN",
            PeerSource::Dial => "connected directly",
            PeerSource::Bootstrap => "through the server",
        };
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| p.peer_id.chars().take(12).collect());
        if ui
            .selectable_label(
                app.view.selected.as_ref() == Some(&c),
                format!("● {name} — {how}"),
            )
            .clicked()
        {
            app.open(c);
        }
    }
}

/// The lock: which suite encrypts the conversation, or a menu to encrypt it (for good).
fn encryption(ui: &mut egui::Ui, app: &mut Running, c: &Conversation) {
    match app.model.encryption.get(&c.to_string()) {
        Some((suite, epoch)) => {
            let label = ui.label("🔒 End-to-end encrypted");
            let joined = match epoch {
                Some(e) => format!("this device is in it (epoch {e})"),
                None => "this device is joining it".to_owned(),
            };
            label.on_hover_text(format!("{suite}\n{joined}"));
        }
        None => {
            ui.menu_button("🔓 Encrypt…", |ui| {
                ui.label("Every message from now on, for good:");
                for suite in confab_node::Suite::ALL {
                    let hint = match suite {
                        confab_node::Suite::X25519Aes128Gcm => "X25519, AES-128-GCM (default)",
                        confab_node::Suite::X25519ChaCha20Poly1305 => {
                            "X25519, ChaCha20-Poly1305 (CPUs without AES)"
                        }
                        confab_node::Suite::P256Aes128Gcm => "P-256, AES-128-GCM",
                    };
                    if ui.button(hint).on_hover_text(suite.name()).clicked() {
                        app.encrypt(c, suite);
                        ui.close();
                    }
                }
            });
        }
    }
}

fn conversation(ui: &mut egui::Ui, app: &mut Running, prefs: &mut Prefs, c: &Conversation) {
    let title = app.model.title(c);
    ui.horizontal(|ui| {
        ui.heading(&title);
        if app.model.user.is_some() && !matches!(c, Conversation::Peer(_)) {
            let mut muted = app.model.settings.muted.contains(c);
            if ui.checkbox(&mut muted, "Mute").changed() {
                app.set_muted(c, muted);
            }
        }
        if app.model.user.is_some() && !matches!(c, Conversation::Peer(_)) {
            encryption(ui, app, c);
        }
        if app.model.user.is_some() && matches!(c, Conversation::User(_)) {
            let blocked = app.model.settings.blocked.contains(c);
            let label = if blocked { "Unblock" } else { "Block" };
            if ui.button(label).clicked() {
                app.set_blocked(c, !blocked);
            }
        }
    });
    if let Conversation::Group(id) = c {
        group_members(ui, app, id);
    }
    ui.separator();
    // The composer at the bottom, the messages above it.
    egui::Panel::bottom("composer").show(ui, |ui| composer(ui, app, prefs, c));
    // Borrowed out of the model for the frame (not copied: a conversation may hold 10,000).
    let key = c.to_string();
    let messages = app
        .model
        .chats
        .get_mut(&key)
        .map(|chat| std::mem::take(&mut chat.messages))
        .unwrap_or_default();
    if messages.is_empty() {
        ui.label("No messages yet. Say hello!");
    }
    message_rows(ui, app, &messages);
    if let Some(chat) = app.model.chats.get_mut(&key) {
        chat.messages = messages;
    }
}

/// Height assumed for a message not laid out yet.
const ROW_ESTIMATE: f32 = 64.0;
/// Rows beyond the visible part that are laid out too (smooth scrolling).
const ROW_OVERSCAN: f32 = 300.0;

/// The messages, of which only the rows in (or near) the visible part are laid out each frame:
/// the others take the height they had when last shown (an estimate before), so a conversation
/// of 10,000 messages costs a screenful of layout per frame.
fn message_rows(ui: &mut egui::Ui, app: &mut Running, messages: &[Message]) {
    let heights: Vec<f32> = messages
        .iter()
        .map(|m| app.view.heights.get(&m.id).copied().unwrap_or(ROW_ESTIMATE))
        .collect();
    let total: f32 = heights.iter().sum();
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .stick_to_bottom(true)
        .show_viewport(ui, |ui, viewport| {
            let origin = ui.max_rect().min;
            let width = ui.available_width();
            ui.set_height(total);
            let mut y = 0.0;
            let mut laid_out = 0;
            for (m, height) in messages.iter().zip(&heights) {
                let (start, end) = (y, y + height);
                y = end;
                if end < viewport.min.y - ROW_OVERSCAN || start > viewport.max.y + ROW_OVERSCAN {
                    continue;
                }
                laid_out += 1;
                let rect = egui::Rect::from_min_size(
                    origin + egui::vec2(0.0, start),
                    egui::vec2(width, *height),
                );
                let mut row = ui.new_child(egui::UiBuilder::new().max_rect(rect));
                bubble(&mut row, app, m);
                let used = row.min_rect().height();
                if (used - height).abs() > 0.5 {
                    app.view.heights.insert(m.id, used);
                    ui.ctx().request_repaint();
                }
            }
            app.view.rows_laid_out = laid_out;
        });
}

fn group_members(ui: &mut egui::Ui, app: &mut Running, id: &str) {
    let Some(group) = app.model.groups.iter().find(|g| g.id == id).cloned() else {
        return;
    };
    let me = app.model.user.clone().unwrap_or_default();
    let my_role = group.role_of(&me);
    let manage = matches!(my_role, Some(Role::Owner | Role::Admin));
    egui::CollapsingHeader::new(format!("Members ({})", group.members.len())).show(ui, |ui| {
        for member in &group.members {
            ui.horizontal(|ui| {
                ui.label(format!("{} — {:?}", member.user, member.role).to_lowercase());
                let removable = member.user != me
                    && (my_role == Some(Role::Owner)
                        || (my_role == Some(Role::Admin) && member.role == Role::Member));
                if removable && ui.button(format!("Remove {}", member.user)).clicked() {
                    app.group_remove(group.id.clone(), member.user.clone());
                }
            });
        }
        if my_role == Some(Role::Owner) {
            for member in group.members.iter().filter(|m| m.user != me) {
                let (label, role) = match member.role {
                    Role::Admin => (format!("Make {} a member", member.user), Role::Member),
                    _ => (format!("Make {} an admin", member.user), Role::Admin),
                };
                if ui.small_button(label).clicked() {
                    app.group_set_role(group.id.clone(), member.user.clone(), role);
                }
            }
        }
        if manage {
            ui.horizontal(|ui| {
                let label = ui.label("New name");
                ui.add(egui::TextEdit::singleline(&mut app.view.rename).desired_width(120.0))
                    .labelled_by(label.id);
                if ui.button("Rename").clicked() && !app.view.rename.trim().is_empty() {
                    let name = std::mem::take(&mut app.view.rename).trim().to_owned();
                    app.group_rename(group.id.clone(), name);
                }
            });
            ui.horizontal(|ui| {
                let label = ui.label("Invite");
                ui.add(egui::TextEdit::singleline(&mut app.view.invite).desired_width(120.0))
                    .labelled_by(label.id);
                if ui.button("Send invite").clicked() && !app.view.invite.trim().is_empty() {
                    let user = std::mem::take(&mut app.view.invite).trim().to_owned();
                    app.group_invite(group.id.clone(), user);
                }
            });
        }
        if ui.button("Leave group").clicked() {
            app.group_leave(group.id.clone());
        }
        let target = Conversation::Group(group.id.clone());
        let blocked = app.model.settings.blocked.contains(&target);
        let label = if blocked {
            "Unblock group"
        } else {
            "Block group"
        };
        if ui.button(label).clicked() {
            app.set_blocked(&target, !blocked);
        }
    });
}

fn composer(ui: &mut egui::Ui, app: &mut Running, prefs: &mut Prefs, c: &Conversation) {
    let key = c.to_string();
    let mut draft = prefs.drafts.get(&key).cloned().unwrap_or_default();
    let mut send = false;
    ui.horizontal(|ui| {
        if ui.button("Attach…").clicked() {
            app.attach(c);
        }
        let label = ui.label("Message");
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut draft)
                    .hint_text("Write a message")
                    .desired_width(ui.available_width() - 70.0),
            )
            .labelled_by(label.id);
        if edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            send = true;
            edit.request_focus();
        }
        if ui.button("Send").clicked() {
            send = true;
        }
    });
    if send && !draft.trim().is_empty() {
        app.send(c, std::mem::take(&mut draft));
    }
    if draft.is_empty() {
        prefs.drafts.remove(&key);
    } else {
        prefs.drafts.insert(key, draft);
    }
}

/// `HH:MM` (UTC) of a unix-ms time.
fn clock(ms: u64) -> String {
    let minutes = (ms / 60_000) % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn bubble(ui: &mut egui::Ui, app: &mut Running, m: &Message) {
    let layout = if m.outgoing {
        egui::Layout::right_to_left(egui::Align::TOP)
    } else {
        egui::Layout::left_to_right(egui::Align::TOP)
    };
    ui.with_layout(layout, |ui| {
        let fill = if m.outgoing {
            ui.visuals().selection.bg_fill.gamma_multiply(0.5)
        } else {
            ui.visuals().faint_bg_color
        };
        let response = egui::Frame::group(ui.style())
            .fill(fill)
            .corner_radius(8.0)
            .inner_margin(8.0)
            .show(ui, |ui| {
                ui.set_max_width(480.0);
                ui.vertical(|ui| {
                    let mut meta = format!("{} · {}", m.from.name, clock(m.sent_at));
                    if m.encrypted {
                        meta.push_str(" · 🔒 encrypted");
                    }
                    ui.label(RichText::new(meta).small().weak());
                    if m.recalled {
                        ui.label(RichText::new("This message was recalled").italics());
                        return;
                    }
                    if let Some(text) = &m.text {
                        ui.label(text);
                    } else if m.encrypted && m.attachment.is_none() {
                        ui.label(
                            RichText::new(
                                "🔒 Sent before this device joined: it cannot be decrypted here",
                            )
                            .italics()
                            .weak(),
                        );
                    }
                    if m.attachment.is_some() {
                        attachment(ui, app, m);
                    }
                    if m.outgoing {
                        let state = match m.delivery {
                            DeliveryState::Pending => "sending",
                            DeliveryState::Sent => "sent",
                            DeliveryState::Delivered => "delivered",
                            DeliveryState::Read => "read",
                            DeliveryState::Failed => "not delivered",
                        };
                        ui.label(RichText::new(state).small().weak());
                    }
                });
            })
            .response;
        let id = m.id;
        let outgoing = m.outgoing;
        response.context_menu(|ui| {
            if outgoing && ui.button("Recall for everyone").clicked() {
                app.recall(id);
                ui.close();
            }
            if ui.button("Delete for me").clicked() {
                app.delete(id);
                ui.close();
            }
        });
    });
    ui.add_space(4.0);
}

fn attachment(ui: &mut egui::Ui, app: &mut Running, m: &Message) {
    let Some(a) = m.attachment.as_deref() else {
        return;
    };
    if let Some(texture) = thumbnail(ui, app, m.id, a.thumbnail.as_deref()) {
        let image = egui::Image::new(&texture)
            .max_size(egui::vec2(240.0, 240.0))
            .sense(egui::Sense::click());
        if ui.add(image).on_hover_text("Show full size").clicked() {
            let have = matches!(
                app.model.transfers.get(&m.id),
                Some(Transfer::Complete(_) | Transfer::Running { .. })
            );
            if !have {
                app.fetch(m.id);
            }
            app.view.viewing = Some((m.id, texture));
        }
    }
    ui.label(format!("📎 {} ({})", a.name, size(a.size)));
    match app.model.transfers.get(&m.id).cloned() {
        Some(Transfer::Running { done, total }) => {
            let fraction = if total > 0 {
                done as f32 / total as f32
            } else {
                0.0
            };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .text(format!("{:.0} %", fraction * 100.0))
                    .desired_width(220.0),
            );
        }
        Some(Transfer::Complete(path)) => {
            ui.add(
                egui::ProgressBar::new(1.0)
                    .text("100 %")
                    .desired_width(220.0),
            );
            ui.horizontal(|ui| {
                ui.label(RichText::new(format!("saved to {}", path.display())).small());
                if a.mime.starts_with("audio/") {
                    let playing = app.is_playing(m.id);
                    if ui.button(if playing { "Stop" } else { "Play" }).clicked() {
                        app.toggle_audio(m.id, &path);
                    }
                }
                if ui.button("Open").clicked() {
                    open_with_system(&path);
                }
            });
        }
        Some(Transfer::Failed(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("stopped: {e}"));
            if ui.button("Retry download").clicked() {
                app.fetch(m.id);
            }
        }
        None if !m.outgoing && ui.button("Download").clicked() => app.fetch(m.id),
        None => {}
    }
    if m.outgoing
        && let Some((state, error)) = app.model.holds.get(&m.id)
    {
        let note = match state {
            FileHoldState::Pulling => "uploading to the server for offline receivers".to_owned(),
            FileHoldState::Held => "kept by the server for offline receivers".to_owned(),
            FileHoldState::NotNeeded => String::new(),
            FileHoldState::Refused => {
                format!(
                    "the server does not keep it: {}",
                    error.clone().unwrap_or_default()
                )
            }
        };
        if !note.is_empty() {
            ui.label(RichText::new(note).small().weak());
        }
    }
}

/// The thumbnail's texture, decoded once per message.
fn thumbnail(
    ui: &egui::Ui,
    app: &mut Running,
    id: MessageId,
    jpeg: Option<&[u8]>,
) -> Option<egui::TextureHandle> {
    let jpeg = jpeg?;
    app.view
        .thumbnails
        .entry(id)
        .or_insert_with(|| {
            let decoded = image::load_from_memory(jpeg).ok()?;
            let image = texture_image(decoded, ui.ctx().input(|i| i.max_texture_side))?;
            Some(
                ui.ctx()
                    .load_texture(format!("thumb-{id}"), image, Default::default()),
            )
        })
        .clone()
}

/// A window with an image at full size once downloaded (the thumbnail until then).
fn image_viewer(ui: &mut egui::Ui, app: &mut Running) {
    let Some((id, thumb)) = app.view.viewing.clone() else {
        return;
    };
    let full = match app.model.transfers.get(&id).cloned() {
        Some(Transfer::Complete(path)) => load_full(ui, app, id, &path),
        _ => None,
    };
    let mut open = true;
    egui::Window::new("Image")
        .open(&mut open)
        .show(ui.ctx(), |ui| {
            let texture = full.as_ref().unwrap_or(&thumb);
            ui.add(egui::Image::new(texture).max_size(egui::vec2(900.0, 700.0)));
        });
    if !open {
        app.view.viewing = None;
    }
}

fn load_full(
    ui: &egui::Ui,
    app: &mut Running,
    id: MessageId,
    path: &std::path::Path,
) -> Option<egui::TextureHandle> {
    let key = format!("full-{id}");
    if let Some((_, t)) = &app.view.viewing
        && t.name() == key
    {
        return Some(t.clone());
    }
    if !app.view.unreadable.insert(id) {
        // Tried before and could not be shown: not read again every frame.
        return None;
    }
    let decoded = image::open(path).ok()?;
    let image = texture_image(decoded, ui.ctx().input(|i| i.max_texture_side))?;
    app.view.unreadable.remove(&id);
    let texture = ui.ctx().load_texture(key, image, Default::default());
    app.view.viewing = Some((id, texture.clone()));
    Some(texture)
}

/// An image as a texture no side of which exceeds `max_side` (the GPU's limit: a larger one
/// would abort the renderer), scaled down keeping its aspect ratio. `None` for an empty image.
fn texture_image(image: image::DynamicImage, max_side: usize) -> Option<egui::ColorImage> {
    let max_side = u32::try_from(max_side).unwrap_or(u32::MAX).clamp(1, 8192);
    if image.width() == 0 || image.height() == 0 {
        return None;
    }
    let image = if image.width() > max_side || image.height() > max_side {
        image.resize(max_side, max_side, image::imageops::FilterType::Triangle)
    } else {
        image
    };
    let rgba = image.to_rgba8();
    let size = [rgba.width() as usize, rgba.height() as usize];
    Some(egui::ColorImage::from_rgba_unmultiplied(
        size,
        rgba.as_raw(),
    ))
}

/// Files dropped on the window go to the open conversation.
fn dropped_files(ui: &mut egui::Ui, app: &mut Running) {
    let dropped: Vec<std::path::PathBuf> = ui.ctx().input(|i| {
        i.raw
            .dropped_files
            .iter()
            .filter_map(|f| f.path.clone())
            .collect()
    });
    if dropped.is_empty() {
        return;
    }
    match app.view.selected.clone() {
        Some(c) => {
            for path in dropped {
                app.send_file(&c, path);
            }
        }
        None => {
            app.model.status = Some(Err("open a conversation to send files to".into()));
        }
    }
}

/// Opens a downloaded file with the system's program.
fn open_with_system(path: &std::path::Path) {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(program).arg(path).spawn() {
        tracing::warn!("cannot open {}: {e}", path.display());
    }
}

/// A size for people.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_become_textures_within_the_gpu_limit() {
        // A tiny file can declare a huge side (a sender-chosen thumbnail): scaled down, not
        // handed to the renderer as is.
        let wide = image::DynamicImage::new_rgba8(9000, 8);
        let texture = texture_image(wide, 2048).unwrap();
        assert_eq!(texture.size[0], 2048);
        assert!(texture.size[1] >= 1 && texture.size[1] <= 8);
        let small = image::DynamicImage::new_rgba8(300, 200);
        assert_eq!(texture_image(small, 2048).unwrap().size, [300, 200]);
        assert!(texture_image(image::DynamicImage::new_rgba8(0, 5), 2048).is_none());
    }
}
