//! The app: its stages (first run → starting the node → running), the frame (drain the bridge
//! under a time budget, raise alerts, draw), and the requests its widgets make. The screens
//! themselves are in [`crate::ui`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use confab_node::{Client, Config, Conversation, Event, MessageId};

use crate::bridge::{Bridge, Msg, Repaint};
use crate::model::{Model, Outcome};
use crate::prefs::Prefs;

/// When the process started, for the startup timing (`CONFAB_APP_TIMING=1`).
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks the start of the process (call first thing in `main`): with `CONFAB_APP_TIMING=1` the
/// app prints to stderr how long after it the first frame, and the first frame showing the open
/// conversation's messages, were drawn.
pub fn mark_start() {
    let _ = STARTED.set(std::time::Instant::now());
}

fn timing(what: &str) {
    if let Some(start) = STARTED.get()
        && std::env::var_os("CONFAB_APP_TIMING").is_some()
    {
        eprintln!("timing: {what} after {} ms", start.elapsed().as_millis());
    }
}

/// Time per frame spent applying what the node sent; the rest waits for the next frame.
pub const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// Messages of history loaded when a conversation is opened.
pub const HISTORY_LOAD: usize = crate::model::MAX_MESSAGES_SHOWN;

/// Which list the sidebar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    /// Conversations with messages, most recent first.
    #[default]
    Chats,
    /// Friends and requests.
    Friends,
    /// Groups.
    Groups,
    /// Peers on the LAN (and others connected).
    Peers,
}

/// What the widgets hold between frames (not persisted, except through [`Prefs`]).
#[derive(Default)]
pub struct View {
    /// The sidebar's list.
    pub tab: Tab,
    /// The open conversation.
    pub selected: Option<Conversation>,
    /// Sign-in form.
    pub username: String,
    /// Sign-in form.
    pub password: String,
    /// A bootstrap address typed by the user (else the node's own, or one found on the LAN).
    pub bootstrap: String,
    /// Add-a-friend field.
    pub friend: String,
    /// New group: its name.
    pub group_name: String,
    /// New group: members, comma-separated.
    pub group_members: String,
    /// Invite into the open group.
    pub invite: String,
    /// Image thumbnails, decoded once.
    pub thumbnails: HashMap<MessageId, Option<egui::TextureHandle>>,
    /// A full-size image being shown.
    pub viewing: Option<(MessageId, egui::TextureHandle)>,
    /// The profile editor is open.
    pub editing_profile: bool,
    /// The profile editor's fields were edited since it opened: a profile read arriving late
    /// does not overwrite them.
    pub profile_edited: bool,
    /// Profile editor: display name.
    pub nickname: String,
    /// Profile editor: status line.
    pub signature: String,
    /// Profile editor: a picture file to use as avatar.
    pub avatar: String,
    /// New name for the open group.
    pub rename: String,
    /// Password to confirm deleting the account.
    pub delete_password: String,
    /// The account deletion form is open.
    pub deleting_account: bool,
    /// Audio being played, by message, with its player process.
    pub playing: Option<(MessageId, std::process::Child)>,
    /// User search field.
    pub search: String,
    /// Downloaded images that could not be decoded (not tried again every frame).
    pub unreadable: HashSet<MessageId>,
    /// Each message row's height when last laid out.
    pub heights: HashMap<MessageId, f32>,
    /// Message rows laid out in the last frame (only the visible ones and a margin).
    pub rows_laid_out: usize,
}

/// The node is running: its bridge, what it shows, and the widgets' state.
pub struct Running {
    /// The link to the node.
    pub bridge: Bridge,
    /// What the window shows.
    pub model: Model,
    /// The widgets' state.
    pub view: View,
    /// Conversations whose history was asked for.
    loaded: HashSet<String>,
    /// Where downloads go.
    pub downloads: PathBuf,
}

enum Stage {
    FirstRun { name: String },
    Starting(mpsc::Receiver<Result<Client, String>>),
    Failed(String),
    Running(Box<Running>),
}

/// The desktop app. [`ConfabApp::frame`] draws one frame; `eframe` and the tests both call it.
pub struct ConfabApp {
    /// The startup milestones reported so far (first frame, first conversation shown).
    reported: (bool, bool),
    runtime: tokio::runtime::Handle,
    config: Config,
    prefs: Prefs,
    repaint: Repaint,
    stage: Stage,
}

impl ConfabApp {
    /// The app for a node with `config` (its data dir holds the app's preferences too), run on
    /// `runtime`. Without a display name (in `config` or chosen earlier) it starts with the
    /// first-run screen; otherwise it starts the node at once.
    pub fn new(mut config: Config, runtime: tokio::runtime::Handle) -> Self {
        let prefs = Prefs::load(&config.data_dir);
        if config.name.is_none() {
            config.name = prefs.name.clone();
        }
        let mut app = Self {
            reported: (false, false),
            runtime,
            config,
            prefs,
            repaint: Repaint::default(),
            stage: Stage::FirstRun {
                name: String::new(),
            },
        };
        if app.config.name.is_some() {
            app.start_node();
        }
        app
    }

    /// The app on a node that is already running (tests, embedding).
    pub fn with_client(client: Client, config: Config, runtime: tokio::runtime::Handle) -> Self {
        let prefs = Prefs::load(&config.data_dir);
        let repaint = Repaint::default();
        let running = Running::new(
            Bridge::new(client, runtime.clone(), repaint.clone()),
            &config,
            &prefs,
        );
        Self {
            reported: (false, false),
            runtime,
            config,
            prefs,
            repaint,
            stage: Stage::Running(Box::new(running)),
        }
    }

    /// What the window shows, once the node runs.
    pub fn model(&self) -> Option<&Model> {
        match &self.stage {
            Stage::Running(r) => Some(&r.model),
            _ => None,
        }
    }

    /// What the window shows, to change (tests and benchmarks fill it directly).
    pub fn model_mut(&mut self) -> Option<&mut Model> {
        match &mut self.stage {
            Stage::Running(r) => Some(&mut r.model),
            _ => None,
        }
    }

    /// Message rows laid out in the last frame (the visible ones and a margin).
    pub fn rows_laid_out(&self) -> usize {
        match &self.stage {
            Stage::Running(r) => r.view.rows_laid_out,
            _ => 0,
        }
    }

    /// Opens conversation `c` (as a click in the sidebar does).
    pub fn open(&mut self, c: Conversation) {
        if let Stage::Running(r) = &mut self.stage {
            r.open(c);
        }
    }

    /// The node's handle, once it runs.
    pub fn client(&self) -> Option<Client> {
        match &self.stage {
            Stage::Running(r) => Some(r.bridge.client().clone()),
            _ => None,
        }
    }

    /// The persisted UI state.
    pub fn prefs(&self) -> &Prefs {
        &self.prefs
    }

    fn start_node(&mut self) {
        let (tx, rx) = mpsc::sync_channel(1);
        let config = self.config.clone();
        let repaint = self.repaint.clone();
        self.runtime.spawn(async move {
            let result = confab_node::start(config).await.map_err(|e| e.to_string());
            let _ = tx.send(result);
            repaint.request();
        });
        self.stage = Stage::Starting(rx);
    }

    /// Draws one frame.
    pub fn frame(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.repaint.set(&ctx);
        ctx.set_theme(if self.prefs.light {
            egui::Theme::Light
        } else {
            egui::Theme::Dark
        });
        let mut next = None;
        match &mut self.stage {
            Stage::FirstRun { name } => {
                if let Some(chosen) = crate::ui::first_run(ui, name) {
                    self.prefs.name = Some(chosen.clone());
                    self.config.name = Some(chosen);
                    self.save_prefs();
                    self.start_node();
                    return;
                }
            }
            Stage::Starting(rx) => match rx.try_recv() {
                Ok(Ok(client)) => {
                    let bridge = Bridge::new(client, self.runtime.clone(), self.repaint.clone());
                    next = Some(Stage::Running(Box::new(Running::new(
                        bridge,
                        &self.config,
                        &self.prefs,
                    ))));
                }
                Ok(Err(e)) => next = Some(Stage::Failed(e)),
                Err(mpsc::TryRecvError::Empty) => {
                    egui::CentralPanel::default().show(ui, |ui| {
                        ui.centered_and_justified(|ui| ui.label("Starting…"));
                    });
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    next = Some(Stage::Failed("the node did not start".into()))
                }
            },
            Stage::Failed(error) => {
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.heading("Confab could not start");
                    ui.label(error.as_str());
                });
            }
            Stage::Running(running) => {
                let focused = ctx.input(|i| i.focused);
                running.pump(focused);
                let before = (running.view.selected.clone(), self.prefs.light);
                crate::ui::running(ui, running, &mut self.prefs);
                let after = (running.view.selected.clone(), self.prefs.light);
                if before != after {
                    self.prefs.selected = running.view.selected.as_ref().map(|c| c.to_string());
                    next = None;
                    self.save_prefs();
                }
            }
        }
        if let Some(stage) = next {
            self.stage = stage;
            ctx.request_repaint();
        }
        if !self.reported.0 {
            self.reported.0 = true;
            timing("first frame");
        }
        if !self.reported.1 && self.rows_laid_out() > 0 {
            self.reported.1 = true;
            timing("first frame with the conversation's messages");
        }
    }

    /// Writes the persisted UI state (errors are logged).
    pub fn save_prefs(&self) {
        if let Err(e) = self.prefs.save(&self.config.data_dir) {
            tracing::warn!("cannot save the app's preferences: {e}");
        }
    }

    /// Stops the node (waits a moment for it).
    pub fn shut_down(&mut self) {
        self.save_prefs();
        if let Some(client) = self.client() {
            let (tx, rx) = mpsc::sync_channel(1);
            self.runtime.spawn(async move {
                let _ = client.shutdown().await;
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(Duration::from_secs(3));
        }
    }
}

impl eframe::App for ConfabApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.frame(ui);
    }

    fn save(&mut self, _storage: &mut dyn eframe::Storage) {
        self.save_prefs();
    }

    fn on_exit(&mut self) {
        self.shut_down();
    }
}

/// A request's error as text.
fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl Running {
    fn new(bridge: Bridge, config: &Config, prefs: &Prefs) -> Self {
        let mut running = Self {
            bridge,
            model: Model::default(),
            view: View {
                selected: prefs.selected.as_deref().and_then(|s| s.parse().ok()),
                ..View::default()
            },
            loaded: HashSet::new(),
            downloads: config.data_dir.join("downloads"),
        };
        running.reload();
        if let Some(c) = running.view.selected.clone() {
            running.load_history(&c);
        }
        running
    }

    /// Asks the node for everything shown (at start, after a sign-in, after missed events).
    pub fn reload(&mut self) {
        self.bridge
            .run(|c| async move { Outcome::WhoAmI(c.whoami().await.map_err(text)) });
        self.bridge
            .run(|c| async move { Outcome::Peers(c.peers().await.map_err(text)) });
        self.load_history(&Conversation::Broadcast);
        self.reload_account();
    }

    /// Friends, groups and settings (when signed in: the node answers from the bootstrap).
    fn reload_account(&mut self) {
        self.bridge
            .run(|c| async move { Outcome::Settings(c.settings().await.map_err(text)) });
        self.bridge
            .run(|c| async move { Outcome::Groups(c.groups().await.map_err(text)) });
        if self.model.user.is_some() {
            self.bridge
                .run(|c| async move { Outcome::Friends(c.friends().await.map_err(text)) });
        }
    }

    /// Loads `c`'s history once.
    pub fn load_history(&mut self, c: &Conversation) {
        if !self.loaded.insert(c.to_string()) {
            return;
        }
        let conversation = c.clone();
        self.bridge.run(move |client| async move {
            let result = client
                .history(&conversation, HISTORY_LOAD)
                .await
                .map_err(text);
            Outcome::History {
                conversation,
                result,
            }
        });
    }

    /// Applies what the node sent since the last frame (within [`DRAIN_BUDGET`]); raises the
    /// alerts new messages call for when the window is not focused.
    pub fn pump(&mut self, focused: bool) {
        for msg in self.bridge.drain(DRAIN_BUDGET) {
            match msg {
                Msg::Event(event) => self.on_event(*event, focused),
                Msg::Lagged(n) => {
                    tracing::warn!("{n} node events missed; reloading");
                    self.loaded.clear();
                    self.reload();
                    if let Some(c) = self.view.selected.clone() {
                        self.load_history(&c);
                    }
                }
                Msg::Done(outcome) => self.on_outcome(*outcome),
            }
        }
        // The open conversation is read while the window has focus.
        if focused
            && let Some(c) = self.view.selected.clone()
            && self
                .model
                .chats
                .get(&c.to_string())
                .is_some_and(|chat| chat.unread > 0)
        {
            self.mark_read(&c);
        }
    }

    fn on_event(&mut self, event: Event, focused: bool) {
        match &event {
            Event::FriendAdded { .. } | Event::FriendRemoved { .. } | Event::Presence { .. }
                if self.model.user.is_some() =>
            {
                self.bridge
                    .run(|c| async move { Outcome::Friends(c.friends().await.map_err(text)) });
            }
            Event::GroupInvited { .. }
            | Event::GroupMemberAdded { .. }
            | Event::GroupMemberRemoved { .. }
            | Event::GroupUpdated { .. } => {
                self.bridge
                    .run(|c| async move { Outcome::Groups(c.groups().await.map_err(text)) });
            }
            _ => {}
        }
        if let Some(notice) = self.model.apply_event(event)
            && !focused
        {
            crate::alert::raise(&notice);
            self.model.noticed(notice);
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let signed_in = matches!(outcome, Outcome::SignedIn(Ok(_)));
        match &outcome {
            Outcome::Friends(Ok(friends)) => {
                let users: Vec<Conversation> = friends
                    .friends
                    .iter()
                    .map(|f| Conversation::User(f.user.clone()))
                    .collect();
                for c in users {
                    self.load_history(&c);
                }
            }
            Outcome::Groups(Ok(groups)) => {
                let ids: Vec<Conversation> = groups
                    .iter()
                    .map(|g| Conversation::Group(g.id.clone()))
                    .collect();
                for c in ids {
                    self.load_history(&c);
                }
            }
            Outcome::Peers(Ok(peers)) => {
                let ids: Vec<Conversation> = peers
                    .iter()
                    .map(|p| Conversation::Peer(p.peer_id.clone()))
                    .collect();
                for c in ids {
                    self.load_history(&c);
                }
            }
            Outcome::WhoAmI(Ok(me)) if me.user.is_some() && self.model.user.is_none() => {
                self.model.user = me.user.clone();
                self.reload_account();
            }
            _ => {}
        }
        self.model.apply(outcome);
        if signed_in {
            self.reload_account();
        }
    }

    // ---- requests made by the widgets ------------------------------------------------------

    /// Opens conversation `c`.
    pub fn open(&mut self, c: Conversation) {
        self.load_history(&c);
        if !matches!(c, Conversation::Peer(_) | Conversation::Broadcast) {
            let conversation = c.clone();
            self.bridge.run(move |client| async move {
                let result = client.encryption(&conversation).await.map_err(text);
                Outcome::Encryption {
                    conversation,
                    result,
                }
            });
        }
        self.view.selected = Some(c);
    }

    /// Makes `c` end-to-end encrypted with `suite` (for good).
    pub fn encrypt(&mut self, c: &Conversation, suite: confab_node::Suite) {
        let conversation = c.clone();
        self.bridge.run(move |client| async move {
            match client.encrypt(&conversation, Some(suite)).await {
                Ok(_) => {
                    let result = client.encryption(&conversation).await.map_err(text);
                    Outcome::Encryption {
                        conversation,
                        result,
                    }
                }
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Marks `c` read here and tells the node.
    pub fn mark_read(&mut self, c: &Conversation) {
        self.model.mark_read(c);
        let c = c.clone();
        self.bridge.run(move |client| async move {
            match client.mark_read(&c).await {
                Ok(_) => Outcome::Note(Ok(String::new())),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Sends `text` to `c`.
    pub fn send(&mut self, c: &Conversation, text_: String) {
        let c = c.clone();
        self.bridge.run(move |client| async move {
            Outcome::Sent(client.send(&c, &text_).await.map_err(text))
        });
    }

    /// Sends the file at `path` to `c`.
    pub fn send_file(&mut self, c: &Conversation, path: PathBuf) {
        let c = c.clone();
        self.bridge.run(move |client| async move {
            Outcome::Sent(client.send_file(&c, &path, None).await.map_err(text))
        });
    }

    /// Asks for a file with the desktop's file dialog, then sends it to `c`.
    pub fn attach(&mut self, c: &Conversation) {
        let (c, client, tx, repaint) = (
            c.clone(),
            self.bridge.client().clone(),
            self.bridge.sender(),
            self.bridge.repaint().clone(),
        );
        self.bridge.spawn(async move {
            let Some(file) = rfd::AsyncFileDialog::new()
                .set_title("Send a file")
                .pick_file()
                .await
            else {
                return;
            };
            let sent = client.send_file(&c, file.path(), None).await.map_err(text);
            if tx
                .send(Msg::Done(Box::new(Outcome::Sent(sent))))
                .await
                .is_ok()
            {
                repaint.request();
            }
        });
    }

    /// Downloads message `id`'s file into the downloads directory.
    pub fn fetch(&mut self, id: MessageId) {
        let dest = self.downloads.clone();
        self.model
            .transfers
            .insert(id, crate::model::Transfer::Running { done: 0, total: 0 });
        self.bridge.run(move |client| async move {
            Outcome::Fetched {
                id,
                result: client.fetch_file(id, &dest).await.map_err(text),
            }
        });
    }

    /// Recalls message `id` for everyone.
    pub fn recall(&mut self, id: MessageId) {
        self.bridge.run(move |c| async move {
            Outcome::Note(c.recall(id).await.map(|_| "recalled".into()).map_err(text))
        });
    }

    /// Deletes message `id` from this account's devices.
    pub fn delete(&mut self, id: MessageId) {
        self.bridge.run(move |c| async move {
            Outcome::Note(c.delete(id).await.map(|_| "deleted".into()).map_err(text))
        });
    }

    /// Signs in (or registers) with the bootstrap (dialling a typed address first).
    pub fn sign_in(&mut self, register: bool) {
        let (user, password) = (
            self.view.username.trim().to_owned(),
            self.view.password.clone(),
        );
        let bootstrap = self.view.bootstrap.trim().to_owned();
        self.view.password.clear();
        self.bridge.run(move |c| async move {
            if !bootstrap.is_empty()
                && let Err(e) = c.dial(&bootstrap).await
            {
                return Outcome::SignedIn(Err(format!("cannot reach {bootstrap}: {e}")));
            }
            let result = if register {
                c.register(&user, &password).await.map_err(text)
            } else {
                c.login(&user, &password).await.map_err(text)
            };
            Outcome::SignedIn(result)
        });
    }

    /// Signs out.
    pub fn sign_out(&mut self) {
        self.bridge
            .run(|c| async move { Outcome::SignedOut(c.logout().await.map_err(text)) });
    }

    /// Turns do-not-disturb on or off.
    pub fn set_dnd(&mut self, enabled: bool) {
        self.model.settings.dnd = enabled;
        self.bridge
            .run(move |c| async move { Outcome::Settings(c.set_dnd(enabled).await.map_err(text)) });
    }

    /// Mutes or unmutes `conv`.
    pub fn set_muted(&mut self, conv: &Conversation, muted: bool) {
        let conv = conv.clone();
        self.bridge.run(move |c| async move {
            Outcome::Settings(c.set_muted(&conv, muted).await.map_err(text))
        });
    }

    /// Blocks or unblocks `target` (a user or group conversation).
    pub fn set_blocked(&mut self, target: &Conversation, blocked: bool) {
        let target = target.clone();
        self.bridge.run(move |c| async move {
            Outcome::Settings(c.set_blocked(&target, blocked).await.map_err(text))
        });
    }

    /// Asks `user` to be friends.
    pub fn friend_add(&mut self, user: String) {
        self.bridge.run(move |c| async move {
            Outcome::Note(
                c.friend_add(&user)
                    .await
                    .map(|_| format!("asked {user} to be friends"))
                    .map_err(text),
            )
        });
    }

    /// Accepts `user`'s request.
    pub fn friend_accept(&mut self, user: String) {
        self.model.friends.incoming.retain(|u| *u != user);
        self.bridge.run(move |c| async move {
            Outcome::Note(
                c.friend_accept(&user)
                    .await
                    .map(|_| format!("{user} is a friend now"))
                    .map_err(text),
            )
        });
    }

    /// Ends a friendship or declines a request.
    pub fn friend_remove(&mut self, user: String) {
        self.model.friends.incoming.retain(|u| *u != user);
        self.bridge.run(move |c| async move {
            Outcome::Note(
                c.friend_remove(&user)
                    .await
                    .map(|_| String::new())
                    .map_err(text),
            )
        });
    }

    /// Opens the profile editor with this account's profile.
    pub fn edit_profile(&mut self) {
        self.view.editing_profile = true;
        self.view.profile_edited = false;
        if let Some(user) = self.model.user.clone() {
            self.bridge.run(move |c| async move {
                Outcome::Profile(c.profile_get(&user).await.map_err(text))
            });
        }
    }

    /// Saves the profile editor's fields (an empty avatar field keeps the avatar).
    pub fn save_profile(&mut self) {
        let nickname = Some(self.view.nickname.trim().to_owned()).filter(|n| !n.is_empty());
        let signature = Some(self.view.signature.trim().to_owned());
        let avatar = Some(self.view.avatar.trim())
            .filter(|a| !a.is_empty())
            .map(PathBuf::from);
        let user = self.model.user.clone().unwrap_or_default();
        self.bridge.run(move |c| async move {
            match c.profile_set(nickname, signature, avatar).await {
                Ok(()) => Outcome::Profile(c.profile_get(&user).await.map_err(text)),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Searches users by name.
    pub fn search_users(&mut self) {
        let query = self.view.search.trim().to_owned();
        self.bridge.run(move |c| async move {
            Outcome::Found(c.search_users(&query).await.map_err(text))
        });
    }

    /// Deletes the account (with its password), on every device.
    pub fn delete_account(&mut self) {
        let password = std::mem::take(&mut self.view.delete_password);
        self.view.deleting_account = false;
        self.bridge.run(move |c| async move {
            match c.delete_account(&password).await {
                Ok(()) => Outcome::SignedOut(Ok(())),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Renames `group`.
    pub fn group_rename(&mut self, group: String, name: String) {
        self.bridge.run(move |c| async move {
            match c.group_rename(&group, &name).await {
                Ok(_) => Outcome::Groups(c.groups().await.map_err(text)),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Makes `user` an admin or a plain member of `group`.
    pub fn group_set_role(&mut self, group: String, user: String, role: confab_node::Role) {
        self.bridge.run(move |c| async move {
            match c.group_set_role(&group, &user, role).await {
                Ok(_) => Outcome::Groups(c.groups().await.map_err(text)),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Plays (or stops) the audio file of message `id` at `path` with the desktop's player.
    pub fn toggle_audio(&mut self, id: MessageId, path: &std::path::Path) {
        let stopping = self.view.playing.as_ref().is_some_and(|(p, _)| *p == id);
        if let Some((_, mut child)) = self.view.playing.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if stopping {
            return;
        }
        match crate::alert::play(path) {
            Ok(child) => self.view.playing = Some((id, child)),
            Err(e) => self.model.status = Some(Err(e)),
        }
    }

    /// Whether the audio of message `id` is playing now.
    pub fn is_playing(&mut self, id: MessageId) -> bool {
        match &mut self.view.playing {
            Some((p, child)) if *p == id => {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    self.view.playing = None;
                    false
                } else {
                    true
                }
            }
            _ => false,
        }
    }

    /// Creates a group with the members named in the form.
    pub fn group_create(&mut self) {
        let name = self.view.group_name.trim().to_owned();
        let members: Vec<String> = self
            .view
            .group_members
            .split([',', ' '])
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        self.view.group_name.clear();
        self.view.group_members.clear();
        self.bridge.run(move |c| async move {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            match c.group_create(&name, &members).await {
                Ok(group) => Outcome::Groups(Ok(vec![group])).merge_groups(c).await,
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Invites `user` into `group`.
    pub fn group_invite(&mut self, group: String, user: String) {
        self.bridge.run(move |c| async move {
            match c.group_invite(&group, &user).await {
                Ok(_) => Outcome::Groups(c.groups().await.map_err(text)),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Removes `user` from `group`.
    pub fn group_remove(&mut self, group: String, user: String) {
        self.bridge.run(move |c| async move {
            match c.group_remove(&group, &user).await {
                Ok(_) => Outcome::Groups(c.groups().await.map_err(text)),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }

    /// Leaves `group`.
    pub fn group_leave(&mut self, group: String) {
        if self.view.selected == Some(Conversation::Group(group.clone())) {
            self.view.selected = None;
        }
        self.bridge.run(move |c| async move {
            match c.group_leave(&group).await {
                Ok(()) => Outcome::Groups(c.groups().await.map_err(text)),
                Err(e) => Outcome::Note(Err(e.to_string())),
            }
        });
    }
}

impl Outcome {
    /// After a group change: the whole list of groups as the node knows it now.
    async fn merge_groups(self, client: Client) -> Outcome {
        match client.groups().await {
            Ok(groups) => Outcome::Groups(Ok(groups)),
            Err(_) => self,
        }
    }
}
