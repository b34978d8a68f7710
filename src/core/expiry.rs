//! Expiry: resources whose `et` has passed are deleted as a DELETE would (their subtree,
//! their container's counters), in batches, each batch one transaction. The app runs
//! [`Cse::remove_expired`] every `cse.expiration_check_interval`.

use tracing::debug;

use crate::core::Cse;
use crate::core::types::remove;
use crate::error::Result;
use crate::resource::Timestamp;

/// Resources deleted per transaction.
const BATCH: usize = 100;

impl Cse {
    /// Delete every resource whose `et` has passed, with the same bookkeeping as a DELETE.
    /// Returns how many were removed.
    pub async fn remove_expired(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let now = Timestamp::now().to_string();
            let batch = self
                .storage
                .write(move |tx| {
                    let expired = tx.expired(&now, BATCH)?;
                    let mut deleted = Vec::new();
                    for resource in expired {
                        // An earlier deletion in this batch may have removed it with its parent.
                        if tx.get(resource.ri())?.is_none() {
                            continue;
                        }
                        remove(tx, &resource)?;
                        deleted.push(resource);
                    }
                    Ok(deleted)
                })
                .await?;
            let count = batch.len();
            for resource in batch {
                debug!(ri = resource.ri(), "expired");
            }
            removed += count;
            if count < BATCH {
                return Ok(removed);
            }
        }
    }
}
