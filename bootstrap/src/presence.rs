//! Who is online: the devices with an open connection that are bound to an account. In memory
//! only; the event loop updates it, services read it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use libp2p::PeerId;

/// The online devices of each user.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_user: HashMap<String, HashSet<PeerId>>,
    by_device: HashMap<PeerId, String>,
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

    /// The online devices of `user`.
    pub fn devices(&self, user: &str) -> Vec<PeerId> {
        self.lock()
            .by_user
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
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
