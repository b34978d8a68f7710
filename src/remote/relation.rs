//! The relation to one registrar as a state machine: what happens to it is a [`Step`],
//! and [`RegistrationStatus::after`] is the one place that says which status follows. The
//! monitor task drives the steps of a running relation; the lifecycle calls (start, stop)
//! and a reload take their steps while the monitor is not in a round, so one writer at a
//! time changes a relation.
//!
//! ```text
//! step           from                                 to
//! Started        any                                  Connecting
//! Registering    Registered, Disabled, Deregistered   Connecting (others stay: the last failure is the news)
//! Registered     any                                  Registered
//! NotReached     Registered, Unreachable              Unreachable (the registration is kept)
//! NotReached     Disabled, Connecting, Deregistered,  Connecting
//!                Error
//! Refused(why)   any                                  Error(why)
//! Deregistered   any                                  Deregistered
//! Stopped        any                                  Disabled
//! ```

use tracing::info;

use super::registrar::Registrar;
use super::{Inner, RegistrationStatus, lock};

/// What happens to a registrar relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The manager starts (or a reload brings a new registrar while it runs).
    Started,
    /// The manager stops without deregistering.
    Stopped,
    /// A registration is being made (again).
    Registering,
    /// The registration is made or verified.
    Registered,
    /// No address of the registrar answered.
    NotReached,
    /// The registrar refused a step, or a step failed; the reason says which.
    Refused(String),
    /// This CSE left the registrar (on stop, or a reload that drops it).
    Deregistered,
}

impl RegistrationStatus {
    /// The status after `step`.
    pub(super) fn after(&self, step: Step) -> RegistrationStatus {
        use RegistrationStatus::*;
        match (self, step) {
            (_, Step::Started) => Connecting,
            (_, Step::Stopped) => Disabled,
            // A new attempt keeps the news of the last failure until it succeeds.
            (Registered | Disabled | Deregistered, Step::Registering) => Connecting,
            (current, Step::Registering) => current.clone(),
            (_, Step::Registered) => Registered,
            // The registration is kept while the registrar cannot be reached.
            (Registered | Unreachable, Step::NotReached) => Unreachable,
            (_, Step::NotReached) => Connecting,
            (_, Step::Refused(reason)) => Error(reason),
            (_, Step::Deregistered) => Deregistered,
        }
    }
}

impl Inner {
    /// Take `step` in the relation to `registrar`: a change of status is logged for the
    /// operator (recoveries included) and reported. Returns the previous status when it
    /// changed.
    pub(super) fn step(&self, registrar: &Registrar, step: Step) -> Option<RegistrationStatus> {
        let (previous, status, address) = {
            let mut state = lock(&registrar.state);
            let status = state.status.after(step);
            if state.status == status {
                return None;
            }
            let address = state.active.and_then(|index| registrar.info.addresses.get(index).cloned());
            (std::mem::replace(&mut state.status, status.clone()), status, address)
        };
        let csi = &registrar.info.cse_id;
        let address = address.as_deref().unwrap_or("-");
        match (&previous, &status) {
            (RegistrationStatus::Unreachable, RegistrationStatus::Registered) => {
                info!(registrar = %csi, %address, "registrar reachable again");
            }
            (RegistrationStatus::Error(_), RegistrationStatus::Registered) => {
                info!(registrar = %csi, %address, "registration works again");
            }
            _ => {}
        }
        self.notify_status(registrar);
        Some(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegistrationStatus::*;

    fn every_status() -> [RegistrationStatus; 6] {
        [Disabled, Connecting, Registered, Unreachable, Deregistered, Error("4004: gone".into())]
    }

    #[test]
    fn lifecycle_steps_apply_from_any_status() {
        for status in every_status() {
            assert_eq!(status.after(Step::Started), Connecting, "{status:?}");
            assert_eq!(status.after(Step::Stopped), Disabled, "{status:?}");
            assert_eq!(status.after(Step::Deregistered), Deregistered, "{status:?}");
            assert_eq!(status.after(Step::Registered), Registered, "{status:?}");
            assert_eq!(status.after(Step::Refused("no".into())), Error("no".into()), "{status:?}");
        }
    }

    #[test]
    fn an_unreachable_registrar_keeps_a_registration_but_does_not_make_one() {
        assert_eq!(Registered.after(Step::NotReached), Unreachable);
        assert_eq!(Unreachable.after(Step::NotReached), Unreachable);
        for status in [Disabled, Connecting, Deregistered, Error("x".into())] {
            assert_eq!(status.after(Step::NotReached), Connecting, "{status:?}");
        }
    }

    #[test]
    fn registering_again_keeps_the_news_of_the_last_failure() {
        assert_eq!(Registered.after(Step::Registering), Connecting);
        assert_eq!(Disabled.after(Step::Registering), Connecting);
        assert_eq!(Deregistered.after(Step::Registering), Connecting);
        assert_eq!(Unreachable.after(Step::Registering), Unreachable);
        assert_eq!(Error("x".into()).after(Step::Registering), Error("x".into()));
        assert_eq!(Connecting.after(Step::Registering), Connecting);
    }
}
