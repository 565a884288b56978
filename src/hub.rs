//! The hub: who is connected right now, and the live fan-out of events to them.
//!
//! It holds, for every visitor token, the outlets of that visitor's open sockets (one per tab), and the outlets of
//! every admin socket. It only carries what the store already holds: if an event cannot be delivered, nothing is lost,
//! because the client `sync`s from the store when it comes back.
//!
//! Each outlet is a bounded queue. The hub never waits on one: when a queue is full, that consumer is too slow, so
//! it is removed and kicked (its socket closes, it reconnects and `sync`s). One slow phone never slows the others, and
//! memory per connection stays bounded.
//!
//! The state sits behind a std `Mutex`: every operation under it is a few map lookups and non-blocking `try_send`s,
//! never an `.await`, so an async mutex would only add cost (the mini-redis reasoning).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use crate::store::TokenHash;

pub type ConnectionId = u64;

/// Which channel an event belongs to; the socket's writer wraps it with that subscription's identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Visitor,
    Admin,
}

/// What a socket's writer task is asked to send.
#[derive(Debug)]
pub enum Outbound {
    /// A complete frame (welcome, confirm, a reply to this socket's own command).
    Frame(String),
    /// A channel event (its `message` JSON), shared by every socket it fans out to.
    Event(Channel, Arc<str>),
    /// The reader subscribed: events of this channel go out wrapped with this identifier (already a JSON string).
    Subscribed(Channel, Arc<str>),
    Unsubscribed(Channel),
    /// The pong the protocol obliges us to send for a client's ping, with its payload.
    Pong(Vec<u8>),
    /// The echo of a client's close frame (its status code, or nothing); the socket ends after it.
    CloseEcho(Vec<u8>),
    /// Close the socket with this code and reason, after sending a `disconnect` message when `disconnect` is set.
    Close {
        code: u16,
        reason: &'static str,
        reconnect: bool,
    },
}

/// The sending end of one socket, as the hub keeps it.
#[derive(Debug, Clone)]
pub struct Outlet {
    pub id: ConnectionId,
    pub queue: mpsc::Sender<Outbound>,
    /// Notified when the hub gives up on this socket (its queue overflowed, or its session ended).
    pub kick: Arc<Notify>,
}

impl Outlet {
    /// Queues without waiting; a full queue means a consumer that cannot keep up: it is kicked.
    fn offer(&self, outbound: Outbound) -> bool {
        match self.queue.try_send(outbound) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kick.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct State {
    /// Open sockets per visitor token. Invariant: no empty vectors (a token with no socket is absent).
    visitors: HashMap<TokenHash, Vec<Outlet>>,
    /// Open admin sockets with the hash of the session they were opened with.
    admins: HashMap<ConnectionId, (Outlet, TokenHash)>,
}

#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Sockets open (upgraded), whether or not they have subscribed; for limits and metrics.
    pub open_visitor_sockets: AtomicUsize,
    pub open_admin_sockets: AtomicUsize,
    /// Consumers kicked for being too slow.
    pub kicked: AtomicU64,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves maps that are still consistent (every change is one insert or
        // remove), so poisoning is not a reason to stop serving.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a visitor socket; answers whether it is the visitor's first open socket.
    pub fn join_visitor(&self, token_hash: TokenHash, outlet: Outlet) -> bool {
        let mut state = self.state();
        let sockets = state.visitors.entry(token_hash).or_default();
        sockets.retain(|existing| existing.id != outlet.id);
        sockets.push(outlet);
        sockets.len() == 1
    }

    /// Removes a visitor socket; answers whether the visitor has no socket left.
    pub fn leave_visitor(&self, token_hash: &TokenHash, id: ConnectionId) -> bool {
        let mut state = self.state();
        let Some(sockets) = state.visitors.get_mut(token_hash) else {
            return false;
        };
        let before = sockets.len();
        sockets.retain(|outlet| outlet.id != id);
        let removed = sockets.len() < before;
        if sockets.is_empty() {
            state.visitors.remove(token_hash);
        }
        removed && !state.visitors.contains_key(token_hash)
    }

    /// Registers an admin socket; answers whether it is the first admin socket (the owner just came online).
    pub fn join_admin(&self, session_hash: TokenHash, outlet: Outlet) -> bool {
        let mut state = self.state();
        state.admins.insert(outlet.id, (outlet, session_hash));
        state.admins.len() == 1
    }

    /// Removes an admin socket; answers whether no admin socket is left.
    pub fn leave_admin(&self, id: ConnectionId) -> bool {
        let mut state = self.state();
        state.admins.remove(&id).is_some() && state.admins.is_empty()
    }

    pub fn admin_online(&self) -> bool {
        !self.state().admins.is_empty()
    }

    pub fn visitor_online(&self, token_hash: &TokenHash) -> bool {
        self.state().visitors.contains_key(token_hash)
    }

    pub fn subscribed_visitors(&self) -> usize {
        self.state().visitors.values().map(Vec::len).sum()
    }

    /// Sends an event to every open socket of one visitor.
    pub fn to_visitor(&self, token_hash: &TokenHash, event: &Arc<str>) {
        let mut state = self.state();
        let Some(sockets) = state.visitors.get_mut(token_hash) else {
            return;
        };
        let before = sockets.len();
        sockets.retain(|outlet| outlet.offer(Outbound::Event(Channel::Visitor, event.clone())));
        self.kicked
            .fetch_add((before - sockets.len()) as u64, Ordering::Relaxed);
        if sockets.is_empty() {
            state.visitors.remove(token_hash);
        }
    }

    /// Sends an event to every admin socket.
    pub fn to_admins(&self, event: &Arc<str>) {
        let mut state = self.state();
        let before = state.admins.len();
        state
            .admins
            .retain(|_, (outlet, _)| outlet.offer(Outbound::Event(Channel::Admin, event.clone())));
        self.kicked
            .fetch_add((before - state.admins.len()) as u64, Ordering::Relaxed);
    }

    /// Sends an event to every visitor socket (the owner came online or left).
    pub fn to_all_visitors(&self, event: &Arc<str>) {
        let mut state = self.state();
        for sockets in state.visitors.values_mut() {
            sockets.retain(|outlet| outlet.offer(Outbound::Event(Channel::Visitor, event.clone())));
        }
        state.visitors.retain(|_, sockets| !sockets.is_empty());
    }

    /// Closes every admin socket opened with this session (logout, password change).
    pub fn kick_session(&self, session_hash: &TokenHash) {
        let state = self.state();
        for (outlet, hash) in state.admins.values() {
            if hash == session_hash {
                outlet.kick.notify_one();
            }
        }
    }

    /// Closes every admin socket (the owner logged out everywhere).
    pub fn kick_admins(&self) {
        for (outlet, _) in self.state().admins.values() {
            outlet.kick.notify_one();
        }
    }

    /// Closes every socket of a visitor (their conversation was deleted; they start afresh).
    pub fn kick_visitor(&self, token_hash: &TokenHash) {
        if let Some(sockets) = self.state().visitors.get(token_hash) {
            for outlet in sockets {
                outlet.kick.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlet(hub: &Hub, capacity: usize) -> (Outlet, mpsc::Receiver<Outbound>) {
        let (queue, receiver) = mpsc::channel(capacity);
        (
            Outlet {
                id: hub.next_connection_id(),
                queue,
                kick: Arc::new(Notify::new()),
            },
            receiver,
        )
    }

    #[test]
    fn every_tab_of_a_visitor_gets_the_event_and_a_slow_one_is_dropped() {
        let hub = Hub::new();
        let token = [7u8; 32];
        let (fast, mut fast_rx) = outlet(&hub, 8);
        let (slow, _slow_rx) = outlet(&hub, 1);
        assert!(hub.join_visitor(token, fast.clone()));
        assert!(!hub.join_visitor(token, slow.clone()));
        let event: Arc<str> = Arc::from("{}");
        hub.to_visitor(&token, &event);
        hub.to_visitor(&token, &event);
        assert!(matches!(
            fast_rx.try_recv(),
            Ok(Outbound::Event(Channel::Visitor, _))
        ));
        assert!(matches!(
            fast_rx.try_recv(),
            Ok(Outbound::Event(Channel::Visitor, _))
        ));
        assert_eq!(
            hub.kicked.load(Ordering::Relaxed),
            1,
            "the full queue was kicked"
        );
        assert!(hub.visitor_online(&token));
        assert!(hub.leave_visitor(&token, fast.id), "the last socket left");
        assert!(!hub.visitor_online(&token));
    }

    #[test]
    fn admin_presence_follows_the_sockets() {
        let hub = Hub::new();
        let (first, _a) = outlet(&hub, 4);
        let (second, _b) = outlet(&hub, 4);
        assert!(hub.join_admin([1; 32], first.clone()));
        assert!(!hub.join_admin([2; 32], second.clone()));
        assert!(!hub.leave_admin(first.id));
        assert!(hub.admin_online());
        assert!(hub.leave_admin(second.id));
        assert!(!hub.admin_online());
    }
}
