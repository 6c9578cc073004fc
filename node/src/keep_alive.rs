//! Keeps connections to chosen peers (the node's bootstraps) open while they are idle.
//!
//! A swarm closes a connection once no behaviour has work on it for the idle timeout. The
//! connection to the bootstrap must stay up regardless: it is what makes this user "online" for
//! their friends and what notifications arrive on. Whether other behaviours happen to keep it
//! alive (a relay reservation, the gossip mesh) is not something to rely on. Dead connections are
//! still closed: by the failing ping (see `event_loop/nat.rs`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// The behaviour: connections to the peers in its set are kept alive.
#[derive(Debug, Default)]
pub(crate) struct Behaviour {
    peers: HashSet<PeerId>,
}

impl Behaviour {
    /// Keeps connections to `peer` made from now on alive.
    pub(crate) fn insert(&mut self, peer: PeerId) {
        self.peers.insert(peer);
    }

    fn handler(&self, peer: &PeerId) -> Handler {
        Handler {
            keep_alive: self.peers.contains(peer),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer))
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}
}

/// A handler that speaks no protocol and only says whether to keep its connection.
#[derive(Debug, Clone)]
pub(crate) struct Handler {
    keep_alive: bool,
}

impl libp2p::swarm::ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    // Denied upgrades never negotiate anything: there is nothing to handle.
    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::swarm::ConnectionHandler;

    #[test]
    fn only_connections_to_the_chosen_peers_are_kept() {
        let (bootstrap, other) = (PeerId::random(), PeerId::random());
        let mut behaviour = Behaviour::default();
        behaviour.insert(bootstrap);
        assert!(behaviour.handler(&bootstrap).connection_keep_alive());
        assert!(!behaviour.handler(&other).connection_keep_alive());
    }
}
