//! The outbox's rows as both backends read them, and the choice of what is due (shared by
//! both backends' `outbox_due`).

use std::collections::HashSet;

use super::Pending;
use crate::error::{Error, Result};

/// An outbox row; `content` is the stored JSON.
pub(crate) struct StoredPending {
    pub seq: i64,
    pub target: String,
    pub subscription: String,
    pub rqi: String,
    pub content: String,
    pub created: String,
    pub due: String,
    pub attempts: i64,
    pub batch: bool,
}

impl TryFrom<StoredPending> for Pending {
    type Error = Error;

    fn try_from(row: StoredPending) -> Result<Pending> {
        let content = serde_json::from_str(&row.content)
            .map_err(|error| Error::internal(format!("outbox entry {} is not valid JSON: {error}", row.seq)))?;
        Ok(Pending {
            seq: row.seq,
            target: row.target,
            subscription: row.subscription,
            rqi: row.rqi,
            content,
            created: row.created,
            due: row.due,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            batch: row.batch,
        })
    }
}

/// What is due: the notifications to send now, and when the next of the rest is due (in
/// stored timestamp form; `None`: nothing waits).
pub(crate) type Due = (Vec<Pending>, Option<String>);

/// Targets a sender is still at: their queues are passed over (their next notifications
/// must wait until what is being sent to them was).
pub(crate) type Busy = HashSet<String>;

/// Hears the notifications of one target in order; says whether it wants more.
pub(crate) type Visit<'a> = dyn FnMut(Pending) -> bool + 'a;

/// [`ReadTx::outbox_due`] over a backend's two queries: the first target after `after` in
/// byte order (`""`: the first of all), and the queue of one target in order, handed to a
/// visitor that says whether it wants more. Target by target along the outbox's
/// (target, seq) index, so the cost follows what is taken, not how much waits.
pub(crate) fn select_due(
    now: &str,
    per_target: usize,
    limit: usize,
    busy: &Busy,
    next_target: &mut dyn FnMut(&str) -> Result<Option<String>>,
    queue_of: &mut dyn FnMut(&str, &mut Visit<'_>) -> Result<()>,
) -> Result<Due> {
    let mut due: Vec<Pending> = Vec::new();
    let mut next: Option<String> = None;
    let mut after = String::new();
    while due.len() < limit {
        let Some(target) = next_target(&after)? else { break };
        if busy.contains(&target) {
            after = target;
            continue;
        }
        let mut taken = 0;
        queue_of(&target, &mut |pending| {
            if pending.due.as_str() > now {
                if next.as_deref().is_none_or(|known| pending.due.as_str() < known) {
                    next = Some(pending.due.clone());
                }
                // A batch still gathering is passed over; a retry waiting holds the rest.
                return pending.batch;
            }
            due.push(pending);
            taken += 1;
            taken < per_target && due.len() < limit
        })?;
        after = target;
    }
    Ok((due, next))
}
