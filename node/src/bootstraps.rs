//! The node's bootstraps: which peers it trusts as bootstraps (the configured ones, or else the
//! first one found on the LAN), whether each is connected, and when to redial one that is not.
//!
//! Sans-IO: the event loop reports connections, failures and the time; this module answers which
//! bootstraps to dial now, which one to send requests to, and whom to trust as a certificate
//! issuer. Redials back off from [`REDIAL_MIN`] doubling to [`REDIAL_MAX`]; a connection that
//! stayed up for [`STABLE_AFTER`] resets the back-off.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::config::limits::{
    BOOTSTRAP_REDIAL_MAX as REDIAL_MAX, BOOTSTRAP_REDIAL_MIN as REDIAL_MIN,
    BOOTSTRAP_STABLE_AFTER as STABLE_AFTER, MAX_ADDRS_PER_BOOTSTRAP as MAX_ADDRS,
};

/// How the node came to know a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Given in [`crate::Config::bootstrap`].
    Configured,
    /// Advertised on the LAN over mDNS with `role=bootstrap`.
    Discovered,
}

#[derive(Debug)]
struct Link {
    peer: PeerId,
    /// Dialable addresses, without `/p2p/`.
    addrs: Vec<Multiaddr>,
    origin: Origin,
    connections: u32,
    connected_at: Option<Instant>,
    /// The address of the current outgoing connection (the one to relay through).
    connected_addr: Option<Multiaddr>,
    dialing: bool,
    /// When to dial next, while neither connected nor dialing.
    next_dial: Option<Instant>,
    backoff: Duration,
    /// Its mDNS record went away (only for discovered bootstraps).
    expired: bool,
}

impl Link {
    fn new(peer: PeerId, addrs: Vec<Multiaddr>, origin: Origin, now: Instant) -> Self {
        let mut link = Self {
            peer,
            addrs: Vec::new(),
            origin,
            connections: 0,
            connected_at: None,
            connected_addr: None,
            dialing: false,
            next_dial: Some(now),
            backoff: REDIAL_MIN,
            expired: false,
        };
        link.add_addrs(addrs);
        link
    }

    fn add_addrs(&mut self, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            if !self.addrs.contains(&addr) && self.addrs.len() < MAX_ADDRS {
                self.addrs.push(addr);
            }
        }
    }

    fn schedule_redial(&mut self, now: Instant) {
        self.next_dial = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(REDIAL_MAX);
    }
}

/// A dial the event loop should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dial {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// Every bootstrap the node knows, configured ones first.
#[derive(Debug, Default)]
pub(crate) struct Bootstraps {
    links: Vec<Link>,
}

impl Bootstraps {
    /// The configured bootstraps, to be dialled at once.
    pub(crate) fn new(configured: Vec<(PeerId, Vec<Multiaddr>)>, now: Instant) -> Self {
        let mut this = Self::default();
        for (peer, addrs) in configured {
            match this.links.iter_mut().find(|l| l.peer == peer) {
                Some(link) => link.add_addrs(addrs),
                None => this
                    .links
                    .push(Link::new(peer, addrs, Origin::Configured, now)),
            }
        }
        this
    }

    /// Whether any bootstrap is known at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether `peer` is one of this node's bootstraps: it may push notifications and its
    /// certificates are believed.
    pub(crate) fn trusts(&self, peer: &PeerId) -> bool {
        self.links.iter().any(|l| l.peer == *peer)
    }

    /// A bootstrap advertised on the LAN. It is adopted only when none is configured and none was
    /// adopted before (or the adopted one has left the LAN and is not connected). Returns whether
    /// it is now one of this node's bootstraps.
    pub(crate) fn discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) -> bool {
        if self.links.iter().any(|l| l.origin == Origin::Configured) {
            return false;
        }
        if let Some(link) = self.links.iter_mut().find(|l| l.peer == peer) {
            link.expired = false;
            link.add_addrs(addrs);
            if link.connections == 0 && !link.dialing {
                link.next_dial = Some(now);
            }
            return true;
        }
        let replaceable = self
            .links
            .iter()
            .all(|l| l.expired && l.connections == 0 && !l.dialing);
        if !replaceable {
            return false;
        }
        self.links.clear();
        self.links
            .push(Link::new(peer, addrs, Origin::Discovered, now));
        true
    }

    /// A discovered bootstrap's mDNS record went away. It is still used (and redialled) until
    /// another one replaces it.
    pub(crate) fn expired(&mut self, peer: &PeerId) {
        if let Some(link) = self.links.iter_mut().find(|l| l.peer == *peer) {
            link.expired = link.origin == Origin::Discovered;
        }
    }

    /// The bootstraps to dial now; each is then considered dialling until
    /// [`Bootstraps::connected`] or [`Bootstraps::dial_failed`].
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Dial> {
        let mut out = Vec::new();
        for link in &mut self.links {
            if link.connections == 0 && !link.dialing && link.next_dial.is_some_and(|t| t <= now) {
                link.dialing = true;
                link.next_dial = None;
                out.push(Dial {
                    peer: link.peer,
                    addrs: link.addrs.clone(),
                });
            }
        }
        out
    }

    /// A dial to `peer` failed (if it is a bootstrap): redial later.
    pub(crate) fn dial_failed(&mut self, peer: &PeerId, now: Instant) {
        if let Some(link) = self.links.iter_mut().find(|l| l.peer == *peer)
            && link.connections == 0
        {
            link.dialing = false;
            link.schedule_redial(now);
        }
    }

    /// A connection to `peer` is up (`addr`: the address dialled, for an outgoing one). Returns
    /// true when it is a bootstrap and this is its first connection.
    pub(crate) fn connected(
        &mut self,
        peer: &PeerId,
        addr: Option<Multiaddr>,
        now: Instant,
    ) -> bool {
        let Some(link) = self.links.iter_mut().find(|l| l.peer == *peer) else {
            return false;
        };
        link.connections += 1;
        link.dialing = false;
        link.next_dial = None;
        if let Some(addr) = addr {
            link.connected_addr = Some(addr);
        }
        if link.connections == 1 {
            link.connected_at = Some(now);
            true
        } else {
            false
        }
    }

    /// A connection to `peer` closed, `remaining` are left. Returns true when it was a bootstrap's
    /// last: a redial is scheduled.
    pub(crate) fn disconnected(&mut self, peer: &PeerId, remaining: u32, now: Instant) -> bool {
        let Some(link) = self.links.iter_mut().find(|l| l.peer == *peer) else {
            return false;
        };
        link.connections = remaining;
        if remaining > 0 || link.dialing {
            return false;
        }
        if link
            .connected_at
            .take()
            .is_some_and(|t| now.saturating_duration_since(t) >= STABLE_AFTER)
        {
            link.backoff = REDIAL_MIN;
        }
        link.connected_addr = None;
        link.schedule_redial(now);
        true
    }

    /// Whether `peer` is a bootstrap with an open connection.
    pub(crate) fn is_connected(&self, peer: &PeerId) -> bool {
        self.links
            .iter()
            .any(|l| l.peer == *peer && l.connections > 0)
    }

    /// The bootstrap to send a request to: the one the session is with if it is still one of
    /// this node's bootstraps (and only if it is connected); otherwise the first connected one.
    pub(crate) fn target(&self, session: Option<&PeerId>) -> Option<PeerId> {
        if let Some(peer) = session
            && self.trusts(peer)
        {
            return self.is_connected(peer).then_some(*peer);
        }
        self.links
            .iter()
            .find(|l| l.connections > 0)
            .map(|l| l.peer)
    }

    /// The address of a connected bootstrap, ending in `/p2p/<its peer id>`: the base of
    /// `/p2p-circuit` addresses through it.
    pub(crate) fn relay_base(&self, peer: &PeerId) -> Option<Multiaddr> {
        let link = self
            .links
            .iter()
            .find(|l| l.peer == *peer && l.connections > 0)?;
        let addr = link.connected_addr.as_ref().or(link.addrs.first())?;
        Some(addr.clone().with(Protocol::P2p(link.peer)))
    }

    /// Every connected bootstrap.
    pub(crate) fn connected_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.links
            .iter()
            .filter(|l| l.connections > 0)
            .map(|l| l.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn configured_bootstraps_are_dialled_at_once_and_redialled_with_back_off() {
        let t0 = Instant::now();
        let b = PeerId::random();
        let mut set = Bootstraps::new(vec![(b, vec![addr(1)])], t0);
        assert!(set.trusts(&b));
        assert_eq!(
            set.due(t0),
            vec![Dial {
                peer: b,
                addrs: vec![addr(1)]
            }]
        );
        assert!(set.due(t0).is_empty(), "dialling: not again");

        // Failures back off 1 s, 2 s, 4 s, ... up to 30 s.
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            set.dial_failed(&b, now);
            let mut wait = Duration::ZERO;
            while set.due(now + wait).is_empty() {
                wait += Duration::from_millis(500);
                assert!(wait <= REDIAL_MAX, "bounded");
            }
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);

        // Connected: nothing to dial; a short-lived connection keeps the back-off, a stable
        // one resets it.
        assert!(set.connected(&b, Some(addr(1)), now));
        assert!(!set.connected(&b, None, now), "second connection");
        assert!(!set.disconnected(&b, 1, now));
        assert_eq!(set.target(None), Some(b));
        assert!(set.disconnected(&b, 0, now + Duration::from_secs(1)));
        assert_eq!(set.target(None), None);
        assert!(set.due(now + Duration::from_secs(29)).is_empty());
        assert_eq!(set.due(now + Duration::from_secs(31)).len(), 1);
        let later = now + Duration::from_secs(40);
        set.connected(&b, Some(addr(1)), later);
        set.disconnected(&b, 0, later + STABLE_AFTER);
        assert_eq!(set.due(later + STABLE_AFTER + REDIAL_MIN).len(), 1);
    }

    #[test]
    fn requests_go_to_the_session_bootstrap_or_the_first_connected() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut set = Bootstraps::new(vec![(a, vec![addr(1)]), (b, vec![addr(2)])], t0);
        set.connected(&b, Some(addr(2)), t0);
        assert_eq!(set.target(None), Some(b));
        assert_eq!(
            set.target(Some(&a)),
            None,
            "the session's bootstrap is down"
        );
        assert_eq!(
            set.target(Some(&PeerId::random())),
            Some(b),
            "a stale session"
        );
        assert_eq!(
            set.relay_base(&b).unwrap().to_string(),
            format!("/ip4/127.0.0.1/tcp/2/p2p/{b}")
        );
        assert_eq!(set.relay_base(&a), None);
    }

    #[test]
    fn a_lan_bootstrap_is_used_only_without_a_configured_one() {
        let t0 = Instant::now();
        let configured = PeerId::random();
        let mut set = Bootstraps::new(vec![(configured, vec![addr(1)])], t0);
        assert!(!set.discovered(PeerId::random(), vec![addr(2)], t0));

        let mut set = Bootstraps::new(Vec::new(), t0);
        assert!(set.is_empty());
        let (first, second) = (PeerId::random(), PeerId::random());
        assert!(set.discovered(first, vec![addr(2)], t0));
        assert!(
            !set.discovered(second, vec![addr(3)], t0),
            "the first one stays"
        );
        assert!(set.trusts(&first) && !set.trusts(&second));
        // Gone from the LAN and not connected: the next one found replaces it.
        set.expired(&first);
        assert!(set.discovered(second, vec![addr(3)], t0));
        assert!(!set.trusts(&first) && set.trusts(&second));
    }
}
