//! Subscriptions at work: the events a write causes become notifications in the outbox,
//! in the same transaction (`events`), and a sender delivers them, at least once, in order
//! per target, across restarts (`deliver`). The `<subscription>` resource itself is a type
//! room (`core::types::sub`).

pub(crate) mod deliver;
pub(crate) mod events;
