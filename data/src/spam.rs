//! The SpamAssassin public corpus: raw e-mails (headers and body, as bytes: some are not UTF-8),
//! one `.txt` file per message, in one folder per group.

use std::path::Path;

use crate::error::{Dataset, Error, Result};
use crate::files;

const SPAM_ASSASSIN: Dataset = Dataset::SpamAssassin;
const SUFFIX: &str = ".txt";

/// The corpus' message groups, in the fixed order the loader returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpamGroup {
    /// Non-spam that is easy to tell from spam (2,500 messages).
    EasyHam1,
    /// Non-spam that is easy to tell from spam (1,400 messages).
    EasyHam2,
    /// Non-spam that resembles spam (250 messages).
    HardHam1,
    /// Spam (500 messages).
    Spam1,
    /// Spam (1,396 messages).
    Spam2,
}

impl SpamGroup {
    /// Every group, in load order.
    pub const ALL: [SpamGroup; 5] = [
        SpamGroup::EasyHam1,
        SpamGroup::EasyHam2,
        SpamGroup::HardHam1,
        SpamGroup::Spam1,
        SpamGroup::Spam2,
    ];

    /// The group's folder name in the corpus.
    pub fn dir_name(self) -> &'static str {
        match self {
            SpamGroup::EasyHam1 => "easy-ham-1",
            SpamGroup::EasyHam2 => "easy-ham-2",
            SpamGroup::HardHam1 => "hard-ham-1",
            SpamGroup::Spam1 => "spam-1",
            SpamGroup::Spam2 => "spam-2",
        }
    }

    /// Whether the group's messages are spam.
    pub fn is_spam(self) -> bool {
        matches!(self, SpamGroup::Spam1 | SpamGroup::Spam2)
    }
}

/// One e-mail of the corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// The group it belongs to, which says whether it is spam.
    pub group: SpamGroup,
    /// The raw message, headers included.
    pub bytes: Vec<u8>,
}

impl Email {
    /// Whether this message is spam (the classification target).
    pub fn is_spam(&self) -> bool {
        self.group.is_spam()
    }
}

pub(crate) fn load(dir: &Path) -> Result<Vec<Email>> {
    let mut emails = Vec::new();
    for group in SpamGroup::ALL {
        for path in files::sorted_files(SPAM_ASSASSIN, &dir.join(group.dir_name()), SUFFIX)? {
            let bytes = files::read(SPAM_ASSASSIN, &path)?;
            emails.push(Email { group, bytes });
        }
    }
    if emails.is_empty() {
        return Err(Error::Missing {
            dataset: SPAM_ASSASSIN,
            path: dir.join(format!("*/*{SUFFIX}")),
        });
    }
    Ok(emails)
}

pub(crate) fn store(dir: &Path, emails: &[Email]) -> Result<()> {
    for group in SpamGroup::ALL {
        let group_dir = dir.join(group.dir_name());
        // Every group folder exists, even an empty one, as after a real fetch.
        std::fs::create_dir_all(&group_dir).map_err(|source| Error::Io {
            dataset: SPAM_ASSASSIN,
            path: group_dir.clone(),
            source,
        })?;
        let members = emails.iter().filter(|e| e.group == group);
        for (i, email) in members.enumerate() {
            // Zero-padded so that name order is storage order.
            let path = group_dir.join(format!("{i:06}{SUFFIX}"));
            files::write(SPAM_ASSASSIN, &path, &email.bytes)?;
        }
    }
    Ok(())
}
