//! End-to-end encryption with the bootstrap: the driver that keeps this device's MLS groups
//! ([`crate::mls`]) in step with the bootstrap, which orders commits.
//!
//! One task per node runs the jobs one after the other, so this device never races itself:
//! - at every session start: top up the key packages, process Welcomes, join by external commit
//!   the encrypted conversations this device is not in yet (a new device), apply missed commits,
//!   and bring membership in line with the conversations' users;
//! - on a bootstrap notification (`Mls`, `GroupChanged`) or a message from a later epoch: the
//!   same for one conversation;
//! - on request: start the encryption of a conversation.
//!
//! Every commit is made at the epoch this device is at and sent to the bootstrap; it is merged
//! only once the bootstrap stored it. When another commit was stored first (`Conflict`), this
//! device drops its commit, applies the winner, and decides again whether a commit is still
//! needed — so concurrent membership changes by two admins end with both applied, in the
//! bootstrap's order, and every member at the same epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use confab_protocol::bootstrap::{BootstrapRequest, BootstrapResponse, ErrorCode};
use confab_protocol::e2e::{MlsDevice, Suite, dm_users};
use confab_protocol::group::Role;
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::client::Command;
use crate::error::CallError;
use crate::event::Event;
use crate::mls::{Commit, Mls, MlsError};

/// Jobs waiting for the driver, at most.
pub(crate) const E2E_JOBS: usize = 1024;
/// Key packages kept at the bootstrap per suite; topped up below half.
const KEY_PACKAGE_STOCK: u32 = 24;
/// Attempts at a commit that keeps losing to others' before giving up for now.
const MAX_COMMIT_ATTEMPTS: usize = 8;
/// Pages of commits applied in one sync.
const MAX_COMMIT_PAGES: usize = 64;

/// Why an end-to-end encryption step failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum E2eError {
    /// Encryption needs an account on a bootstrap.
    #[error("end-to-end encryption needs an account on a bootstrap: log in first")]
    NotLoggedIn,
    /// Only `user:` and `group:` conversations can be encrypted.
    #[error("{0} cannot be end-to-end encrypted (only user: and group: conversations)")]
    Unsupported(String),
    /// The conversation is already encrypted with another suite, which cannot change.
    #[error("this conversation is encrypted with {0}; its cipher suite cannot be changed")]
    SuiteFixed(Suite),
    /// The bootstrap refused.
    #[error("the bootstrap refused: {0}")]
    Refused(String),
    /// The bootstrap could not be asked.
    #[error("the bootstrap could not be asked: {0}")]
    Call(String),
    /// Other devices kept committing first.
    #[error("the conversation kept changing; try again")]
    Busy,
    /// The MLS operation failed.
    #[error(transparent)]
    Mls(#[from] Arc<MlsError>),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

impl From<MlsError> for E2eError {
    fn from(e: MlsError) -> Self {
        E2eError::Mls(Arc::new(e))
    }
}

/// A bootstrap's answer: what was asked for, or its refusal.
type Answer = Result<BootstrapResponse, (ErrorCode, String)>;

/// This device in MLS terms, with its state.
#[derive(Clone)]
pub(crate) struct Me {
    pub mls: Arc<Mls>,
    pub user: String,
    pub peer: PeerId,
}

impl Me {
    fn device(&self) -> MlsDevice {
        MlsDevice {
            user: self.user.clone(),
            device: self.peer.to_bytes(),
        }
    }
}

/// Work for the driver.
pub(crate) enum Job {
    /// A session started (login, or a restart with a kept session).
    Session(Me),
    /// Catch up with one conversation and bring its membership in line.
    Sync(Me, String),
    /// A group changed and this device does not know it as encrypted: if it is, catch up
    /// (join it); if not, nothing.
    Probe(Me, String),
    /// Answered once every job queued before it is done.
    Barrier(oneshot::Sender<()>),
    /// Start encrypting a conversation (or learn that it already is).
    Start {
        me: Me,
        conversation: String,
        suite: Suite,
        reply: oneshot::Sender<Result<Suite, E2eError>>,
    },
}

/// The handle the event loop keeps: jobs in, run in order.
#[derive(Clone)]
pub(crate) struct Driver {
    jobs: mpsc::Sender<Job>,
}

impl Driver {
    /// Starts the driver task. It asks the bootstrap through the node's own command queue (held
    /// weakly, so the node still stops when its last client goes).
    pub(crate) fn spawn(
        commands: mpsc::WeakSender<Command>,
        events: broadcast::Sender<Event>,
    ) -> Self {
        let (jobs, mut rx) = mpsc::channel(E2E_JOBS);
        tokio::spawn(async move {
            let worker = Worker { commands, events };
            while let Some(job) = rx.recv().await {
                if !worker.run(job).await {
                    break;
                }
            }
        });
        Self { jobs }
    }

    /// Queues a job. Dropped if the driver is gone (the node is stopping) or [`E2E_JOBS`] wait
    /// already (a start is answered `Busy`; catch-ups come again with the next notification).
    pub(crate) fn push(&self, job: Job) {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Job::Start { reply, .. })) => {
                let _ = reply.send(Err(E2eError::Busy));
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("end-to-end encryption work is backed up; a catch-up was dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

struct Worker {
    commands: mpsc::WeakSender<Command>,
    events: broadcast::Sender<Event>,
}

/// A conversation's users with their roles, and its member devices no longer logged in, as
/// the bootstrap said at a catch-up.
struct Standing {
    roles: BTreeMap<String, Role>,
    retired: Vec<MlsDevice>,
}

/// How a commit fared at the bootstrap.
enum Submitted {
    Won(u64),
    Lost,
}

impl Worker {
    /// Runs a job; false when the node is gone.
    async fn run(&self, job: Job) -> bool {
        let result = match job {
            Job::Session(me) => self.session(&me).await,
            Job::Sync(me, conversation) => {
                let started = std::time::Instant::now();
                let result = self.sync_and_reconcile(&me, &conversation).await;
                self.synced(conversation, started).await;
                result
            }
            Job::Probe(me, conversation) => self.probe(&me, &conversation).await,
            Job::Barrier(reply) => {
                let _ = reply.send(());
                Ok(())
            }
            Job::Start {
                me,
                conversation,
                suite,
                reply,
            } => {
                let result = self.start(&me, &conversation, suite).await;
                let stopped = matches!(result, Err(E2eError::NodeStopped));
                let _ = reply.send(result);
                return !stopped;
            }
        };
        match result {
            Ok(()) => true,
            Err(E2eError::NodeStopped) => false,
            Err(e) => {
                tracing::warn!("end-to-end encryption: {e}");
                true
            }
        }
    }

    /// Tells the event loop a catch-up of `conversation` is over (messages that waited for it
    /// are tried again, or given up).
    async fn synced(&self, conversation: String, started: std::time::Instant) {
        if let Some(commands) = self.commands.upgrade() {
            let _ = commands
                .send(Command::E2eSynced(conversation, started))
                .await;
        }
    }

    /// Asks the bootstrap; a refusal is an answer, a lost request an error.
    async fn ask(&self, request: BootstrapRequest) -> Result<Answer, E2eError> {
        let commands = self.commands.upgrade().ok_or(E2eError::NodeStopped)?;
        let (reply, rx) = oneshot::channel();
        commands
            .send(Command::Bootstrap { request, reply })
            .await
            .map_err(|_| E2eError::NodeStopped)?;
        drop(commands);
        match rx.await.map_err(|_| E2eError::NodeStopped)? {
            Ok(BootstrapResponse::Error { code, message, .. })
            | Err(CallError::Refused { code, message, .. }) => Ok(Err((code, message))),
            Ok(response) => Ok(Ok(response)),
            Err(CallError::NodeStopped) => Err(E2eError::NodeStopped),
            Err(CallError::NotLoggedIn) => Err(E2eError::NotLoggedIn),
            Err(CallError::NoBootstrap) => Err(E2eError::Call("no bootstrap is connected".into())),
            Err(CallError::Invalid(why) | CallError::Failed(why)) => Err(E2eError::Call(why)),
        }
    }

    /// Asks the bootstrap; a refusal is an error.
    async fn call(&self, request: BootstrapRequest) -> Result<BootstrapResponse, E2eError> {
        self.ask(request)
            .await?
            .map_err(|(_, why)| E2eError::Refused(why))
    }

    fn announce(&self, me: &Me, conversation: &str) {
        let (Some(suite), Some(epoch)) = (me.mls.suite(conversation), me.mls.epoch(conversation))
        else {
            return;
        };
        let Some(conversation) = local_conversation(&me.user, conversation) else {
            return;
        };
        let _ = self.events.send(Event::Encryption {
            conversation,
            suite: suite.name().to_owned(),
            epoch,
        });
    }

    /// Joins `conversation` if it turns out to be encrypted.
    /// An owner or admin adds the devices of an invited user with their key packages (a
    /// Welcome follows); the device joins by itself only later, if that did not happen (at its
    /// next login, or the conversation's next change), so that the two do not race.
    async fn probe(&self, me: &Me, conversation: &str) -> Result<(), E2eError> {
        match self.existing_suite(conversation).await? {
            Some(suite) => {
                me.mls.mark_encrypted(conversation, suite)?;
                self.welcomes(me).await
            }
            None => Ok(()),
        }
    }

    async fn session(&self, me: &Me) -> Result<(), E2eError> {
        self.top_up(me).await?;
        self.welcomes(me).await?;
        let BootstrapResponse::MlsConversations { conversations } =
            self.call(BootstrapRequest::MlsConversations).await?
        else {
            return Err(E2eError::Refused(
                "an unexpected answer to MlsConversations".into(),
            ));
        };
        for c in conversations {
            if let Some(suite) = Suite::from_code(c.suite) {
                me.mls.mark_encrypted(&c.conversation, suite)?;
            }
            if let Err(e) = self.sync_and_reconcile(me, &c.conversation).await {
                if matches!(e, E2eError::NodeStopped) {
                    return Err(e);
                }
                tracing::warn!("end-to-end encryption of {}: {e}", c.conversation);
            }
        }
        Ok(())
    }

    /// Publishes key packages for every suite whose stock ran low.
    async fn top_up(&self, me: &Me) -> Result<(), E2eError> {
        for suite in Suite::ALL {
            let count = match self
                .call(BootstrapRequest::MlsPublish {
                    suite: suite.code(),
                    key_packages: Vec::new(),
                })
                .await?
            {
                BootstrapResponse::MlsStock { count } => count,
                _ => continue,
            };
            if count >= KEY_PACKAGE_STOCK / 2 {
                continue;
            }
            let mls = me.mls.clone();
            let n = (KEY_PACKAGE_STOCK - count) as usize;
            let packages = tokio::task::spawn_blocking(move || mls.key_packages(suite, n))
                .await
                .map_err(|e| E2eError::Call(e.to_string()))??;
            self.call(BootstrapRequest::MlsPublish {
                suite: suite.code(),
                key_packages: packages
                    .into_iter()
                    .map(serde_bytes::ByteBuf::from)
                    .collect(),
            })
            .await?;
        }
        Ok(())
    }

    /// Joins the conversations whose Welcomes wait for this device.
    async fn welcomes(&self, me: &Me) -> Result<(), E2eError> {
        let BootstrapResponse::MlsWelcomes { welcomes } =
            self.call(BootstrapRequest::MlsWelcomes).await?
        else {
            return Ok(());
        };
        let joined = !welcomes.is_empty();
        for w in welcomes {
            let users = self.users_of(me, &w.conversation).await?;
            let allowed = |u: &str| users.contains(u);
            let behind = me
                .mls
                .epoch(&w.conversation)
                .is_none_or(|e| e < w.epoch || !me.mls.is_member(&w.conversation));
            if behind {
                match me.mls.join_welcome(&w.conversation, &w.welcome, &allowed) {
                    Ok(epoch) => {
                        tracing::info!("joined the encrypted {} at epoch {epoch}", w.conversation);
                        self.announce(me, &w.conversation);
                    }
                    // A Welcome that cannot be used (its key package is gone, it names a
                    // stranger) is dropped: the device joins by external commit instead.
                    Err(e) => tracing::warn!("a Welcome to {}: {e}", w.conversation),
                }
            }
            self.call(BootstrapRequest::MlsWelcomeDone {
                conversation: w.conversation.clone(),
            })
            .await?;
        }
        if joined {
            self.top_up(me).await?;
        }
        Ok(())
    }

    /// The users of a conversation (its bootstrap name), as the bootstrap says now (empty
    /// when this account is no longer in it).
    async fn users_of(&self, me: &Me, conversation: &str) -> Result<BTreeSet<String>, E2eError> {
        Ok(self.roles_of(me, conversation).await?.into_keys().collect())
    }

    /// The users of a conversation with their roles (both users of a direct conversation manage
    /// it, as owners of a group do).
    async fn roles_of(
        &self,
        _me: &Me,
        conversation: &str,
    ) -> Result<BTreeMap<String, Role>, E2eError> {
        if let Some((a, b)) = dm_users(conversation) {
            return Ok([(a.to_owned(), Role::Owner), (b.to_owned(), Role::Owner)].into());
        }
        let Some(group) = conversation.strip_prefix("group:") else {
            return Err(E2eError::Unsupported(conversation.to_owned()));
        };
        match self
            .ask(BootstrapRequest::GroupInfo {
                group: group.to_owned(),
            })
            .await?
        {
            Ok(BootstrapResponse::Group(roster)) => Ok(roster
                .members
                .into_iter()
                .map(|m| (m.user, m.role))
                .collect()),
            // No longer in the group: nobody of it is to be trusted by this device.
            Err((ErrorCode::NotAllowed | ErrorCode::NotFound, _)) => Ok(BTreeMap::new()),
            Err((_, why)) => Err(E2eError::Refused(why)),
            Ok(_) => Err(E2eError::Refused(
                "an unexpected answer to GroupInfo".into(),
            )),
        }
    }

    /// Applies the commits this device missed (joining first if it is not a member). Returns
    /// what it learnt of the conversation for that: its users' roles and its retired devices.
    async fn catch_up(&self, me: &Me, conversation: &str) -> Result<Standing, E2eError> {
        let roles = self.roles_of(me, conversation).await?;
        if !roles.contains_key(&me.user) {
            return Ok(Standing {
                roles,
                retired: Vec::new(),
            });
        }
        let retired = match self
            .ask(BootstrapRequest::MlsGroupInfo {
                conversation: conversation.to_owned(),
            })
            .await?
        {
            Ok(BootstrapResponse::MlsGroupInfo { retired, .. }) => retired,
            _ => Vec::new(),
        };
        let standing = Standing { roles, retired };
        self.apply_missed(me, conversation, &standing).await?;
        Ok(standing)
    }

    /// The commits this device missed, applied under `standing`'s rules.
    async fn apply_missed(
        &self,
        me: &Me,
        conversation: &str,
        standing: &Standing,
    ) -> Result<(), E2eError> {
        let Standing { roles, retired } = standing;
        let users: BTreeSet<String> = roles.keys().cloned().collect();
        // Who may remove whom: a device of a user who left, or a logged-out one, anybody; others
        // only the group's owner and admins (and every account its own devices).
        let may_remove = |committer: &MlsDevice, removed: &MlsDevice| {
            !users.contains(&removed.user)
                || retired.contains(removed)
                || matches!(roles.get(&committer.user), Some(Role::Owner | Role::Admin))
        };
        for _ in 0..MAX_COMMIT_PAGES {
            let Some(epoch) = me
                .mls
                .epoch(conversation)
                .filter(|_| me.mls.is_member(conversation))
            else {
                return self.join(me, conversation).await;
            };
            let response = self
                .call(BootstrapRequest::MlsCommits {
                    conversation: conversation.to_owned(),
                    from: epoch,
                })
                .await;
            let (commits, now) = match response {
                Ok(BootstrapResponse::MlsCommits { commits, epoch }) => (commits, epoch),
                Ok(_) => {
                    return Err(E2eError::Refused(
                        "an unexpected answer to MlsCommits".into(),
                    ));
                }
                Err(e) => return Err(e),
            };
            for commit in &commits {
                // Accounts in the conversation now, and those in the group when the commit was
                // made (a commit of a user who left since was theirs to make).
                let members: BTreeSet<String> = me
                    .mls
                    .members(conversation)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| d.user)
                    .collect();
                let allowed = |u: &str| users.contains(u) || members.contains(u);
                match me
                    .mls
                    .apply_commit_checked(conversation, commit, &allowed, &may_remove)
                {
                    Ok(applied) if applied.removed_self => {
                        tracing::info!("this device was removed from the encrypted {conversation}");
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(MlsError::Refused(why)) => {
                        return Err(E2eError::Refused(format!(
                            "a commit to {conversation} breaks the rules: {why}"
                        )));
                    }
                    // This device's state no longer fits the bootstrap's (a commit of its own
                    // whose answer was lost and that another replaced, damaged state): it joins
                    // again from the latest GroupInfo, replacing its old leaf.
                    Err(e) => {
                        tracing::warn!("{conversation}: {e}; joining it again");
                        me.mls.forget(conversation)?;
                        return self.join(me, conversation).await;
                    }
                }
            }
            self.announce(me, conversation);
            if commits.is_empty() || me.mls.epoch(conversation).is_some_and(|e| e >= now) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Joins an encrypted conversation by an external commit.
    async fn join(&self, me: &Me, conversation: &str) -> Result<(), E2eError> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            // Another device may have added this one meanwhile: its Welcome comes first.
            self.welcomes(me).await?;
            if me.mls.is_member(conversation) {
                return Ok(());
            }
            let BootstrapResponse::MlsGroupInfo {
                group_info,
                members,
                ..
            } = self
                .call(BootstrapRequest::MlsGroupInfo {
                    conversation: conversation.to_owned(),
                })
                .await?
            else {
                return Err(E2eError::Refused(
                    "an unexpected answer to MlsGroupInfo".into(),
                ));
            };
            let was_member = members.contains(&me.device());
            let commit = me
                .mls
                .join_external(conversation, &group_info, was_member)?;
            if let Submitted::Won(epoch) = self.submit(me, conversation, commit, true).await? {
                tracing::info!("joined the encrypted {conversation} at epoch {epoch}");
                self.announce(me, conversation);
                return Ok(());
            }
        }
        Err(E2eError::Busy)
    }

    /// Sends a commit; merges it if stored, drops it if another won.
    async fn submit(
        &self,
        me: &Me,
        conversation: &str,
        commit: Commit,
        external: bool,
    ) -> Result<Submitted, E2eError> {
        let request = BootstrapRequest::MlsCommit {
            conversation: conversation.to_owned(),
            epoch: commit.epoch,
            suite: commit.suite,
            commit: commit.commit,
            group_info: commit.group_info,
            welcome: commit.welcome,
            added: commit.added,
            removed: commit.removed,
            external,
        };
        // A lost request (`Err`) leaves the pending commit: whether it was stored is not known,
        // and the next catch-up merges it if the bootstrap has it (or drops it if another won).
        match self.ask(request).await? {
            Ok(BootstrapResponse::MlsCommitted { .. }) => {
                let epoch = me.mls.confirm(conversation)?;
                Ok(Submitted::Won(epoch))
            }
            Err((ErrorCode::Conflict, _)) => {
                me.mls.discard(conversation)?;
                Ok(Submitted::Lost)
            }
            Err((_, why)) => {
                me.mls.discard(conversation)?;
                Err(E2eError::Refused(why))
            }
            Ok(_) => {
                me.mls.discard(conversation)?;
                Err(E2eError::Refused(
                    "an unexpected answer to MlsCommit".into(),
                ))
            }
        }
    }

    /// Catches up, then commits what membership needs: the devices of users who left go, users
    /// with no device in the group are added (one key package per device of theirs).
    async fn sync_and_reconcile(&self, me: &Me, conversation: &str) -> Result<(), E2eError> {
        self.welcomes(me).await?;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let Standing { roles, retired } = self.catch_up(me, conversation).await?;
            if !me.mls.is_member(conversation) {
                return Ok(());
            }
            let users: BTreeSet<&String> = roles.keys().collect();
            // Users are added by the group's owner and admins (who invite them); anyone adds
            // devices of their own account. So not every member races to claim key packages.
            let adds_users = matches!(roles.get(&me.user), Some(Role::Owner | Role::Admin));
            let members = me.mls.members(conversation)?;
            let removed: Vec<MlsDevice> = members
                .iter()
                .filter(|d| !users.contains(&d.user) || retired.contains(d))
                .filter(|d| **d != me.device())
                .cloned()
                .collect();
            let present: BTreeSet<&str> = members.iter().map(|d| d.user.as_str()).collect();
            let suite = me
                .mls
                .suite(conversation)
                .ok_or_else(|| E2eError::Refused("the conversation has no suite".into()))?;
            let mut packages = Vec::new();
            for user in users
                .iter()
                .filter(|u| !present.contains(u.as_str()))
                .filter(|u| adds_users || ***u == me.user)
            {
                packages.extend(self.claim(user, suite).await?);
            }
            if removed.is_empty() && packages.is_empty() {
                return Ok(());
            }
            let commit = me.mls.commit(conversation, &packages, &removed)?;
            if let Submitted::Won(epoch) = self.submit(me, conversation, commit, false).await? {
                tracing::info!(
                    "{conversation} at epoch {epoch}: {} devices added, {} removed",
                    packages.len(),
                    removed.len()
                );
                self.announce(me, conversation);
                return Ok(());
            }
        }
        Err(E2eError::Busy)
    }

    /// One key package of every device of `user` (devices without one join by themselves).
    async fn claim(&self, user: &str, suite: Suite) -> Result<Vec<(MlsDevice, Vec<u8>)>, E2eError> {
        match self
            .call(BootstrapRequest::MlsClaim {
                user: user.to_owned(),
                suite: suite.code(),
            })
            .await?
        {
            BootstrapResponse::MlsClaimed { packages, missing } => {
                if !missing.is_empty() {
                    tracing::debug!(
                        "{} devices of {user} have no key package for {suite}",
                        missing.len()
                    );
                }
                Ok(packages
                    .into_iter()
                    .map(|p| {
                        (
                            MlsDevice {
                                user: user.to_owned(),
                                device: p.device,
                            },
                            p.key_package,
                        )
                    })
                    .collect())
            }
            _ => Err(E2eError::Refused("an unexpected answer to MlsClaim".into())),
        }
    }

    /// Starts encrypting `conversation` with `suite`; if it already is (by another device, or
    /// another device won the race to start it), joins it and answers its suite — an error if
    /// that is not the one asked for.
    async fn start(&self, me: &Me, conversation: &str, suite: Suite) -> Result<Suite, E2eError> {
        if let Some(existing) = self.existing_suite(conversation).await? {
            me.mls.mark_encrypted(conversation, existing)?;
            self.sync_and_reconcile(me, conversation).await?;
            return if existing == suite {
                Ok(existing)
            } else {
                Err(E2eError::SuiteFixed(existing))
            };
        }
        let users = self.users_of(me, conversation).await?;
        if !users.contains(&me.user) {
            return Err(E2eError::Refused(format!(
                "{} is not in {conversation}",
                me.user
            )));
        }
        let mut packages = Vec::new();
        for user in &users {
            packages.extend(self.claim(user, suite).await?);
        }
        let commit = me.mls.start(conversation, suite, &packages)?;
        match self.submit(me, conversation, commit, false).await? {
            Submitted::Won(epoch) => {
                tracing::info!(
                    "{conversation} is end-to-end encrypted with {suite} (epoch {epoch})"
                );
                self.announce(me, conversation);
                Ok(suite)
            }
            // Another device started it first: join theirs.
            Submitted::Lost => {
                let existing = self
                    .existing_suite(conversation)
                    .await?
                    .ok_or(E2eError::Busy)?;
                me.mls.mark_encrypted(conversation, existing)?;
                self.sync_and_reconcile(me, conversation).await?;
                if existing == suite {
                    Ok(existing)
                } else {
                    Err(E2eError::SuiteFixed(existing))
                }
            }
        }
    }

    /// The suite `conversation` is encrypted with at the bootstrap, if it is.
    async fn existing_suite(&self, conversation: &str) -> Result<Option<Suite>, E2eError> {
        match self
            .ask(BootstrapRequest::MlsGroupInfo {
                conversation: conversation.to_owned(),
            })
            .await?
        {
            Ok(BootstrapResponse::MlsGroupInfo { suite, .. }) => Ok(Suite::from_code(suite)),
            Err((ErrorCode::NotFound, _)) => Ok(None),
            Err((_, why)) => Err(E2eError::Refused(why)),
            Ok(_) => Err(E2eError::Refused(
                "an unexpected answer to MlsGroupInfo".into(),
            )),
        }
    }
}

/// The bootstrap name of a conversation of `me`'s (`user:bob` → `dm:alice:bob`, `group:x` as
/// it is); `None` for conversations that cannot be encrypted.
pub(crate) fn bootstrap_name(me: &str, conversation: &crate::Conversation) -> Option<String> {
    match conversation {
        crate::Conversation::User(other) if other != me => {
            Some(confab_protocol::e2e::dm_conversation(me, other))
        }
        crate::Conversation::Group(group) => Some(format!("group:{group}")),
        _ => None,
    }
}

/// The conversation as `me` sees it, from its bootstrap name.
pub(crate) fn local_conversation(me: &str, name: &str) -> Option<crate::Conversation> {
    if let Some((a, b)) = dm_users(name) {
        let other = if a == me { b } else { a };
        return Some(crate::Conversation::User(other.to_owned()));
    }
    name.strip_prefix("group:")
        .map(|g| crate::Conversation::Group(g.to_owned()))
}
