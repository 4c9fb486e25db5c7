//! MovieLens-100K ratings in RecBole's atomic-file format: a tab-separated table whose header
//! names each column with its type (`user_id:token`, `item_id:token`, `rating:float`,
//! `timestamp:float`).

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Dataset, Error, Problem, Result};
use crate::files;

const MOVIELENS: Dataset = Dataset::MovieLens100k;
const FILE: &str = "ml-100k.inter";
const HEADER: [&str; 4] = [
    "user_id:token",
    "item_id:token",
    "rating:float",
    "timestamp:float",
];

/// One rating of a movie by a user.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rating {
    /// User id as in the source (1-based, 943 users).
    pub user: u32,
    /// Movie id as in the source (1-based, 1,682 movies).
    pub item: u32,
    /// Stars, 1 to 5.
    pub rating: f32,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
}

fn field<T: FromStr>(fields: &[&str], column: usize) -> std::result::Result<T, String> {
    let text = fields[column];
    text.parse().map_err(|_| {
        format!(
            "{} {text:?} is not a valid {}",
            HEADER[column],
            std::any::type_name::<T>()
        )
    })
}

fn check_rating(rating: f32) -> std::result::Result<(), String> {
    if rating.is_finite() && rating >= 0.0 {
        Ok(())
    } else {
        Err(format!("rating {rating} is not a non-negative number"))
    }
}

fn parse_row(row: &str) -> std::result::Result<Rating, String> {
    let fields: Vec<&str> = row.split('\t').collect();
    if fields.len() != HEADER.len() {
        return Err(format!(
            "{} tab-separated fields, expected {}",
            fields.len(),
            HEADER.len()
        ));
    }
    let rating: f32 = field(&fields, 2)?;
    check_rating(rating)?;
    Ok(Rating {
        user: field(&fields, 0)?,
        item: field(&fields, 1)?,
        rating,
        timestamp: field(&fields, 3)?,
    })
}

pub(crate) fn load(dir: &Path) -> Result<Vec<Rating>> {
    let path = dir.join(FILE);
    let bytes = files::read(MOVIELENS, &path)?;
    let bad_row = |line: usize, problem: String| {
        Error::corrupt(MOVIELENS, &path, Problem::BadRow { line, problem })
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        bad_row(line, "not UTF-8 text".into())
    })?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let header = lines.next().unwrap_or_default();
    if header.split('\t').ne(HEADER) {
        return Err(bad_row(
            1,
            format!("header {header:?}, expected {:?}", HEADER.join("\t")),
        ));
    }
    let ratings = lines
        .enumerate()
        .map(|(i, row)| parse_row(row).map_err(|problem| bad_row(i + 2, problem)))
        .collect::<Result<Vec<_>>>()?;
    if ratings.is_empty() {
        return Err(bad_row(2, "no ratings after the header".into()));
    }
    Ok(ratings)
}

pub(crate) fn store(dir: &Path, ratings: &[Rating]) -> Result<()> {
    if let Some(problem) = ratings.iter().find_map(|r| check_rating(r.rating).err()) {
        return Err(Error::Unstorable {
            dataset: MOVIELENS,
            problem,
        });
    }
    let mut text = HEADER.join("\t");
    text.push('\n');
    for r in ratings {
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}",
            r.user, r.item, r.rating, r.timestamp
        );
    }
    files::write(MOVIELENS, &dir.join(FILE), text.as_bytes())
}
