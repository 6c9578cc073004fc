//! Confab's end-to-end tests and what they share.
//!
//! Each file in `tests/` starts real bootstraps and real nodes in-process on loopback
//! (127.0.0.1, mDNS off) and checks what a user would see. Tests that drive the `confab` and
//! `confab-bootstrap` binaries as processes live beside those binaries (`node/tests/`,
//! `bootstrap/tests/`), where cargo builds them for the test.
//!
//! This library holds helpers for those tests: [`nodes`] starts in-process nodes, and [`raw`] is a
//! libp2p client that sends arbitrary bytes on a request-response protocol (to play a hostile peer).

pub mod nodes {
    //! In-process nodes for end-to-end tests.

    use std::path::Path;
    use std::time::Duration;

    use confab_node::{Client, Config, Event};
    use tokio::sync::broadcast;

    /// A node on `dir` (its device identity) that knows only the bootstrap at `bootstrap`:
    /// loopback, mDNS off, a fast gossip heartbeat. Returns it with its event stream.
    pub async fn node(
        dir: &Path,
        name: &str,
        bootstrap: &str,
    ) -> (Client, broadcast::Receiver<Event>) {
        let mut config = Config::new(dir);
        config.name = Some(name.into());
        config.mdns = false;
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config.bootstrap = vec![bootstrap.into()];
        config.gossip_heartbeat = Duration::from_millis(100);
        let client = confab_node::start(config).await.expect("the node starts");
        let events = client.subscribe();
        (client, events)
    }
}

pub mod chat {
    //! What the chat tests share: a bootstrap in-process, waiting for events, short names.

    use std::path::Path;
    use std::time::Duration;

    use confab_node::{Client, Conversation, DeliveryState, Event, Message, MessageId};
    use tokio::sync::broadcast;
    use tokio::time::timeout;

    use crate::nodes::node;

    /// How long any one wait may take.
    pub const WAIT: Duration = Duration::from_secs(20);
    /// The password every test account uses.
    pub const PASSWORD: &str = "seven quiet owls";

    /// A bootstrap started in-process, with its first listen address.
    pub struct Server {
        /// The running bootstrap.
        pub bootstrap: confab_bootstrap::Bootstrap,
        /// Its first listen address (ending in `/p2p/<id>`).
        pub addr: String,
    }

    /// A bootstrap on `dir`, listening on `listen`.
    pub async fn server_on(dir: &Path, listen: &str) -> Server {
        let mut config = confab_bootstrap::Config::new(dir);
        config.listen = vec![listen.into()];
        config.mdns = false;
        let bootstrap = confab_bootstrap::start(config).await.unwrap();
        let addr = bootstrap.listen_addrs[0].clone();
        Server { bootstrap, addr }
    }

    /// Waits for the first event matching `pred`; returns it with every message event seen before.
    pub async fn expect(
        events: &mut broadcast::Receiver<Event>,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> (Event, Vec<Message>) {
        let mut before = Vec::new();
        let found = timeout(WAIT, async {
            loop {
                match events.recv().await {
                    Ok(e) if pred(&e) => return e,
                    Ok(Event::Message(m)) => before.push(m),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => panic!("{n} events missed"),
                    Err(broadcast::error::RecvError::Closed) => {
                        panic!("node stopped before {what}")
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"));
        (found, before)
    }

    /// The next message with the text `text`.
    pub async fn expect_message(events: &mut broadcast::Receiver<Event>, text: &str) -> Message {
        let (event, _) = expect(
            events,
            &format!("message {text:?}"),
            |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some(text)),
        )
        .await;
        match event {
            Event::Message(m) => m,
            _ => unreachable!(),
        }
    }

    /// The next `n` message events, in order.
    pub async fn messages(events: &mut broadcast::Receiver<Event>, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            let (event, _) = expect(events, &format!("message {} of {n}", out.len() + 1), |e| {
                matches!(e, Event::Message(_))
            })
            .await;
            if let Event::Message(m) = event {
                out.push(m);
            }
        }
        out
    }

    /// Sends `text` to `to` and waits until the bootstrap has it.
    pub async fn send_stored(
        client: &Client,
        events: &mut broadcast::Receiver<Event>,
        to: &str,
        text: &str,
    ) -> MessageId {
        let id = client.send(&user(to), text).await.unwrap();
        expect(
            events,
            &format!("{text:?} stored by the bootstrap"),
            |e| matches!(e, Event::Delivery { id: got, state: DeliveryState::Sent } if *got == id),
        )
        .await;
        id
    }

    pub fn user(name: &str) -> Conversation {
        Conversation::User(name.into())
    }

    pub fn texts(messages: &[Message]) -> Vec<&str> {
        messages
            .iter()
            .map(|m| m.text.as_deref().unwrap_or(""))
            .collect()
    }

    pub fn ids(messages: &[Message]) -> Vec<MessageId> {
        messages.iter().map(|m| m.id).collect()
    }

    /// Registers `name` from a node on `dir`, then stops it (the account exists, its device is away).
    pub async fn registered_then_away(dir: &Path, name: &str, bootstrap: &str) {
        let (client, _) = node(dir, name, bootstrap).await;
        client.register(name, PASSWORD).await.unwrap();
        client.shutdown().await.unwrap();
    }

    /// A TCP port on 127.0.0.1 that is free now.
    pub fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }
}

pub mod rpc {
    //! JSON-RPC against an in-process node: the `confab rpc` code path, without the process.

    use confab_node::Client;
    use tokio::time::timeout;

    use crate::chat::WAIT;

    /// JSON-RPC over an in-process pipe (the `confab rpc` code path, without the process).
    pub struct Rpc {
        input: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        output:
            tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
        next_id: u64,
        /// Notifications read while waiting for answers, oldest first.
        notes: std::collections::VecDeque<serde_json::Value>,
    }

    impl Rpc {
        /// Serves JSON-RPC for `client` on an in-process pipe.
        pub fn serve(client: Client) -> Self {
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            let (their_read, their_write) = tokio::io::split(theirs);
            tokio::spawn(confab_node::rpc::serve(
                client,
                tokio::io::BufReader::new(their_read),
                their_write,
            ));
            let (our_read, our_write) = tokio::io::split(ours);
            Self {
                input: our_write,
                output: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(our_read)),
                next_id: 1,
                notes: Default::default(),
            }
        }

        /// The whole response object (`result` or `error`); notifications are skipped.
        pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
            use tokio::io::AsyncWriteExt;
            let id = self.next_id;
            self.next_id += 1;
            let line =
                serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            self.input
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            timeout(WAIT, async {
                loop {
                    let line = self.output.next_line().await.unwrap().expect("a line");
                    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                    if value["id"] == id {
                        return value;
                    }
                    if value.get("method").is_some() {
                        self.notes.push_back(value);
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no answer to {method}"))
        }

        /// The result of a call that must succeed.
        pub async fn ok(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
            let answer = self.call(method, params).await;
            assert!(answer.get("error").is_none(), "{method}: {answer}");
            answer["result"].clone()
        }

        /// The error code of a call that must fail.
        pub async fn code(&mut self, method: &str, params: serde_json::Value) -> i64 {
            let answer = self.call(method, params).await;
            answer["error"]["code"]
                .as_i64()
                .unwrap_or_else(|| panic!("{method}: expected an error, got {answer}"))
        }

        /// Waits for a notification `method` whose params satisfy `pred`; returns its params.
        pub async fn note(
            &mut self,
            method: &str,
            pred: impl Fn(&serde_json::Value) -> bool,
        ) -> serde_json::Value {
            if let Some(i) = self
                .notes
                .iter()
                .position(|n| n["method"] == method && pred(&n["params"]))
            {
                let note = self.notes.remove(i).unwrap_or_default();
                self.notes.drain(..i);
                return note["params"].clone();
            }
            self.notes.clear();
            timeout(WAIT, async {
                loop {
                    let line = self.output.next_line().await.unwrap().expect("a line");
                    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                    if value["method"] == method && pred(&value["params"]) {
                        return value["params"].clone();
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no {method} notification"))
        }
    }
}

pub mod raw {
    //! A request-response client that writes whatever bytes it is given on any protocol.

    use std::io;
    use std::time::Duration;

    use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{PeerId, StreamProtocol, Swarm, identity};
    use tokio::time::timeout;

    /// Writes whatever bytes it is given; reads the whole answer.
    #[derive(Clone, Default)]
    pub struct RawCodec;

    impl request_response::Codec for RawCodec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = Vec<u8>;

        async fn read_request<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            io.read_to_end(&mut buf).await?;
            Ok(buf)
        }

        async fn read_response<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            // Room for the largest frame of any protocol (a file chunk) and its framing.
            io.take(2 << 20).read_to_end(&mut buf).await?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream closed without an answer",
                ));
            }
            Ok(buf)
        }

        async fn write_request<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            req: Vec<u8>,
        ) -> io::Result<()> {
            io.write_all(&req).await?;
            io.close().await
        }

        async fn write_response<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            res: Vec<u8>,
        ) -> io::Result<()> {
            io.write_all(&res).await?;
            io.close().await
        }
    }

    /// The behaviour of a raw client.
    pub type Raw = request_response::Behaviour<RawCodec>;

    /// A swarm that speaks `protocol` outbound with [`RawCodec`].
    pub fn raw_swarm(protocol: &'static str) -> Swarm<Raw> {
        raw_peer(protocol, ProtocolSupport::Outbound)
    }

    /// A swarm that answers `protocol` with [`RawCodec`] (to play a hostile server).
    pub fn raw_server(protocol: &'static str) -> Swarm<Raw> {
        raw_peer(protocol, ProtocolSupport::Inbound)
    }

    fn raw_peer(protocol: &'static str, support: ProtocolSupport) -> Swarm<Raw> {
        confab_node::net::build_swarm(
            identity::Keypair::generate_ed25519(),
            Duration::from_secs(60),
            |_| {
                Ok(request_response::Behaviour::with_codec(
                    RawCodec,
                    [(StreamProtocol::new(protocol), support)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10)),
                ))
            },
        )
        .unwrap()
    }

    /// Sends `bytes` as one request and returns the answer, or the failure as text.
    pub async fn exchange(
        swarm: &mut Swarm<Raw>,
        peer: PeerId,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let id = swarm.behaviour_mut().send_request(&peer, bytes);
        timeout(Duration::from_secs(15), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    }) if request_id == id => return Ok(response),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id,
                        error,
                        ..
                    }) if request_id == id => {
                        return Err(error.to_string());
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("an answer or a failure")
    }
}

pub mod files {
    //! Files for the transfer tests.

    use std::path::{Path, PathBuf};

    use confab_node::{Client, Event, MessageId};
    use tokio::sync::broadcast;

    use crate::chat::expect;

    /// `client` fetches message `id`'s file into `dest`, reporting progress before the end
    /// (checked: a `transfer_progress` short of the total, then `transfer_complete`); returns
    /// where the file is.
    pub async fn fetch_with_progress(
        client: &Client,
        events: &mut broadcast::Receiver<Event>,
        id: MessageId,
        dest: &Path,
    ) -> PathBuf {
        let fetch = {
            let (client, dest) = (client.clone(), dest.to_owned());
            tokio::spawn(async move { client.fetch_file(id, &dest).await })
        };
        expect(events, "progress", |e| {
            matches!(e, Event::TransferProgress { id: got, done, total } if *got == id && done < total)
        })
        .await;
        expect(
            events,
            "the end of the download",
            |e| matches!(e, Event::TransferComplete { id: got, .. } if *got == id),
        )
        .await;
        fetch.await.unwrap().expect("downloaded")
    }

    /// Writes `mib` MiB of random bytes to `path`, one MiB at a time.
    pub fn random_file(path: &Path, mib: usize) {
        use rand::RngCore;
        use std::io::Write;
        let mut file = std::fs::File::create(path).unwrap();
        let mut piece = vec![0u8; 1 << 20];
        for _ in 0..mib {
            rand::rng().fill_bytes(&mut piece);
            file.write_all(&piece).unwrap();
        }
    }
}
