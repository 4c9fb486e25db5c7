//! File access with errors that name the dataset and the file: a missing file points at the
//! fetch script, anything else keeps the operating system's reason.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::error::{Dataset, Error, Problem, Result};

fn access_error(dataset: Dataset, path: &Path, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::NotFound {
        Error::Missing {
            dataset,
            path: path.to_path_buf(),
        }
    } else {
        Error::Io {
            dataset,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The whole file.
pub(crate) fn read(dataset: Dataset, path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| access_error(dataset, path, e))
}

/// The whole file, gunzipped.
pub(crate) fn read_gz(dataset: Dataset, path: &Path) -> Result<Vec<u8>> {
    let compressed = read(dataset, path)?;
    let mut out = Vec::new();
    MultiGzDecoder::new(compressed.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(dataset, path, Problem::Gzip(e)))?;
    Ok(out)
}

/// The files directly in `dir` whose names end with `suffix`, sorted by name so that every
/// machine loads them in the same order.
pub(crate) fn sorted_files(dataset: Dataset, dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| access_error(dataset, dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| access_error(dataset, dir, e))?.path();
        let matches = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix));
        if matches && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Writes `bytes` to `path`, creating its folder.
pub(crate) fn write(dataset: Dataset, path: &Path, bytes: &[u8]) -> Result<()> {
    let io_error = |source| Error::Io {
        dataset,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error)?;
    }
    fs::write(path, bytes).map_err(io_error)
}

/// Writes `bytes` gzipped to `path`, creating its folder.
pub(crate) fn write_gz(dataset: Dataset, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    let compressed = encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|source| Error::Io {
            dataset,
            path: path.to_path_buf(),
            source,
        })?;
    write(dataset, path, &compressed)
}
