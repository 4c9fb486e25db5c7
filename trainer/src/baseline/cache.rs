//! The on-disk record of each baseline run, so the 105 runs of a task are computed once.
//!
//! Layout: `${LHOPT_CACHE:-~/.cache/lhopt}/baselines/<task key>/b<budget>-<schedule>-lr<lr>.json`,
//! one small JSON file per run, written atomically (parallel workers store side by side).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::error::{Error, Result};

/// Bumped whenever the meaning of a stored run changes; older files are recomputed.
const FORMAT_VERSION: u32 = 1;

/// Identifies one baseline run: a task, a budget, a base learning rate and a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    /// [`crate::tasks::TaskSpec::key`] of the task.
    pub task_key: String,
    /// Inner steps the run took, the schedule fitted to them.
    pub budget: u64,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
}

/// The outcome of one baseline run. Non-finite losses are stored as `None` (JSON has no NaN).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRun {
    /// Format of this record (the version this build writes is the module's `FORMAT_VERSION`).
    pub version: u32,
    /// Which run this is.
    pub key: RunKey,
    /// Eval loss after the last step; `None` when it was not finite.
    pub final_eval_loss: Option<f64>,
    /// Eval losses at a few steps through the run (the last is the final one), for plots.
    pub eval_curve: Vec<(u64, Option<f64>)>,
    /// The first step whose training loss was not finite, where the run stopped.
    pub diverged_at: Option<u64>,
}

impl BaselineRun {
    /// A record of the current format.
    pub fn new(
        key: RunKey,
        eval_curve: Vec<(u64, Option<f64>)>,
        diverged_at: Option<u64>,
    ) -> BaselineRun {
        let final_eval_loss = eval_curve.last().and_then(|&(_, loss)| loss);
        BaselineRun {
            version: FORMAT_VERSION,
            key,
            final_eval_loss,
            eval_curve,
            diverged_at,
        }
    }

    /// The final eval loss for comparisons: a run that diverged never reaches anything.
    pub fn final_loss_or_inf(&self) -> f64 {
        self.final_eval_loss
            .filter(|l| l.is_finite())
            .unwrap_or(f64::INFINITY)
    }
}

/// `$LHOPT_CACHE`, or `~/.cache/lhopt` when it is unset: where the project keeps everything it
/// computes or downloads once per machine.
pub fn cache_dir() -> Result<PathBuf> {
    match std::env::var_os("LHOPT_CACHE") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => {
            let home = std::env::var_os("HOME").ok_or_else(|| {
                Error::Usage(
                    "neither LHOPT_CACHE nor HOME is set; set LHOPT_CACHE to a writable folder"
                        .into(),
                )
            })?;
            Ok(Path::new(&home).join(".cache").join("lhopt"))
        }
    }
}

/// A folder of cached baseline runs.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `root` (runs go directly below it, one folder per task).
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `$LHOPT_CACHE/baselines`, or `~/.cache/lhopt/baselines` when `LHOPT_CACHE` is unset.
    pub fn from_env() -> Result<Cache> {
        Ok(Cache::at(cache_dir()?.join("baselines")))
    }

    /// The folder this cache lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the run `key` is stored.
    pub fn path(&self, key: &RunKey) -> PathBuf {
        self.root.join(&key.task_key).join(format!(
            "b{}-{}-lr{:e}.json",
            key.budget, key.schedule, key.lr
        ))
    }

    /// The stored run for `key`, or `None` when it is missing, unreadable as JSON, of an older
    /// format, or recorded under a different key (all of which mean: compute it again).
    pub fn load(&self, key: &RunKey) -> Result<Option<BaselineRun>> {
        let path = self.path(key);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        Ok(serde_json::from_str::<BaselineRun>(&text)
            .ok()
            .filter(|run| run.version == FORMAT_VERSION && run.key == *key))
    }

    /// Stores `run`, replacing any earlier record; a reader never sees a half-written file.
    pub fn store(&self, run: &BaselineRun) -> Result<()> {
        let path = self.path(&run.key);
        let dir = path
            .parent()
            .expect("a cache path always has a task folder");
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let json = serde_json::to_string_pretty(run).expect("a BaselineRun always serialises");
        // Per process: two `lhopt` processes may compute the same run; one process never does twice.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, json).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| Error::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RunKey {
        RunKey {
            task_key: "quadratic-s3-t200-0123456789abcdef".into(),
            budget: 100,
            lr: 3e-4,
            schedule: Schedule::Cosine10,
        }
    }

    #[test]
    fn a_stored_run_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let run = BaselineRun::new(key(), vec![(50, Some(0.7)), (100, None)], Some(80));
        assert_eq!(cache.load(&key()).unwrap(), None);
        cache.store(&run).unwrap();
        let back = cache.load(&key()).unwrap().expect("stored run");
        assert_eq!(back, run);
        assert_eq!(back.final_eval_loss, None);
        assert_eq!(back.final_loss_or_inf(), f64::INFINITY);
        assert!(
            cache
                .path(&key())
                .ends_with("quadratic-s3-t200-0123456789abcdef/b100-cosine10-lr3e-4.json")
        );
    }

    #[test]
    fn a_different_key_or_an_old_format_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let mut run = BaselineRun::new(key(), vec![(100, Some(0.5))], None);
        run.version = FORMAT_VERSION - 1;
        cache.store(&run).unwrap();
        assert_eq!(cache.load(&key()).unwrap(), None);
        fs::write(cache.path(&key()), "{ not json").unwrap();
        assert_eq!(cache.load(&key()).unwrap(), None);
    }
}
