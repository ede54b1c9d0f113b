//! One guest-agent connection per running instance, kept open between
//! uses for a short while.
//!
//! Why: qemu-guest-agent, on the guest's end of the virtio-serial port,
//! sleeps 100 ms each time it sees the host's end close, so a client that
//! connects within 100 ms of the previous one's close waits out the rest of
//! that sleep. A connection kept open skips it: a show, then a point, then
//! another point cost one round trip each instead of up to 100 ms.
//!
//! Invariants: one user of a connection at a time (its lease); a lease
//! synchronises before it is handed out, so nothing an earlier user left
//! in the channel is taken for an answer; a connection unused for
//! [`IDLE`] is closed, so other clients of the socket (QEMU accepts one at
//! a time) wait at most that long behind the daemon; the entries of closed
//! connections are forgotten at the next lease.

use reprise_core::{Error, Result};
use reprise_qemu::agent::Agent;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

/// How long an unused connection stays open.
pub const IDLE: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Link {
    agent: Option<Agent>,
    /// Counts leases: an idle close is for the lease that scheduled it only.
    leases: u64,
}

/// The daemon's agent connections, by instance.
#[derive(Default)]
pub struct AgentLinks {
    links: Mutex<HashMap<Uuid, Arc<AsyncMutex<Link>>>>,
}

/// An instance's agent connection, this caller's alone until dropped.
pub struct Lease {
    link: OwnedMutexGuard<Link>,
}

impl AgentLinks {
    /// The agent of instance `id` (socket `path`), synchronised, within
    /// `within`: the open connection if there is one that answers, else a
    /// new one.
    pub async fn lease(&self, id: Uuid, path: &Path, within: Duration) -> Result<Lease> {
        let slot = {
            let mut links = self.links.lock().unwrap();
            // Forget the closed connections no one holds (stopped or
            // deleted instances leave theirs behind).
            links.retain(|other, slot| {
                *other == id
                    || Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |l| l.agent.is_some())
            });
            links.entry(id).or_default().clone()
        };
        let deadline = tokio::time::Instant::now() + within;
        let mut link = tokio::time::timeout_at(deadline, slot.lock_owned())
            .await
            .map_err(|_| {
                Error::unavailable(
                    "guest_agent_not_responding",
                    "the guest agent is busy with another request",
                )
            })?;
        link.leases += 1;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(agent) = link.agent.as_mut() {
            if agent
                .resync(left.min(Duration::from_millis(500)))
                .await
                .is_ok()
            {
                return Ok(Lease { link });
            }
            link.agent = None;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        link.agent = Some(Agent::connect(path, left).await?);
        Ok(Lease { link })
    }
}

impl AgentLinks {
    /// How many instances have an entry (a connection, open or being
    /// closed).
    pub fn known(&self) -> usize {
        self.links.lock().unwrap().len()
    }
}

impl Lease {
    pub fn agent(&mut self) -> &mut Agent {
        self.link
            .agent
            .as_mut()
            .expect("a lease holds a connection")
    }

    /// Close the connection instead of keeping it: something else may
    /// still use it (a freeze's guard), or it is in an unknown state.
    pub fn discard(mut self) {
        self.link.agent = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.link.agent.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.link.agent = None;
            return;
        };
        let lease = self.link.leases;
        let slot = OwnedMutexGuard::mutex(&self.link).clone();
        runtime.spawn(async move {
            tokio::time::sleep(IDLE).await;
            let mut link = slot.lock().await;
            if link.leases == lease {
                link.agent = None;
            }
        });
    }
}
