//! The memory budget of the admissions in flight: what one admission may need, from the size of
//! its body, and room for it among the others.
//!
//! Without it, nothing bounded either: one 3 MiB review of 170,000 minimal init containers took
//! the webhook's RSS up by 312 MB, and 128 reviews with a 3 MiB annotation each, sent at once,
//! by 340 MB, past the manifests' 128 MiB limit. The kernel then kills the webhook, and with
//! `failurePolicy: Fail` no labelled pod is created until it is back.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::patch::MAX_PATCH_BYTES;

/// Heap one admission uses per byte of its body, at most, beyond [`MEMORY_PER_ADMISSION`]: the
/// decoded pod and the messages about it (`tests/memory.rs` measures bodies made to need the
/// most).
pub const MEMORY_PER_BODY_BYTE: usize = 24;
/// Heap one admission uses whatever its body, at most: the patch (at most
/// [`MAX_PATCH_BYTES`]), its base64 text and the response around it.
pub const MEMORY_PER_ADMISSION: usize = 4 * MAX_PATCH_BYTES;
/// Copies of the body held while it is read: the frames as they arrive, then the one buffer
/// they are gathered into.
pub const BODY_COPIES: usize = 2;

/// Longest an admission waits for room in the budget: less than the 5 s the shipped
/// MutatingWebhookConfiguration gives the API server to wait, so the API server gets the reason
/// rather than a timeout.
pub const BUDGET_WAIT: Duration = Duration::from_secs(4);

/// The heap an admission with a body of `body_len` bytes may need, the body itself included:
/// what it is charged against the budget while in flight.
pub fn admission_charge(body_len: usize) -> usize {
    body_len
        .saturating_mul(MEMORY_PER_BODY_BYTE + BODY_COPIES)
        .saturating_add(MEMORY_PER_ADMISSION)
}

/// Why an admission got no room in the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// It may need more than the whole budget: it never fits.
    #[error(
        "a review of {body_len} bytes may need up to {} MiB of memory, more than this webhook's \
         whole memory budget of {} MiB (--memory-budget-mib)",
        mib(*charge),
        mib(*budget)
    )]
    OverBudget {
        /// The body's size.
        body_len: usize,
        /// What it would be charged, in bytes.
        charge: usize,
        /// The whole budget, in bytes.
        budget: usize,
    },
    /// The admissions in flight held the budget for [`BUDGET_WAIT`].
    #[error(
        "the admissions in flight held this webhook's memory budget of {} MiB \
         (--memory-budget-mib) for {} s; try again",
        mib(*budget),
        BUDGET_WAIT.as_secs()
    )]
    Busy {
        /// The whole budget, in bytes.
        budget: usize,
    },
}

/// Whole MiB, rounded up.
fn mib(bytes: usize) -> usize {
    bytes.div_ceil(1024 * 1024)
}

/// The heap the admissions in flight may need together. Each one holds its [`admission_charge`]
/// from before its body is read until its answer is ready; one that does not fit waits, in
/// arrival order (so a large one also holds back those after it), up to [`BUDGET_WAIT`].
pub struct MemoryBudget {
    /// Permits of 1 KiB each.
    permits: Semaphore,
    /// How many permits there are.
    kib: usize,
    /// The whole budget, in bytes.
    bytes: usize,
}

impl MemoryBudget {
    /// A budget of `bytes`, in whole KiB.
    pub fn new(bytes: usize) -> Self {
        let kib = (bytes / 1024)
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        MemoryBudget {
            permits: Semaphore::new(kib),
            kib,
            bytes,
        }
    }

    /// Room for an admission with a body of `body_len` bytes, held until the permit is dropped.
    pub async fn reserve(&self, body_len: usize) -> Result<SemaphorePermit<'_>, BudgetError> {
        let charge = admission_charge(body_len);
        // Counted in the permits' unit: a charge that fits the bytes but not the whole KiB
        // would otherwise wait for room that never comes.
        let kib = charge.div_ceil(1024);
        let Some(kib) = u32::try_from(kib).ok().filter(|_| kib <= self.kib) else {
            return Err(BudgetError::OverBudget {
                body_len,
                charge,
                budget: self.bytes,
            });
        };
        match tokio::time::timeout(BUDGET_WAIT, self.permits.acquire_many(kib)).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a wait that ends either way is answered the same.
            Ok(Err(_)) | Err(_) => Err(BudgetError::Busy { budget: self.bytes }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn room_is_held_until_the_permit_is_dropped_and_the_rest_wait_then_give_up() {
        let budget = MemoryBudget::new(8 * 1024 * 1024);
        // 120 KB: about 5 MiB of the 8; two do not fit.
        let first = budget.reserve(120_000).await.expect("room");
        let waited = tokio::time::Instant::now();
        let busy = budget.reserve(120_000).await.expect_err("no room");
        assert_eq!(
            busy,
            BudgetError::Busy {
                budget: 8 * 1024 * 1024
            }
        );
        assert_eq!(waited.elapsed(), BUDGET_WAIT);
        drop(first);
        let _second = budget
            .reserve(120_000)
            .await
            .expect("room once the first is done");
        let over = budget.reserve(300_000).await.expect_err("over");
        assert_eq!(
            over.to_string(),
            "a review of 300000 bytes may need up to 10 MiB of memory, more than this webhook's \
             whole memory budget of 8 MiB (--memory-budget-mib)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_review_charged_the_whole_budget_fits_and_one_byte_more_is_refused_at_once() {
        // 512 bytes of body are charged a whole number of KiB.
        let whole = admission_charge(100 * 512);
        assert_eq!(whole % 1024, 0);
        // Also under a budget that is not whole KiB: it holds what fits its whole KiB, and
        // refuses the rest at once rather than after the wait.
        for bytes in [whole, whole + 1000] {
            let budget = MemoryBudget::new(bytes);
            drop(budget.reserve(100 * 512).await.expect("the whole budget"));
            let started = tokio::time::Instant::now();
            let over = budget
                .reserve(100 * 512 + 1)
                .await
                .expect_err("a byte over");
            assert!(
                matches!(over, BudgetError::OverBudget { .. }),
                "{bytes}: {over:?}"
            );
            assert_eq!(
                started.elapsed(),
                Duration::ZERO,
                "{bytes}: waited for room it never has"
            );
        }
    }
}
