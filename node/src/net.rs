//! libp2p plumbing shared by nodes and `confab-bootstrap`: the transport stack, the codec of every
//! request-response protocol ([`WireCodec`]), and the gossipsub and identify settings. Front-ends
//! do not use this.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use confab_protocol::bootstrap::{BootstrapRequest, BootstrapResponse, Notification, NotifyAck};
use confab_protocol::{DirectRequest, DirectResponse, GossipFrame, Wire, decode, encode};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, Swarm, gossipsub, identity, noise, relay, tcp, yamux};

/// The identify protocol version every Confab peer announces; peers announcing another are not
/// treated as Confab peers.
pub const IDENTIFY_PROTOCOL: &str = "/confab/1";

/// The start of the agent string of a `confab-bootstrap` server.
pub const BOOTSTRAP_AGENT_PREFIX: &str = "confab-bootstrap/";

/// The agent string a node announces: `confab/<version> <display name>`.
pub fn agent_version(name: &str) -> String {
    format!("confab/{} {name}", env!("CARGO_PKG_VERSION"))
}

/// The display name inside an agent string from [`agent_version`].
pub fn name_from_agent(agent: &str) -> Option<&str> {
    let rest = agent.strip_prefix("confab/")?;
    rest.split_once(' ')
        .map(|(_, name)| name)
        .filter(|n| !n.is_empty())
}

/// Builds a swarm listening-ready on TCP and QUIC, with noise and yamux, around `behaviour`.
pub fn build_swarm<B: NetworkBehaviour>(
    keypair: identity::Keypair,
    idle_timeout: Duration,
    behaviour: impl FnOnce(&identity::Keypair) -> Result<B, String>,
) -> Result<Swarm<B>, String> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_quic()
        .with_behaviour(|key| {
            behaviour(key).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build())
}

/// Builds a node's swarm: like [`build_swarm`], plus the relay client transport, so the node can
/// listen on `<relay>/p2p-circuit` and dial `<relay>/p2p-circuit/p2p/<peer>`. `behaviour` gets the
/// `relay::client::Behaviour` that drives that transport and must include it.
pub fn build_node_swarm<B: NetworkBehaviour>(
    keypair: identity::Keypair,
    idle_timeout: Duration,
    behaviour: impl FnOnce(&identity::Keypair, relay::client::Behaviour) -> Result<B, String>,
) -> Result<Swarm<B>, String> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| e.to_string())?
        .with_behaviour(|key, relay| {
            behaviour(key, relay).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build())
}

/// The gossipsub message id: author + Confab message id, so that the same text sent twice is two
/// messages and one message relayed twice is one. Frames that do not decode (they will be
/// rejected by validation) get a hash of their bytes.
pub fn gossip_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    if let (Some(source), Ok(GossipFrame::Chat(chat) | GossipFrame::Group { message: chat, .. })) =
        (message.source, decode::<GossipFrame>(&message.data))
    {
        let mut id = source.to_bytes();
        id.extend_from_slice(chat.id.as_bytes());
        return gossipsub::MessageId::new(&id);
    }
    let mut hasher = DefaultHasher::new();
    message.data.hash(&mut hasher);
    message.source.hash(&mut hasher);
    message.sequence_number.hash(&mut hasher);
    gossipsub::MessageId::new(&hasher.finish().to_be_bytes())
}

/// Gossipsub as Confab uses it: signed messages only, strict validation, every message checked by
/// the application before it is forwarded, ids from [`gossip_message_id`].
pub fn gossipsub_config(heartbeat: Duration) -> Result<gossipsub::Config, String> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // The frame plus the envelope (signature, key, topic).
        .max_transmit_size(GossipFrame::MAX_SIZE + 4096)
        .message_id_fn(gossip_message_id)
        .heartbeat_interval(heartbeat)
        .build()
        .map_err(|e| e.to_string())
}

/// A request-response codec for any pair of [`Wire`] frame kinds: the writer sends one frame and
/// closes its side; the reader reads at most the frame kind's limit plus one byte, so an
/// oversized or malformed frame fails the stream (libp2p resets it) without touching the rest of
/// the connection.
pub struct WireCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Default for WireCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Clone for WireCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<Req, Resp> std::fmt::Debug for WireCodec<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireCodec")
    }
}

/// A request-response behaviour speaking `protocol` with a [`WireCodec`]: `support` says which
/// way requests go, `config` bounds time and streams.
pub fn wire_behaviour<Req, Resp>(
    protocol: &'static str,
    support: libp2p::request_response::ProtocolSupport,
    config: libp2p::request_response::Config,
) -> libp2p::request_response::Behaviour<WireCodec<Req, Resp>>
where
    Req: Wire + Send + Sync + 'static,
    Resp: Wire + Send + Sync + 'static,
{
    libp2p::request_response::Behaviour::with_codec(
        WireCodec::default(),
        [(StreamProtocol::new(protocol), support)],
        config,
    )
}

/// The `/confab/direct/1` codec.
pub type DirectCodec = WireCodec<DirectRequest, DirectResponse>;
/// The `/confab/bootstrap/1` codec (node → bootstrap requests).
pub type BootstrapCodec = WireCodec<BootstrapRequest, BootstrapResponse>;
/// The `/confab/file/1` codec (chunks and hash lists, both ways).
pub type FileCodec =
    WireCodec<confab_protocol::file::FileRequest, confab_protocol::file::FileResponse>;
/// The `/confab/notify/1` codec (bootstrap → node pushes).
pub type NotifyCodec = WireCodec<Notification, NotifyAck>;

async fn read_frame<T: Wire, R: AsyncRead + Unpin + Send>(io: &mut R) -> io::Result<T> {
    let mut buf = Vec::new();
    io.take(T::MAX_SIZE as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    decode::<T>(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame<T: Wire, W: AsyncWrite + Unpin + Send>(
    io: &mut W,
    value: &T,
) -> io::Result<()> {
    let bytes = encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl<Req, Resp> libp2p::request_response::Codec for WireCodec<Req, Resp>
where
    Req: Wire + Send + Sync + 'static,
    Resp: Wire + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_strings_carry_the_name() {
        assert_eq!(name_from_agent(&agent_version("Ann Lee")), Some("Ann Lee"));
        assert_eq!(name_from_agent("rust-libp2p/0.1"), None);
        assert_eq!(name_from_agent("confab/0.1.0 "), None);
    }

    fn protocol() -> StreamProtocol {
        StreamProtocol::new(confab_protocol::bootstrap::BOOTSTRAP_PROTOCOL)
    }

    #[test]
    fn the_codec_round_trips_every_frame_kind_it_carries() {
        use libp2p::request_response::Codec;
        futures::executor::block_on(async {
            let mut codec = BootstrapCodec::default();
            let request = BootstrapRequest::Login {
                user: "alice".into(),
                password: "correct horse".into(),
            };
            let mut wire = futures::io::Cursor::new(Vec::new());
            codec
                .write_request(&protocol(), &mut wire, request.clone())
                .await
                .unwrap();
            let mut read = futures::io::Cursor::new(wire.into_inner());
            let back = codec.read_request(&protocol(), &mut read).await.unwrap();
            assert_eq!(back, request);

            let mut notify = NotifyCodec::default();
            let mut wire = futures::io::Cursor::new(Vec::new());
            notify
                .write_response(&protocol(), &mut wire, NotifyAck {})
                .await
                .unwrap();
            let mut read = futures::io::Cursor::new(wire.into_inner());
            assert_eq!(
                notify.read_response(&protocol(), &mut read).await.unwrap(),
                NotifyAck {}
            );
        });
    }

    #[test]
    fn the_codec_refuses_oversized_and_malformed_frames() {
        use libp2p::request_response::Codec;
        futures::executor::block_on(async {
            let mut codec = BootstrapCodec::default();
            let big = vec![0u8; BootstrapRequest::MAX_SIZE + 10];
            let mut read = futures::io::Cursor::new(big);
            let err = codec
                .read_request(&protocol(), &mut read)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let mut read = futures::io::Cursor::new(b"garbage".to_vec());
            let err = codec
                .read_response(&protocol(), &mut read)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            // A request that breaks a rule is never written.
            let mut wire = futures::io::Cursor::new(Vec::new());
            let err = codec
                .write_request(
                    &protocol(),
                    &mut wire,
                    BootstrapRequest::SearchUsers {
                        query: "x".repeat(10_000),
                    },
                )
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(wire.into_inner().is_empty());
        });
    }
}
