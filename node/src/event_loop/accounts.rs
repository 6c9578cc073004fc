//! The bootstrap side of the event loop: keeping a connection to the bootstraps, account requests
//! (`/confab/bootstrap/1`) and their answers, the session (kept in the store), pushes from the
//! bootstrap (`/confab/notify/1`), and the certificates on incoming messages.
//!
//! The session changes only here: a `Session` answer (to register, login or the refresh sent when
//! the bootstrap connection comes up) starts or renews it; a successful logout or account deletion
//! ends it; so does a `NotLoggedIn` answer or a `LoggedOut` push, which also emit
//! [`Event::LoggedOut`]. Every change is written to the store before the request is answered.
//! Each start or end of the session is also told to the mailbox (`event_loop/mailbox.rs`), which
//! then catches up and resumes its deposits.

use confab_protocol::Wire;
use confab_protocol::bootstrap::ErrorCode;

use super::mailbox::MailboxCall;
use super::*;

type CallReply = Reply<Result<BootstrapResponse, CallError>>;

/// Who waits for the answer to a request to a bootstrap.
pub(super) enum Caller {
    /// A client.
    Client(CallReply),
    /// Nobody: the session refresh sent when a bootstrap connection comes up.
    Refresh,
    /// The mailbox (deposits, summary, sync).
    Mailbox(MailboxCall),
    /// Direct delivery: the devices of this user.
    Devices(String),
    /// This device's own group bookkeeping.
    Group(super::groups::GroupCall),
    /// This device's own settings request.
    Settings,
    /// A client's recall or deletion (this device buries its copy once the bootstrap agreed).
    Bury(Box<super::recall::PendingBury>),
    /// A page of the bootstrap's kept broadcasts.
    Broadcasts { bootstrap: PeerId },
    /// A report that needs no answer (`FileReceived`): a failure is only logged.
    Report(&'static str),
}

/// A request to a bootstrap on the wire.
pub(super) struct PendingCall {
    peer: PeerId,
    kind: CallKind,
    caller: Caller,
    /// A `GroupLeave`'s group: forgotten here once the bootstrap says done.
    leaves: Option<String>,
}

/// A request waiting for a bootstrap connection.
pub(super) struct WaitingCall {
    deadline: Instant,
    request: BootstrapRequest,
    reply: CallReply,
}

/// What a request does to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// Answered with a session: register, login, the session refresh.
    StartsSession,
    /// Ends the session when done: logout, account deletion.
    EndsSession,
    /// Nothing.
    Other,
}

impl CallKind {
    fn of(request: &BootstrapRequest) -> Self {
        match request {
            BootstrapRequest::Register { .. }
            | BootstrapRequest::Login { .. }
            | BootstrapRequest::Session => CallKind::StartsSession,
            BootstrapRequest::Logout | BootstrapRequest::DeleteAccount { .. } => {
                CallKind::EndsSession
            }
            _ => CallKind::Other,
        }
    }
}

/// Whether a request needs this device to be logged in (everything but creating or opening a
/// session).
fn needs_session(request: &BootstrapRequest) -> bool {
    !matches!(
        request,
        BootstrapRequest::Register { .. } | BootstrapRequest::Login { .. }
    )
}

/// The client's reply with the answer it gets once the session change is stored (none for the
/// node's own requests).
fn client_reply(
    caller: Caller,
    response: BootstrapResponse,
) -> Option<(CallReply, BootstrapResponse)> {
    match caller {
        Caller::Client(reply) => Some((reply, response)),
        Caller::Refresh
        | Caller::Mailbox(_)
        | Caller::Devices(_)
        | Caller::Group(_)
        | Caller::Settings
        | Caller::Bury(_)
        | Caller::Broadcasts { .. }
        | Caller::Report(_) => None,
    }
}

impl EventLoop {
    // ---- requests ---------------------------------------------------------------------------

    /// A client's request: sent to the bootstrap now, or once one is connected (for a while).
    pub(super) fn handle_bootstrap_call(&mut self, request: BootstrapRequest, reply: CallReply) {
        if needs_session(&request) && self.session.is_none() {
            let _ = reply.send(Err(CallError::NotLoggedIn));
            return;
        }
        if let Err(detail) = request.validate() {
            let _ = reply.send(Err(CallError::Invalid(detail)));
            return;
        }
        let target = self
            .bootstraps
            .target(self.session.as_ref().map(|s| &s.bootstrap));
        match target {
            Some(peer) => self.send_call(peer, request, Caller::Client(reply)),
            // Nothing to wait for: no bootstrap configured and none can be found on the LAN.
            None if self.bootstraps.is_empty() && self.discovery.is_none() => {
                let _ = reply.send(Err(CallError::NoBootstrap));
            }
            None if self.waiting_calls.len() >= MAX_WAITING_BOOTSTRAP_REQUESTS => {
                let _ = reply.send(Err(CallError::NoBootstrap));
            }
            None => self.waiting_calls.push_back(WaitingCall {
                deadline: Instant::now() + BOOTSTRAP_CONNECT_WAIT,
                request,
                reply,
            }),
        }
    }

    pub(super) fn send_call(&mut self, peer: PeerId, request: BootstrapRequest, caller: Caller) {
        if self.calls.len() >= MAX_BOOTSTRAP_REQUESTS_IN_FLIGHT {
            let busy = CallError::Failed(
                "too many requests to the bootstrap in flight; retry later".into(),
            );
            self.answer(caller, Err(busy));
            return;
        }
        let kind = CallKind::of(&request);
        let leaves = match &request {
            BootstrapRequest::GroupLeave { group } => Some(group.clone()),
            _ => None,
        };
        let id = self
            .swarm
            .behaviour_mut()
            .bootstrap
            .send_request(&peer, request);
        self.calls.insert(
            id,
            PendingCall {
                peer,
                kind,
                caller,
                leaves,
            },
        );
    }

    /// Gives an answer to whoever waits for it.
    fn answer(&mut self, caller: Caller, result: Result<BootstrapResponse, CallError>) {
        match caller {
            Caller::Client(reply) => {
                let _ = reply.send(result);
            }
            Caller::Refresh => {
                tracing::debug!("session refresh: {result:?}");
                // Lost or failed, not refused: a refusal (`NotLoggedIn`) has ended the session
                // before this point. The bootstrap still knows this device, so the mailbox works
                // on this connection anyway rather than wait for the next one.
                let connected = self
                    .session
                    .as_ref()
                    .filter(|s| self.bootstraps.target(Some(&s.bootstrap)).is_some())
                    .map(|s| s.user.clone());
                if result.is_err()
                    && let Some(user) = connected
                {
                    self.mailbox.session_started(&user, Instant::now());
                }
            }
            Caller::Mailbox(call) => self.handle_mailbox_answer(call, result),
            Caller::Devices(user) => self.handle_devices_answer(user, result),
            Caller::Group(call) => self.handle_group_answer(call, result),
            Caller::Settings => self.handle_settings_answer(result),
            Caller::Bury(pending) => self.handle_bury_answer(*pending, result),
            Caller::Broadcasts { bootstrap } => self.handle_broadcasts_answer(bootstrap, result),
            Caller::Report(what) => {
                if let Err(e) = result {
                    tracing::debug!("{what} failed: {e:?}");
                }
            }
        }
    }

    /// Sends the requests that waited for a bootstrap connection, if one is up now.
    fn dispatch_waiting_calls(&mut self) {
        for call in std::mem::take(&mut self.waiting_calls) {
            let target = self
                .bootstraps
                .target(self.session.as_ref().map(|s| &s.bootstrap));
            match target {
                Some(peer) => self.send_call(peer, call.request, Caller::Client(call.reply)),
                None => self.waiting_calls.push_back(call),
            }
        }
    }

    pub(super) fn handle_bootstrap_event(
        &mut self,
        event: request_response::Event<BootstrapRequest, BootstrapResponse>,
    ) {
        match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.complete_call(request_id, Ok(response)),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!("request to bootstrap {peer} failed: {error}");
                self.complete_call(
                    request_id,
                    Err(CallError::Failed(format!("the request was lost: {error}"))),
                );
            }
            // Outbound only: nobody can send this node a bootstrap request.
            other => tracing::trace!("bootstrap protocol: {other:?}"),
        }
        // An answer may have started a session or settled mailbox work: send what is due now.
        self.drive_mailbox();
    }

    fn complete_call(
        &mut self,
        id: OutboundRequestId,
        result: Result<BootstrapResponse, CallError>,
    ) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => return self.answer(call.caller, Err(e)),
        };
        match response {
            BootstrapResponse::Session { user, cert } if call.kind == CallKind::StartsSession => {
                let verified = cert::verify(&cert, &self.local_peer, |p| *p == call.peer);
                if verified != Ok(user.as_str()) {
                    tracing::warn!(
                        "bootstrap {} sent an unusable certificate: {verified:?}",
                        call.peer
                    );
                    return self.answer(
                        call.caller,
                        Err(CallError::Failed(
                            "the bootstrap sent an invalid certificate".into(),
                        )),
                    );
                }
                let session = Session {
                    user,
                    cert,
                    bootstrap: call.peer,
                };
                let response = BootstrapResponse::Session {
                    user: session.user.clone(),
                    cert: session.cert.clone(),
                };
                self.start_session(session, client_reply(call.caller, response));
            }
            BootstrapResponse::Settings(settings) => {
                self.ingest_settings(settings.clone());
                self.answer(call.caller, Ok(BootstrapResponse::Settings(settings)));
            }
            BootstrapResponse::Group(roster) => {
                self.ingest_roster(roster.clone());
                self.answer(call.caller, Ok(BootstrapResponse::Group(roster)));
            }
            BootstrapResponse::Done if call.leaves.is_some() => {
                if let Some(group) = &call.leaves {
                    self.group_gone(group);
                }
                self.answer(call.caller, Ok(BootstrapResponse::Done));
            }
            BootstrapResponse::Done if call.kind == CallKind::EndsSession => {
                self.end_session(false, client_reply(call.caller, BootstrapResponse::Done));
            }
            BootstrapResponse::Error {
                code: ErrorCode::NotLoggedIn,
                ..
            } => {
                // The bootstrap is the authority: its "not logged in" ends the local session. Only
                // a surprise is an event (not the answer to this device's own logout).
                self.end_session(call.kind != CallKind::EndsSession, None);
                self.answer(call.caller, Err(CallError::NotLoggedIn));
            }
            BootstrapResponse::Error {
                code,
                message,
                retry_after_ms,
            } => self.answer(
                call.caller,
                Err(CallError::Refused {
                    code,
                    message,
                    retry_after_ms,
                }),
            ),
            other => self.answer(call.caller, Ok(other)),
        }
    }

    // ---- the session ------------------------------------------------------------------------

    /// Starts or renews the session; `answer` is sent once it is on disk.
    fn start_session(&mut self, session: Session, answer: Option<(CallReply, BootstrapResponse)>) {
        if self.session.as_ref().map(|s| &s.user) != Some(&session.user) {
            tracing::info!("logged in as {}", session.user);
        }
        let stored = session.to_stored();
        self.mailbox.session_started(&session.user, Instant::now());
        let other_account = self
            .session
            .as_ref()
            .is_some_and(|s| s.user != session.user);
        if other_account {
            self.forget_groups();
            self.forget_settings();
        }
        self.session = Some(session);
        self.open_mls();
        self.refresh_groups();
        self.refresh_settings();
        self.sync_broadcasts();
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.set_session(Some(stored)).await;
            if let Err(e) = &result {
                tracing::error!("cannot store the session: {e}");
            }
            if let Some((reply, response)) = answer {
                let _ = reply.send(result.map(|()| response).map_err(|e| {
                    CallError::Failed(format!("the session could not be stored: {e}"))
                }));
            }
            StoreDone::Nothing
        });
    }

    /// Ends the session (if any) and forgets it on disk; `emit`: say so with
    /// [`Event::LoggedOut`]. `answer` is sent once the store has forgotten it.
    fn end_session(&mut self, emit: bool, answer: Option<(CallReply, BootstrapResponse)>) {
        let had = self.session.take().is_some();
        self.mls = None;
        self.mailbox.session_ended();
        self.forget_groups();
        self.forget_settings();
        if had {
            tracing::info!("logged out");
            if emit {
                self.emit(Event::LoggedOut);
            }
        }
        if !had && answer.is_none() {
            return;
        }
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.set_session(None).await;
            if let Err(e) = &result {
                tracing::error!("cannot forget the session: {e}");
            }
            if let Some((reply, response)) = answer {
                let _ = reply.send(result.map(|()| response).map_err(|e| {
                    CallError::Failed(format!("the session could not be forgotten: {e}"))
                }));
            }
            StoreDone::Nothing
        });
    }

    // ---- bootstrap connections --------------------------------------------------------------

    /// Dials the bootstraps whose redial time has come, and fails requests that waited too long.
    pub(super) fn handle_bootstrap_tick(&mut self) {
        self.dial_due_bootstraps();
        self.drive_mailbox();
        let now = Instant::now();
        while self
            .waiting_calls
            .front()
            .is_some_and(|c| c.deadline <= now)
        {
            if let Some(call) = self.waiting_calls.pop_front() {
                let _ = call.reply.send(Err(CallError::NoBootstrap));
            }
        }
    }

    fn dial_due_bootstraps(&mut self) {
        let now = Instant::now();
        for dial in self.bootstraps.due(now) {
            tracing::debug!("dialling bootstrap {} at {:?}", dial.peer, dial.addrs);
            let opts = DialOpts::peer_id(dial.peer)
                .addresses(dial.addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!("cannot dial bootstrap {}: {e}", dial.peer);
                self.bootstraps.dial_failed(&dial.peer, now);
            }
        }
    }

    /// A bootstrap advertised on the LAN: used if this node has none configured (and none yet).
    pub(super) fn handle_lan_bootstrap(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.bootstraps.discovered(peer, addrs, Instant::now()) {
            tracing::info!("using bootstrap {peer} found on the LAN");
            self.swarm.behaviour_mut().keep_alive.insert(peer);
            self.peers
                .entry(peer)
                .or_insert_with(|| PeerEntry::new(PeerSource::Mdns))
                .bootstrap = true;
            self.dial_due_bootstraps();
        } else {
            tracing::debug!("not using LAN bootstrap {peer}: this node has another");
        }
    }

    /// The first connection to a bootstrap is up: renew the session's certificate, reserve a
    /// relay slot, and send what waited.
    pub(super) fn handle_bootstrap_up(&mut self, peer: PeerId) {
        tracing::info!("connected to bootstrap {peer}");
        let refresh = self
            .session
            .as_ref()
            .is_some_and(|s| s.bootstrap == peer || !self.bootstraps.trusts(&s.bootstrap));
        if refresh {
            self.send_call(peer, BootstrapRequest::Session, Caller::Refresh);
        }
        self.reserve_relay(peer);
        self.dispatch_waiting_calls();
    }

    /// The last connection to a bootstrap closed (a redial is scheduled).
    pub(super) fn handle_bootstrap_down(&mut self, peer: PeerId) {
        tracing::info!("lost the connection to bootstrap {peer}");
        self.release_relay(peer);
        if self
            .bootstraps
            .target(self.session.as_ref().map(|s| &s.bootstrap))
            .is_none()
        {
            // Until the next session refresh on a new connection.
            self.mailbox.offline();
        }
    }

    // ---- pushes from the bootstrap ----------------------------------------------------------

    pub(super) fn handle_notify_event(
        &mut self,
        event: request_response::Event<Notification, NotifyAck>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // Identity from the connection: only this node's own bootstraps may push.
                if !self.bootstraps.trusts(&peer) {
                    tracing::debug!("ignoring a notification from {peer}: not a bootstrap of ours");
                    return;
                }
                self.handle_notification(request);
                if self
                    .swarm
                    .behaviour_mut()
                    .notify
                    .send_response(channel, NotifyAck {})
                    .is_err()
                {
                    tracing::debug!("bootstrap {peer} went away before the notification ack");
                }
            }
            other => tracing::trace!("notify protocol: {other:?}"),
        }
    }

    fn handle_notification(&mut self, notification: Notification) {
        match notification {
            Notification::Presence { user, online } => {
                self.user_presence_changed(&user);
                self.emit(Event::Presence { user, online })
            }
            Notification::FriendRequest { from } => self.emit(Event::FriendRequest { from }),
            Notification::FriendAdded { user } => self.emit(Event::FriendAdded { user }),
            Notification::FriendRemoved { user } => self.emit(Event::FriendRemoved { user }),
            Notification::LoggedOut => self.end_session(true, None),
            Notification::GroupChanged { group, version } => {
                self.e2e_group_changed(&group);
                self.group_changed(group, version)
            }
            Notification::Mls { conversation, .. } => self.mls_notified(conversation),
            Notification::SettingsChanged { version } => self.settings_changed(version),
            Notification::Mailbox { last_seq } => {
                self.mailbox.notified(last_seq);
                self.drive_mailbox();
            }
            Notification::FileHeld { root } => self.file_held(root),
            other => tracing::debug!("ignoring an unknown notification: {other:?}"),
        }
    }

    // ---- certificates on incoming messages --------------------------------------------------

    /// The account `sender` proves with the certificate on `message`, if any and valid. An
    /// invalid one does not refuse the message: it is just from a bare peer.
    pub(super) fn certified_user(
        &mut self,
        sender: &PeerId,
        message: &ChatMessage,
    ) -> Option<String> {
        let cert = message.author_cert.as_ref()?;
        let user = match cert::verify(cert, sender, |p| self.bootstraps.trusts(p)) {
            Ok(user) => user.to_owned(),
            Err(e) => {
                tracing::debug!(
                    "certificate on {} from {sender} not accepted: {e}",
                    message.id
                );
                return None;
            }
        };
        if let Some(entry) = self.peers.get_mut(sender)
            && entry.user.as_ref() != Some(&user)
        {
            entry.user = Some(user.clone());
            self.remember_peer(*sender);
        }
        Some(user)
    }
}
