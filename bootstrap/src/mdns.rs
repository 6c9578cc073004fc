//! LAN advertisement: a bootstrap announces itself with the same DNS-SD service type as nodes
//! (`_confab._udp.local.`) and `role=bootstrap` in its TXT record, so nodes on the LAN find and use
//! it with no configuration. Never started when mDNS is off: creating the daemon alone joins the
//! multicast group on every interface.

use libp2p::PeerId;
use mdns_sd::{ServiceDaemon, ServiceInfo};

/// The DNS-SD service type (shared with nodes).
pub const SERVICE_TYPE: &str = "_confab._udp.local.";

/// A running advertisement; dropped (or [`Advertisement::stop`]ped) at shutdown.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertisement")
            .field("fullname", &self.fullname)
            .finish()
    }
}

impl Advertisement {
    /// Announces `peer` at `tcp` (and `quic`, if any) on every interface's addresses.
    pub fn start(peer: &PeerId, tcp: u16, quic: Option<u16>) -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(|e| e.to_string())?;
        let id = peer.to_base58();
        let mut props = vec![
            ("peer_id", id.clone()),
            ("pv", "1".to_owned()),
            ("role", "bootstrap".to_owned()),
            ("name", "confab-bootstrap".to_owned()),
        ];
        if let Some(q) = quic {
            props.push(("quic", q.to_string()));
        }
        let host = format!("confab-{}.local.", &id[id.len().saturating_sub(16)..]).to_lowercase();
        let info = ServiceInfo::new(SERVICE_TYPE, &id, &host, "", tcp, &props[..])
            .map_err(|e| e.to_string())?
            .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(|e| e.to_string())?;
        Ok(Self { daemon, fullname })
    }

    /// Says goodbye on the network and stops the daemon.
    pub async fn stop(self) {
        let wait = std::time::Duration::from_secs(1);
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = tokio::time::timeout(wait, rx.recv_async()).await;
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(wait, rx.recv_async()).await;
        }
    }
}
