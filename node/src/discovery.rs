//! LAN discovery over mDNS (mdns-sd): advertise `_confab._udp.local.` with this node's peer id,
//! display name and protocol version, and report Confab peers that appear and disappear.
//!
//! A `confab-bootstrap` advertises the same service with the TXT entry `role=bootstrap` (and its
//! `peer_id`, `pv` and, if it has one, `quic` port; the TCP port is the service's port); those are
//! reported with [`Role::Bootstrap`]. A record without `role` is a node.
//!
//! A [`ServiceDaemon`] joins the multicast group on every interface as soon as it is created, so
//! this module is only ever started when mDNS is wanted; with mDNS off no socket is opened.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use confab_protocol::limits::MAX_NAME_BYTES;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

/// The DNS-SD service type Confab nodes advertise.
pub(crate) const SERVICE_TYPE: &str = "_confab._udp.local.";
/// The discovery protocol version in the TXT record; peers with another are ignored.
const DISCOVERY_VERSION: &str = "1";

/// What an advertised service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A Confab node (a person's device).
    Peer,
    /// A `confab-bootstrap` server on the LAN.
    Bootstrap,
}

impl Role {
    /// The role in a TXT record: `role=bootstrap` is a bootstrap; anything else (or none) a node.
    fn from_txt(role: Option<&str>) -> Self {
        match role {
            Some(r) if r.eq_ignore_ascii_case("bootstrap") => Role::Bootstrap,
            _ => Role::Peer,
        }
    }
}

/// What discovery reports to the event loop.
#[derive(Debug)]
pub(crate) enum Discovered {
    Found {
        peer_id: PeerId,
        name: String,
        addrs: Vec<Multiaddr>,
        role: Role,
    },
    Expired {
        peer_id: PeerId,
    },
}

/// A running mDNS responder and browser.
pub(crate) struct Discovery {
    daemon: ServiceDaemon,
    local: PeerId,
    name: String,
    registered: Option<(String, u16, Option<u16>)>,
}

impl Discovery {
    /// Starts browsing; found peers are sent to `tx`.
    pub(crate) fn start(
        local: PeerId,
        name: String,
        tx: mpsc::Sender<Discovered>,
    ) -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(|e| e.to_string())?;
        let events = daemon.browse(SERVICE_TYPE).map_err(|e| e.to_string())?;
        tokio::spawn(browse(events, local, tx));
        Ok(Self {
            daemon,
            local,
            name,
            registered: None,
        })
    }

    /// Advertises (or re-advertises) this node at its TCP port and, if any, QUIC port.
    pub(crate) fn advertise(&mut self, tcp: u16, quic: Option<u16>) {
        if matches!(&self.registered, Some((_, t, q)) if *t == tcp && *q == quic) {
            return;
        }
        let peer = self.local.to_base58();
        let mut props = vec![
            ("peer_id", peer.clone()),
            ("name", self.name.clone()),
            ("pv", DISCOVERY_VERSION.to_owned()),
        ];
        if let Some(q) = quic {
            props.push(("quic", q.to_string()));
        }
        // The host label must be unique on the link; the peer id's tail is.
        let host =
            format!("confab-{}.local.", &peer[peer.len().saturating_sub(16)..]).to_lowercase();
        let info = match ServiceInfo::new(SERVICE_TYPE, &peer, &host, "", tcp, &props[..]) {
            Ok(info) => info.enable_addr_auto(),
            Err(e) => {
                tracing::warn!("cannot build the mDNS record: {e}");
                return;
            }
        };
        let fullname = info.get_fullname().to_owned();
        match self.daemon.register(info) {
            Ok(()) => {
                tracing::debug!("advertising {fullname} on tcp {tcp}, quic {quic:?}");
                self.registered = Some((fullname, tcp, quic));
            }
            Err(e) => tracing::warn!("mDNS registration failed: {e}"),
        }
    }

    /// Says goodbye on the network (so peers see this node leave at once) and stops the daemon.
    pub(crate) async fn shutdown(self) {
        if let Some((fullname, _, _)) = &self.registered
            && let Ok(rx) = self.daemon.unregister(fullname)
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
        }
    }
}

async fn browse(
    events: mdns_sd::Receiver<ServiceEvent>,
    local: PeerId,
    tx: mpsc::Sender<Discovered>,
) {
    // fullname -> peer, to report removals of what was found.
    let mut found: HashMap<String, PeerId> = HashMap::new();
    while let Ok(event) = events.recv_async().await {
        let report = match event {
            ServiceEvent::ServiceResolved(info) => {
                let Some(peer_id) = info
                    .get_property_val_str("peer_id")
                    .and_then(|p| p.parse::<PeerId>().ok())
                else {
                    continue;
                };
                if peer_id == local || info.get_property_val_str("pv") != Some(DISCOVERY_VERSION) {
                    continue;
                }
                let mut name = info
                    .get_property_val_str("name")
                    .unwrap_or_default()
                    .to_owned();
                truncate(&mut name, MAX_NAME_BYTES);
                let quic = info
                    .get_property_val_str("quic")
                    .and_then(|q| q.parse::<u16>().ok());
                let ips = info.get_addresses().iter().map(|ip| ip.to_ip_addr());
                let addrs = dial_addresses(ips, info.get_port(), quic);
                if addrs.is_empty() {
                    continue;
                }
                found.insert(info.get_fullname().to_owned(), peer_id);
                Discovered::Found {
                    peer_id,
                    name,
                    addrs,
                    role: Role::from_txt(info.get_property_val_str("role")),
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => match found.remove(&fullname) {
                Some(peer_id) => Discovered::Expired { peer_id },
                None => continue,
            },
            _ => continue,
        };
        if tx.send(report).await.is_err() {
            break;
        }
    }
}

/// The multiaddrs to dial for a resolved service. IPv6 link-local addresses need a zone that
/// multiaddr cannot carry, so they are skipped.
fn dial_addresses(
    ips: impl Iterator<Item = IpAddr>,
    tcp: u16,
    quic: Option<u16>,
) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    for ip in ips {
        let base = match ip {
            IpAddr::V4(v4) => Multiaddr::empty().with(Protocol::Ip4(v4)),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => continue,
            IpAddr::V6(v6) => Multiaddr::empty().with(Protocol::Ip6(v6)),
        };
        if let Some(q) = quic {
            out.push(base.clone().with(Protocol::Udp(q)).with(Protocol::QuicV1));
        }
        out.push(base.with(Protocol::Tcp(tcp)));
    }
    out.sort();
    out.dedup();
    out
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_a_resolved_service() {
        let ips = [
            "10.0.0.2".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
        ];
        let addrs = dial_addresses(ips.into_iter(), 4001, Some(4002));
        let text: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"/ip4/10.0.0.2/tcp/4001".to_owned()));
        assert!(text.contains(&"/ip4/10.0.0.2/udp/4002/quic-v1".to_owned()));
        assert!(text.contains(&"/ip6/fd00::2/tcp/4001".to_owned()));
        assert!(!text.iter().any(|a| a.contains("fe80")));
        let mut long = "é".repeat(40);
        truncate(&mut long, MAX_NAME_BYTES);
        assert!(long.len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn the_role_comes_from_the_txt_record() {
        assert_eq!(Role::from_txt(Some("bootstrap")), Role::Bootstrap);
        assert_eq!(Role::from_txt(Some("Bootstrap")), Role::Bootstrap);
        assert_eq!(Role::from_txt(Some("node")), Role::Peer);
        assert_eq!(Role::from_txt(None), Role::Peer);
    }
}
