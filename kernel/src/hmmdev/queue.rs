//! The per-device job queue: jobs are submitted, then carried out in
//! order by [`HmmAccel::run_queue`], each completing by interrupt, each
//! with its own result — one failing job does not stop the others.

use super::{HmmAccel, JobError};
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

/// Submitted, not yet run.
#[derive(Default)]
pub struct JobQueue {
    next: u64,
    pending: VecDeque<(JobId, Job)>,
}

impl HmmAccel {
    /// Queue a job; it runs at the next [`HmmAccel::run_queue`].
    pub fn submit(&mut self, job: Job) -> JobId {
        self.queue.next += 1;
        let id = JobId(self.queue.next);
        self.queue.pending.push_back((id, job));
        id
    }

    /// Jobs waiting.
    pub fn queued(&self) -> usize {
        self.queue.pending.len()
    }

    /// Run every queued job in submission order.
    pub fn run_queue(&mut self) -> Vec<(JobId, Result<JobOutput, JobError>)> {
        let mut done = Vec::new();
        while let Some((id, job)) = self.queue.pending.pop_front() {
            let result = match job {
                Job::Read { src, len } => self.read(src, len).map(JobOutput::Data),
                Job::Write { dst, data } => self.write(dst, &data).map(|()| JobOutput::Done),
                Job::Copy { dst, src, len } => self.copy(dst, src, len).map(|()| JobOutput::Done),
            };
            done.push((id, result));
        }
        done
    }
}
