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
            io.take(1 << 20).read_to_end(&mut buf).await?;
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
        confab_node::net::build_swarm(
            identity::Keypair::generate_ed25519(),
            Duration::from_secs(60),
            |_| {
                Ok(request_response::Behaviour::with_codec(
                    RawCodec,
                    [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
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
