//! The per-device job queue: jobs are submitted, then carried out in
//! order by [`HmmAccel::run_queue`], each completing by interrupt, each
//! with its own result — one failing job does not stop the others.

use super::{ContextId, HmmAccel, JobError};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// A job on process addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Read `len` bytes at `src` into the kernel.
    Read { src: u64, len: u64 },
    /// Write `data` at `dst`.
    Write { dst: u64, data: Vec<u8> },
    /// Copy `len` bytes from `src` to `dst`.
    Copy { dst: u64, src: u64, len: u64 },
}

/// What a finished job produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutput {
    Data(Vec<u8>),
    Done,
}

/// A job's place in its device's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// The most jobs waiting on one accelerator (a submit beyond is refused:
/// nothing queues without bound).
pub const MAX_QUEUED: usize = 256;

/// Submitted, not yet run; each job belongs to a context.
#[derive(Default)]
pub struct JobQueue {
    next: u64,
    pending: VecDeque<(JobId, ContextId, Job)>,
}

impl JobQueue {
    /// Forget the jobs of a removed context.
    pub(super) fn drop_context(&mut self, ctx: ContextId) {
        self.pending.retain(|(_, c, _)| *c != ctx);
    }
}

/// Why a job could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No context is selected (the accelerator is not bound).
    NotBound,
    /// [`MAX_QUEUED`] jobs are waiting already.
    QueueFull,
}

impl HmmAccel {
    /// Queue a job for the selected context; it runs at the next
    /// [`HmmAccel::run_queue`].
    pub fn submit(&mut self, job: Job) -> Result<JobId, SubmitError> {
        let ctx = self.binding().map(|c| c.id).ok_or(SubmitError::NotBound)?;
        if self.queue.pending.len() >= MAX_QUEUED {
            return Err(SubmitError::QueueFull);
        }
        self.queue.next += 1;
        let id = JobId(self.queue.next);
        self.queue.pending.push_back((id, ctx, job));
        Ok(id)
    }

    /// Jobs waiting.
    pub fn queued(&self) -> usize {
        self.queue.pending.len()
    }

    /// Run every queued job, fairly: contexts take turns, one job each per
    /// turn (in submission order within a context), so one process's long
    /// queue does not starve another's. The device's context entry follows
    /// the jobs (see `HmmAccel::activate`). The selected context is kept.
    pub fn run_queue(&mut self) -> Vec<(JobId, ContextId, Result<JobOutput, JobError>)> {
        let selected = self.binding().map(|c| c.id);
        let mut done = Vec::new();
        let mut last: Option<ContextId> = None;
        while !self.queue.pending.is_empty() {
            // The next context after `last` (in context order) with a job.
            let mut order: Vec<ContextId> = self.queue.pending.iter().map(|(_, c, _)| *c).collect();
            order.sort();
            order.dedup();
            let ctx = order.iter().copied().find(|c| Some(*c) > last).unwrap_or(order[0]);
            let i = self.queue.pending.iter().position(|(_, c, _)| *c == ctx).expect("a job of that context");
            let Some((id, ctx, job)) = self.queue.pending.remove(i) else { break };
            last = Some(ctx);
            let result = match self.select(ctx) {
                Err(e) => Err(e),
                Ok(()) => match job {
                    Job::Read { src, len } => self.read(src, len).map(JobOutput::Data),
                    Job::Write { dst, data } => self.write(dst, &data).map(|()| JobOutput::Done),
                    Job::Copy { dst, src, len } => self.copy(dst, src, len).map(|()| JobOutput::Done),
                },
            };
            done.push((id, ctx, result));
        }
        if let Some(s) = selected {
            let _ = self.select(s);
        }
        done
    }
}
