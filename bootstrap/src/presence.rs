//! Who is online: the devices with an open connection that are bound to an account, and the
//! addresses each connected peer says it listens on (so that a friend can reach a device
//! directly). In memory only; the event loop updates it, services read it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use confab_protocol::limits::{MAX_ADDR_BYTES, MAX_DEVICE_ADDRS, MAX_DEVICES};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::config::limits::MAX_CONNECTIONS;

/// The online devices of each user.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_user: HashMap<String, HashSet<PeerId>>,
    by_device: HashMap<PeerId, String>,
    /// Listen addresses per connected peer, bound or not (identify may report them before the
    /// device's login is known). At most one entry per connected peer, and never more than
    /// [`MAX_CONNECTIONS`].
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
}

/// The addresses worth giving out for direct delivery: no relayed ones (the sender can reach those
/// through the bootstrap anyway), without a trailing `/p2p/<id>` (the listing names the peer),
/// none too long, no duplicates, at most [`MAX_DEVICE_ADDRS`].
fn usable_addrs(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for mut addr in addrs {
        if out.len() >= MAX_DEVICE_ADDRS {
            break;
        }
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            continue;
        }
        if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
            addr.pop();
        }
        if addr.is_empty() || addr.len() > MAX_ADDR_BYTES || out.contains(&addr) {
            continue;
        }
        out.push(addr);
    }
    out
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters more than losing presence; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `device` of `user` online. Returns true if the user was offline before.
    pub fn device_online(&self, device: PeerId, user: &str) -> bool {
        let mut inner = self.lock();
        if let Some(old) = inner.by_device.insert(device, user.to_owned())
            && old != user
            && let Some(set) = inner.by_user.get_mut(&old)
        {
            set.remove(&device);
            if set.is_empty() {
                inner.by_user.remove(&old);
            }
        }
        let set = inner.by_user.entry(user.to_owned()).or_default();
        let was_offline = set.is_empty();
        set.insert(device);
        was_offline
    }

    /// Marks `device` offline. Returns its user if that user has no device online any more.
    pub fn device_offline(&self, device: &PeerId) -> Option<String> {
        let mut inner = self.lock();
        let user = inner.by_device.remove(device)?;
        let set = inner.by_user.get_mut(&user)?;
        set.remove(device);
        if set.is_empty() {
            inner.by_user.remove(&user);
            Some(user)
        } else {
            None
        }
    }

    /// Whether any device of `user` is online.
    pub fn is_online(&self, user: &str) -> bool {
        self.lock().by_user.contains_key(user)
    }

    /// Every online device of `user` (for notifications).
    pub fn online_devices(&self, user: &str) -> Vec<PeerId> {
        self.lock()
            .by_user
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Records the addresses `device` listens on, as it reported them (identify), replacing what
    /// it reported before. Only usable ones are kept: not relayed (`/p2p-circuit`), at most
    /// [`MAX_ADDR_BYTES`] long, a trailing `/p2p/<id>` stripped, at most [`MAX_DEVICE_ADDRS`].
    /// Call it only for a connected peer, and [`Presence::forget_addrs`] when it disconnects.
    pub fn set_addrs(&self, device: PeerId, addrs: Vec<Multiaddr>) {
        let addrs = usable_addrs(addrs);
        let mut inner = self.lock();
        if addrs.is_empty() {
            inner.addrs.remove(&device);
        } else if inner.addrs.len() < MAX_CONNECTIONS as usize || inner.addrs.contains_key(&device)
        {
            inner.addrs.insert(device, addrs);
        } else {
            tracing::debug!("listen addresses of {device} not kept: too many peers");
        }
    }

    /// Forgets the addresses of `device` (its last connection closed).
    pub fn forget_addrs(&self, device: &PeerId) {
        self.lock().addrs.remove(device);
    }

    /// The online devices of `user` with the addresses they listen on, those with addresses
    /// first, at most [`MAX_DEVICES`].
    pub fn devices(&self, user: &str) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.devices_listed(user, None)
    }

    /// [`Presence::devices`] without `except` (the asking device itself).
    pub fn devices_except(&self, user: &str, except: &PeerId) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.devices_listed(user, Some(except))
    }

    fn devices_listed(&self, user: &str, except: Option<&PeerId>) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let inner = self.lock();
        let Some(devices) = inner.by_user.get(user) else {
            return Vec::new();
        };
        let mut out: Vec<(PeerId, Vec<Multiaddr>)> = devices
            .iter()
            .filter(|d| Some(*d) != except)
            .map(|d| (*d, inner.addrs.get(d).cloned().unwrap_or_default()))
            .collect();
        // Stable, and the devices that can be reached directly before the rest.
        out.sort_by_cached_key(|(device, addrs)| (addrs.is_empty(), device.to_bytes()));
        out.truncate(MAX_DEVICES);
        out
    }

    /// The user an online device is bound to.
    pub fn user_of(&self, device: &PeerId) -> Option<String> {
        self.lock().by_device.get(device).cloned()
    }

    /// Users online now.
    pub fn users_online(&self) -> usize {
        self.lock().by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_kept_per_device_filtered_and_forgotten() {
        let p = Presence::default();
        let (d1, d2, d3) = (PeerId::random(), PeerId::random(), PeerId::random());
        let relay = PeerId::random();
        let tcp: Multiaddr = "/ip4/10.0.0.2/tcp/4001".parse().unwrap();
        let quic: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
        let long = (0..100).fold(Multiaddr::empty(), |a, i| a.with(Protocol::Tcp(i)));
        assert!(long.len() > MAX_ADDR_BYTES);
        // Known before the device is bound: the login lookup may finish after identify.
        p.set_addrs(
            d1,
            vec![
                tcp.clone().with(Protocol::P2p(d1)),
                format!("/ip4/10.0.0.9/tcp/1/p2p/{relay}/p2p-circuit/p2p/{d1}")
                    .parse()
                    .unwrap(),
                long,
                quic.clone(),
                tcp.clone(),
            ],
        );
        p.device_online(d1, "ann");
        p.device_online(d2, "ann");
        p.device_online(d3, "bob");
        assert_eq!(
            p.devices("ann"),
            vec![(d1, vec![tcp.clone(), quic.clone()]), (d2, Vec::new())]
        );
        assert_eq!(p.devices_except("ann", &d1), vec![(d2, Vec::new())]);
        assert!(p.devices("nobody").is_empty());

        // Many addresses: the first few are kept.
        let many: Vec<Multiaddr> = (1..=20)
            .map(|port| format!("/ip4/10.0.0.3/tcp/{port}").parse().unwrap())
            .collect();
        p.set_addrs(d2, many.clone());
        assert_eq!(
            p.devices_except("ann", &d1),
            vec![(d2, many[..MAX_DEVICE_ADDRS].to_vec())]
        );

        // Logging out keeps a connected peer's addresses; disconnecting forgets them.
        p.device_offline(&d1);
        p.device_online(d1, "ann");
        assert!(
            p.devices("ann")
                .iter()
                .any(|(d, a)| *d == d1 && a.len() == 2)
        );
        p.device_offline(&d1);
        p.forget_addrs(&d1);
        p.device_online(d1, "ann");
        assert!(
            p.devices("ann")
                .iter()
                .any(|(d, a)| *d == d1 && a.is_empty())
        );
    }

    #[test]
    fn a_listing_names_at_most_max_devices() {
        let p = Presence::default();
        for _ in 0..MAX_DEVICES + 5 {
            p.device_online(PeerId::random(), "ann");
        }
        assert_eq!(p.devices("ann").len(), MAX_DEVICES);
        assert_eq!(p.online_devices("ann").len(), MAX_DEVICES + 5);
    }

    #[test]
    fn a_user_is_online_while_any_device_is() {
        let p = Presence::default();
        let (d1, d2) = (PeerId::random(), PeerId::random());
        assert!(p.device_online(d1, "ann"));
        assert!(!p.device_online(d2, "ann"));
        assert!(p.is_online("ann"));
        assert_eq!(p.device_offline(&d1), None);
        assert_eq!(p.device_offline(&d2), Some("ann".into()));
        assert!(!p.is_online("ann"));
        assert_eq!(p.device_offline(&d2), None);
    }
}
