//! The state machines of instances, volumes, volume snapshots and
//! recovery points, as tables of named moves.
//!
//! A *request* move starts an operation and is guarded: the catalog writes
//! it with `UPDATE … WHERE state IN (from)`, so of two concurrent requests
//! only one moves the row, and the loser is refused with the state it met.
//! A request leaves only from a resting state (one no operation is
//! running in), so a busy resource refuses new work. The daemon settles
//! each operation with a move back to a resting state.
//!
//! Invariants (tested below): every state is reachable from the state a
//! resource is created in; every busy state has a settle move out of it.

/// A named move from any of `from` to `to`.
#[derive(Debug, PartialEq, Eq)]
pub struct Move<S: 'static> {
    pub name: &'static str,
    pub from: &'static [S],
    pub to: S,
    /// Guarded request (true) or the daemon settling its own work.
    pub request: bool,
}

impl<S: PartialEq + Copy> Move<S> {
    pub fn allows(&self, from: S) -> bool {
        self.from.contains(&from)
    }
}

const fn request<S>(name: &'static str, from: &'static [S], to: S) -> Move<S> {
    Move {
        name,
        from,
        to,
        request: true,
    }
}

const fn settle<S>(name: &'static str, from: &'static [S], to: S) -> Move<S> {
    Move {
        name,
        from,
        to,
        request: false,
    }
}

pub mod instance {
    use super::{request, settle, Move};
    use crate::model::InstanceState::{self, *};

    pub const CREATED: InstanceState = Stopped;
    /// `Error` is a resting state the API names and requests leave from,
    /// but nothing writes it today: a failed boot or stop settles Stopped
    /// (with `last_error`), a lost QEMU is reconciled to Stopped.
    pub const RESTING: &[InstanceState] = &[Stopped, Running, Error];
    /// `Unknown` is only shown (an instance whose host is down), never
    /// stored.
    pub const NEVER_WRITTEN: &[InstanceState] = &[Error, Unknown];

    pub const START: Move<InstanceState> = request("start", &[Stopped, Error], Starting);
    pub const STOP: Move<InstanceState> = request("stop", &[Running, Error], Stopping);
    pub const RESTART: Move<InstanceState> = request("restart", &[Running], Stopping);
    /// Within a job that holds the instance's lock and saw it Stopped
    /// (creation, restart, reverting to a point).
    pub const BOOT: Move<InstanceState> = request("boot", &[Stopped], Starting);
    /// Reverting to a disk-only point powers the guest off first.
    pub const POWER_OFF: Move<InstanceState> = request("power off", &[Running], Stopping);
    pub const BOOTED: Move<InstanceState> = settle("booted", &[Starting], Running);
    pub const BOOT_FAILED: Move<InstanceState> = settle("boot failed", &[Starting], Stopped);
    pub const STOPPED: Move<InstanceState> = settle("stopped", &[Stopping, Running], Stopped);

    pub const ALL: &[&Move<InstanceState>] = &[
        &START,
        &STOP,
        &RESTART,
        &BOOT,
        &POWER_OFF,
        &BOOTED,
        &BOOT_FAILED,
        &STOPPED,
    ];
}

pub mod volume {
    use super::{request, settle, Move};
    use crate::model::VolumeState::{self, *};

    pub const CREATED: VolumeState = Creating;
    pub const RESTING: &[VolumeState] = &[Ready, Error];

    /// The instant of a volume snapshot is cut (milliseconds).
    pub const CUT: Move<VolumeState> = request("cut a snapshot", &[Ready], Snapshotting);
    pub const REVERT: Move<VolumeState> = request("revert to a snapshot", &[Ready], Reverting);
    pub const MADE: Move<VolumeState> = settle("made", &[Creating], Ready);
    pub const MAKING_FAILED: Move<VolumeState> = settle("making failed", &[Creating], Error);
    pub const CUT_DONE: Move<VolumeState> = settle("cut done", &[Snapshotting], Ready);
    pub const REVERTED: Move<VolumeState> = settle("reverted", &[Reverting], Ready);

    pub const ALL: &[&Move<VolumeState>] =
        &[&CUT, &REVERT, &MADE, &MAKING_FAILED, &CUT_DONE, &REVERTED];
}

pub mod snapshot {
    use super::{request, settle, Move};
    use crate::model::SnapshotState::{self, *};

    pub const CREATED: SnapshotState = BackingUp;
    pub const RESTING: &[SnapshotState] = &[BackedUp, Error, Deleted];

    /// Into the undelete window: nothing leaves the store yet.
    pub const DELETE: Move<SnapshotState> = request("delete", &[BackedUp, Error], Deleted);
    pub const UNDELETE: Move<SnapshotState> = request("undelete", &[Deleted], BackedUp);
    /// Undeleting one that had failed or was found damaged.
    pub const UNDELETE_DAMAGED: Move<SnapshotState> = request("undelete", &[Deleted], Error);
    /// Its objects removed, then its row: at the window's end, or at once
    /// (the admin, or a plan with no window).
    pub const PURGE: Move<SnapshotState> =
        request("purge", &[BackedUp, Error, Deleted], Destroying);
    pub const BACKED_UP: Move<SnapshotState> = settle("backed up", &[BackingUp], BackedUp);
    pub const BACKUP_FAILED: Move<SnapshotState> = settle("backup failed", &[BackingUp], Error);
    /// A delete that failed leaves it to be deleted again.
    pub const DELETE_FAILED: Move<SnapshotState> = settle("delete failed", &[Destroying], Error);
    /// A purge at the end of the undelete window that failed: deleted
    /// still, tried again at the next round.
    pub const PURGE_FAILED: Move<SnapshotState> = settle("purge failed", &[Destroying], Deleted);
    /// A verification's verdict; never over a delete that started meanwhile.
    pub const DAMAGED: Move<SnapshotState> = settle("damaged", &[BackedUp, Error], Error);
    pub const VERIFIED: Move<SnapshotState> = settle("verified", &[BackedUp, Error], BackedUp);

    pub const ALL: &[&Move<SnapshotState>] = &[
        &DELETE,
        &UNDELETE,
        &UNDELETE_DAMAGED,
        &PURGE,
        &BACKED_UP,
        &BACKUP_FAILED,
        &DELETE_FAILED,
        &PURGE_FAILED,
        &DAMAGED,
        &VERIFIED,
    ];
}

pub mod point {
    use super::{request, settle, Move};
    use crate::model::PointState::{self, *};

    pub const CREATED: PointState = Creating;
    pub const RESTING: &[PointState] = &[Ready, Error];

    pub const REVERT: Move<PointState> = request("revert", &[Ready], Reverting);
    pub const DELETE: Move<PointState> = request("delete", &[Ready, Error], Deleting);
    pub const TAKEN: Move<PointState> = settle("taken", &[Creating], Ready);
    pub const REVERTED: Move<PointState> = settle("reverted", &[Reverting], Ready);
    pub const FAILED: Move<PointState> = settle("failed", &[Creating, Deleting], Error);

    pub const ALL: &[&Move<PointState>] = &[&REVERT, &DELETE, &TAKEN, &REVERTED, &FAILED];
}

/// Every state of `all` is reachable from `created` through `moves`.
fn reachable<S: PartialEq + Copy + 'static>(created: S, moves: &[&Move<S>], all: &[S]) -> Vec<S> {
    let mut seen = vec![created];
    loop {
        let before = seen.len();
        for m in moves {
            if seen.iter().any(|s| m.allows(*s)) && !seen.contains(&m.to) {
                seen.push(m.to);
            }
        }
        if seen.len() == before {
            return all.iter().copied().filter(|s| !seen.contains(s)).collect();
        }
    }
}

/// States of `all` that are busy (not resting) and have no settle out.
fn stuck<S: PartialEq + Copy + 'static>(moves: &[&Move<S>], resting: &[S], all: &[S]) -> Vec<S> {
    all.iter()
        .copied()
        .filter(|s| !resting.contains(s))
        .filter(|s| !moves.iter().any(|m| !m.request && m.allows(*s)))
        .collect()
}

/// Requests that leave from a busy state.
fn busy_requests<S: PartialEq + Copy + 'static>(
    moves: &[&Move<S>],
    resting: &[S],
) -> Vec<&'static str> {
    moves
        .iter()
        .filter(|m| m.request && m.from.iter().any(|s| !resting.contains(s)))
        .map(|m| m.name)
        .collect()
}

/// The checks of the module's invariants for one machine: unreachable
/// states, stuck states, requests from busy states (all empty when sound).
pub fn check<S: PartialEq + Copy + std::fmt::Debug + 'static>(
    created: S,
    resting: &[S],
    moves: &[&Move<S>],
    all: &[S],
) -> Vec<String> {
    let mut problems = Vec::new();
    for s in reachable(created, moves, all) {
        problems.push(format!("{s:?} is unreachable"));
    }
    for s in stuck(moves, resting, all) {
        problems.push(format!("{s:?} is busy with no settle out"));
    }
    for name in busy_requests(moves, resting) {
        problems.push(format!("the request '{name}' leaves from a busy state"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceState, PointState, SnapshotState, VolumeState};

    #[test]
    fn every_machine_is_sound() {
        let problems = [
            check(
                instance::CREATED,
                instance::RESTING,
                instance::ALL,
                &InstanceState::ALL
                    .iter()
                    .copied()
                    .filter(|s| !instance::NEVER_WRITTEN.contains(s))
                    .collect::<Vec<_>>(),
            ),
            check(
                volume::CREATED,
                volume::RESTING,
                volume::ALL,
                VolumeState::ALL,
            ),
            check(
                snapshot::CREATED,
                snapshot::RESTING,
                snapshot::ALL,
                SnapshotState::ALL,
            ),
            check(point::CREATED, point::RESTING, point::ALL, PointState::ALL),
        ];
        assert_eq!(problems.concat(), Vec::<String>::new());
    }

    #[test]
    fn a_broken_machine_is_named() {
        use VolumeState::*;
        let stuck_revert = request("revert", &[Ready], Reverting);
        let from_busy = request("resize", &[Snapshotting], Ready);
        let problems = check(
            Creating,
            &[Ready],
            &[&volume::MADE, &stuck_revert, &from_busy],
            VolumeState::ALL,
        );
        assert!(
            problems.contains(&"Error is unreachable".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"Reverting is busy with no settle out".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"the request 'resize' leaves from a busy state".to_string()),
            "{problems:?}"
        );
    }

    /// Which requests each state admits: the table users meet as 409s.
    #[test]
    fn requests_admitted_by_each_state() {
        fn admitted<S: PartialEq + Copy + 'static>(moves: &[&Move<S>], s: S) -> Vec<&'static str> {
            moves
                .iter()
                .filter(|m| m.request && m.allows(s))
                .map(|m| m.name)
                .collect()
        }
        use InstanceState as I;
        let cases: &[(I, &[&str])] = &[
            (I::Stopped, &["start", "boot"]),
            (I::Starting, &[]),
            (I::Running, &["stop", "restart", "power off"]),
            (I::Stopping, &[]),
            (I::Error, &["start", "stop"]),
        ];
        for (s, want) in cases {
            assert_eq!(admitted(instance::ALL, *s), *want, "instance {s:?}");
        }
        use VolumeState as V;
        let cases: &[(V, &[&str])] = &[
            (V::Creating, &[]),
            (V::Ready, &["cut a snapshot", "revert to a snapshot"]),
            (V::Snapshotting, &[]),
            (V::Reverting, &[]),
            (V::Error, &[]),
        ];
        for (s, want) in cases {
            assert_eq!(admitted(volume::ALL, *s), *want, "volume {s:?}");
        }
        use SnapshotState as S;
        let cases: &[(S, &[&str])] = &[
            (S::BackingUp, &[]),
            (S::BackedUp, &["delete", "purge"]),
            (S::Destroying, &[]),
            (S::Error, &["delete", "purge"]),
            (S::Deleted, &["undelete", "undelete", "purge"]),
        ];
        for (s, want) in cases {
            assert_eq!(admitted(snapshot::ALL, *s), *want, "snapshot {s:?}");
        }
        use PointState as P;
        let cases: &[(P, &[&str])] = &[
            (P::Creating, &[]),
            (P::Ready, &["revert", "delete"]),
            (P::Reverting, &[]),
            (P::Deleting, &[]),
            (P::Error, &["delete"]),
        ];
        for (s, want) in cases {
            assert_eq!(admitted(point::ALL, *s), *want, "point {s:?}");
        }
    }
}
