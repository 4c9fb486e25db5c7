//! Parallel workers for independent jobs (episodes, baseline runs): each worker thread owns the
//! tasks it builds, with one libtorch intra-op thread; only plain data crosses threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use indicatif::ProgressBar;
use lhopt_data::DataDir;
use tch::Device;

use crate::device;
use crate::error::{Error, Result};
use crate::tasks::{self, Task, TaskSpec};

/// Stack of a worker thread: room for a paper-size frozen policy (a few MiB) built on the stack.
const WORKER_STACK_BYTES: usize = 64 << 20;

/// Where and how parallel jobs run: how many workers, the device their tasks live on and the
/// dataset cache they load from.
pub struct Pool {
    /// Worker threads.
    pub workers: usize,
    /// Device of every task a worker builds.
    pub device: Device,
    /// Dataset cache.
    pub data: DataDir,
}

impl Pool {
    /// One worker per available core (`workers = None`), tasks on the default device.
    pub fn new(workers: Option<usize>, data: DataDir) -> Pool {
        let cores = thread::available_parallelism().map_or(1, usize::from);
        Pool {
            workers: workers.unwrap_or(cores).max(1),
            device: device::default_device(),
            data,
        }
    }

    /// Builds the task `spec` describes on this pool's device (call it inside a worker).
    pub fn build(&self, spec: &TaskSpec) -> Result<Box<dyn Task>> {
        tasks::build(spec, self.device, &self.data)
    }

    /// [`run_parallel`] on this pool's workers.
    pub fn run<J, R, F>(&self, jobs: Vec<J>, progress: &ProgressBar, work: F) -> Result<Vec<R>>
    where
        J: Send,
        R: Send,
        F: Fn(J) -> Result<R> + Sync,
    {
        run_parallel(jobs, self.workers, progress, work)
    }
}

/// Runs `work` on every job on `workers` threads and returns the results in job order. `progress`
/// advances once per finished job. The first error stops the hand-out of further jobs (running
/// ones finish) and is returned.
pub fn run_parallel<J, R, F>(
    jobs: Vec<J>,
    workers: usize,
    progress: &ProgressBar,
    work: F,
) -> Result<Vec<R>>
where
    J: Send,
    R: Send,
    F: Fn(J) -> Result<R> + Sync,
{
    let count = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<R>)>();
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(count).collect();
    let mut first_error = None;
    thread::scope(|scope| {
        for _ in 0..workers.clamp(1, count.max(1)) {
            let (tx, queue, stop, work) = (tx.clone(), &queue, &stop, &work);
            let worker = thread::Builder::new().stack_size(WORKER_STACK_BYTES);
            let spawned = worker.spawn_scoped(scope, move || {
                device::init_worker_thread();
                while !stop.load(Ordering::Relaxed) {
                    // The lock is held only to take the next job, never while working.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((index, job)) = next else { break };
                    if tx.send((index, work(job))).is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                first_error.get_or_insert(Error::Io {
                    path: "<worker thread>".into(),
                    source: e,
                });
            }
        }
        drop(tx);
        for (index, result) in rx {
            progress.inc(1);
            match result {
                Ok(r) => results[index] = Some(r),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(results
            .into_iter()
            .map(|r| r.expect("every job reports once"))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_job_order() {
        let out = run_parallel((0..50u64).collect(), 4, &ProgressBar::hidden(), |j| {
            Ok(j * j)
        })
        .unwrap();
        assert_eq!(out, (0..50u64).map(|j| j * j).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_is_returned() {
        let out = run_parallel((0..20u64).collect(), 3, &ProgressBar::hidden(), |j| {
            if j == 7 {
                Err(Error::Usage(format!("job {j} failed")))
            } else {
                Ok(j)
            }
        });
        assert_eq!(out.unwrap_err().to_string(), "job 7 failed");
    }
}
