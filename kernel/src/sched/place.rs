//! Where tasks go: placement of new tasks and stealing by CPUs with
//! nothing to run (the policy of the scheduler's "Placement" section).
//!
//! | event | CPU chosen |
//! |---|---|
//! | spawn, pinned | the pinned CPU |
//! | spawn, unpinned | least loaded (ready tasks + a running non-idle one); ties round-robin |
//! | own queue empty at a park, or idle and kicked | first unpinned ready task of a busy CPU whose CPU is done saving it |

use super::{of, Task, TaskState, MAX_CPUS};
use crate::cpus::{self, CpuId};
use crate::irq;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::instructions::interrupts;

/// Where the next tie between equally loaded CPUs starts.
static PLACE_FROM: AtomicUsize = AtomicUsize::new(0);

/// Put a ready task on its pinned CPU or the least loaded one, and kick it.
/// Ties go round-robin: a task that sleeps at once leaves its CPU looking
/// idle, and "the first least loaded" put every such task on CPU 1.
pub(super) fn place(t: Arc<Task>) {
    t.set_state(TaskState::Ready);
    let load = |c: CpuId| of(c).nr_ready.load(Ordering::SeqCst) + of(c).busy.load(Ordering::SeqCst) as usize;
    let from = PLACE_FROM.fetch_add(1, Ordering::Relaxed) % MAX_CPUS;
    let order = |c: CpuId| (c.index() + MAX_CPUS - from) % MAX_CPUS;
    let target = t.pinned.unwrap_or_else(|| cpus::online().iter().min_by_key(|&c| (load(c), order(c))).unwrap_or(CpuId::BOOT));
    interrupts::without_interrupts(|| of(target).rq.lock().push_ready(target, t));
    irq::kick(target);
}

/// A busy CPU whose ready queue has tasks waiting behind the running
/// one, which `me` may take (a hint: checked again under its lock). An
/// idle CPU's queue is left alone: it was kicked and runs them itself.
pub(super) fn stealable(me: CpuId) -> Option<CpuId> {
    cpus::online().without(me).iter().find(|&c| of(c).busy.load(Ordering::SeqCst) && of(c).nr_ready.load(Ordering::SeqCst) > 0)
}

/// Take the first unpinned ready task of another busy CPU.
pub(super) fn steal(me: CpuId) -> Option<Arc<Task>> {
    for victim in cpus::online().without(me).iter() {
        if !of(victim).busy.load(Ordering::SeqCst) || of(victim).nr_ready.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let mut rq = of(victim).rq.lock();
        // Not a task its CPU is still leaving (invariant 1).
        if let Some(i) = rq.ready.iter().position(|t| t.pinned.is_none() && !t.on_cpu.load(Ordering::Acquire)) {
            let t = rq.ready.remove(i);
            of(victim).nr_ready.store(rq.ready.len(), Ordering::SeqCst);
            of(me).steals.fetch_add(1, Ordering::Relaxed);
            return t;
        }
    }
    None
}
