//! NAT traversal and keep-alive in the event loop.
//!
//! - Relay: once connected to a bootstrap, the node listens on `<bootstrap>/p2p-circuit`, which
//!   reserves a slot on the bootstrap's relay (v2) so that peers which cannot dial it directly can
//!   reach it through the bootstrap. A direct message to a peer that cannot be dialled directly
//!   (no address, or the direct dial failed) is sent over `<bootstrap>/p2p-circuit/p2p/<peer>`.
//! - DCUtR upgrades a relayed connection to a direct one when hole punching works; AutoNAT (v1)
//!   probes, through the bootstraps among others, whether this node is reachable from outside.
//! - Keep-alive: libp2p's ping reports failures but does not close the connection; here a failed
//!   ping closes it, so a dead bootstrap connection is noticed and redialled.

use super::*;

impl EventLoop {
    /// Reserves a relay slot on `bootstrap` (once per connection).
    pub(super) fn reserve_relay(&mut self, bootstrap: PeerId) {
        if self.relay_listeners.values().any(|p| *p == bootstrap) {
            return;
        }
        let Some(base) = self.bootstraps.relay_base(&bootstrap) else {
            return;
        };
        let (server_addr, _) = without_p2p(&base);
        self.swarm
            .behaviour_mut()
            .autonat
            .add_server(bootstrap, Some(server_addr));
        let circuit = base.with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::debug!("reserving a relay slot at {circuit}");
                self.relay_listeners.insert(id, bootstrap);
            }
            Err(e) => tracing::debug!("cannot listen on {circuit}: {e}"),
        }
    }

    pub(super) fn handle_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                ..
            } => tracing::info!("holding a relay slot on {relay_peer_id}"),
            other => tracing::debug!("relay client: {other:?}"),
        }
    }

    /// Forgets the listen addresses through `relay` (its reservation is gone).
    pub(super) fn forget_circuit_addrs(&mut self, relay: PeerId) {
        self.listen_addrs.retain(|addr| {
            let parts: Vec<Protocol> = addr.iter().collect();
            !parts
                .windows(2)
                .any(|w| matches!(w, [Protocol::P2p(p), Protocol::P2pCircuit] if *p == relay))
        });
    }

    /// Gives up the relay slot on `bootstrap` (its connection is gone).
    pub(super) fn release_relay(&mut self, bootstrap: PeerId) {
        let ids: Vec<ListenerId> = self
            .relay_listeners
            .iter()
            .filter(|(_, p)| **p == bootstrap)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.relay_listeners.remove(&id);
            self.swarm.remove_listener(id);
        }
        self.forget_circuit_addrs(bootstrap);
        self.swarm.behaviour_mut().autonat.remove_server(&bootstrap);
    }

    /// Dials `peer` through every connected bootstrap's relay.
    pub(super) fn dial_via_relay(&mut self, peer: PeerId) {
        let addrs: Vec<Multiaddr> = self
            .bootstraps
            .connected_peers()
            .filter(|b| *b != peer)
            .filter_map(|b| self.bootstraps.relay_base(&b))
            .map(|base| base.with(Protocol::P2pCircuit).with(Protocol::P2p(peer)))
            .collect();
        if addrs.is_empty() {
            tracing::debug!("cannot reach {peer}: no direct address and no relay");
            return;
        }
        tracing::debug!("dialling {peer} through a relay: {addrs:?}");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.relay_dials.insert(connection);
            }
            Err(e) => tracing::debug!("cannot dial {peer} through a relay: {e}"),
        }
    }

    /// A dial to `peer` failed: a bootstrap is redialled later; a peer with messages waiting is
    /// tried through a relay (unless that was the relayed attempt).
    pub(super) fn handle_dial_failed(&mut self, peer: PeerId, connection: ConnectionId) {
        if self.bootstraps.trusts(&peer) {
            self.bootstraps.dial_failed(&peer, Instant::now());
            return;
        }
        let was_relayed = self.relay_dials.remove(&connection);
        if !was_relayed
            && !self.swarm.is_connected(&peer)
            && self.outbox.get(&peer).is_some_and(|q| !q.is_empty())
        {
            self.dial_via_relay(peer);
        }
    }

    pub(super) fn handle_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(_) => {}
            // A peer without ping (not Confab) is not dead.
            Err(ping::Failure::Unsupported) => {}
            Err(e) => {
                tracing::debug!(
                    "ping to {} failed ({e}); closing that connection",
                    event.peer
                );
                self.swarm.close_connection(event.connection);
            }
        }
    }

    pub(super) fn handle_autonat(&mut self, event: autonat::Event) {
        match event {
            autonat::Event::StatusChanged { old, new } => {
                tracing::info!("reachability: {old:?} -> {new:?}")
            }
            other => tracing::trace!("autonat: {other:?}"),
        }
    }
}
