//! Grey-scale image classification sets: Fashion-MNIST (idx files) and the 8×8 digits (`.xy`).

use std::path::{Path, PathBuf};

use crate::error::{Dataset, Error, Problem, Result};
use crate::{files, idx, xy};

/// Both image sets have ten classes, labelled 0 to 9.
pub const CLASSES: u8 = 10;

/// Labelled grey-scale images, stored as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub n: usize,
    /// Height of each image.
    pub rows: usize,
    /// Width of each image.
    pub cols: usize,
    /// The largest pixel value of the format (255 for Fashion-MNIST, 16 for the digits): divide
    /// by it to scale pixels to [0, 1].
    pub max_value: u8,
    /// `n × rows × cols` pixels, image after image, each row-major.
    pub pixels: Vec<u8>,
    /// `n` class labels in `0..CLASSES`.
    pub labels: Vec<u8>,
}

impl Images {
    /// Why these images are not self-consistent, if they are not.
    fn inconsistency(&self) -> Option<String> {
        let pixels = self
            .n
            .checked_mul(self.rows)
            .and_then(|p| p.checked_mul(self.cols));
        if pixels != Some(self.pixels.len()) {
            return Some(format!(
                "{} pixels for {} images of {}x{}",
                self.pixels.len(),
                self.n,
                self.rows,
                self.cols
            ));
        }
        if self.labels.len() != self.n {
            return Some(format!(
                "{} labels for {} images",
                self.labels.len(),
                self.n
            ));
        }
        if let Some(&v) = self.pixels.iter().find(|&&v| v > self.max_value) {
            return Some(format!(
                "pixel value {v} above the maximum {}",
                self.max_value
            ));
        }
        first_bad_label(&self.labels).map(|l| format!("label {l} outside 0..{CLASSES}"))
    }
}

fn first_bad_label(labels: &[u8]) -> Option<u8> {
    labels.iter().copied().find(|&l| l >= CLASSES)
}

/// The two Fashion-MNIST splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// 60,000 training images.
    Train,
    /// 10,000 test images.
    Test,
}

impl Split {
    fn file_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

const FASHION: Dataset = Dataset::FashionMnist;
const DIGITS: Dataset = Dataset::Digits;
/// The digits are 8×8 images with pixel values 0 to 16.
const DIGIT_SIDE: usize = 8;
const DIGIT_MAX: u8 = 16;

/// The image and label files of one split, named as in the Debian package.
fn fashion_paths(dir: &Path, split: Split) -> (PathBuf, PathBuf) {
    let prefix = split.file_prefix();
    (
        dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
    )
}

pub(crate) fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Images> {
    let (image_path, label_path) = fashion_paths(dir, split);
    let image_file = files::read_gz(FASHION, &image_path)?;
    let label_file = files::read_gz(FASHION, &label_path)?;
    let ([n, rows, cols], pixels) =
        idx::decode::<3>(&image_file).map_err(|p| Error::corrupt(FASHION, &image_path, p))?;
    let ([n_labels], labels) =
        idx::decode::<1>(&label_file).map_err(|p| Error::corrupt(FASHION, &label_path, p))?;
    if n_labels != n {
        let problem = format!(
            "{n_labels} labels, but {} holds {n} images",
            image_path.display()
        );
        return Err(Error::corrupt(
            FASHION,
            &label_path,
            Problem::Invalid(problem),
        ));
    }
    if let Some(l) = first_bad_label(labels) {
        let problem = Problem::Invalid(format!("label {l} outside 0..{CLASSES}"));
        return Err(Error::corrupt(FASHION, &label_path, problem));
    }
    Ok(Images {
        n,
        rows,
        cols,
        max_value: u8::MAX,
        pixels: pixels.to_vec(),
        labels: labels.to_vec(),
    })
}

fn unstorable(dataset: Dataset, problem: String) -> Error {
    Error::Unstorable { dataset, problem }
}

pub(crate) fn store_fashion_mnist(dir: &Path, split: Split, images: &Images) -> Result<()> {
    if let Some(problem) = images.inconsistency() {
        return Err(unstorable(FASHION, problem));
    }
    if images.max_value != u8::MAX {
        let problem = format!("max_value {} (idx images span 0..=255)", images.max_value);
        return Err(unstorable(FASHION, problem));
    }
    let too_big = || unstorable(FASHION, "a size does not fit the idx format's u32".into());
    let image_file =
        idx::encode(&[images.n, images.rows, images.cols], &images.pixels).ok_or_else(too_big)?;
    let label_file = idx::encode(&[images.n], &images.labels).ok_or_else(too_big)?;
    let (image_path, label_path) = fashion_paths(dir, split);
    files::write_gz(FASHION, &image_path, &image_file)?;
    files::write_gz(FASHION, &label_path, &label_file)
}

const DIGITS_FILE: &str = "digits.xy";

/// `v` as a byte if it is a whole number in `0..=max`.
fn whole_byte(v: f32, max: u8) -> Option<u8> {
    (v.fract() == 0.0 && (0.0..=f32::from(max)).contains(&v)).then_some(v as u8)
}

pub(crate) fn load_digits(dir: &Path) -> Result<Images> {
    let path = dir.join(DIGITS_FILE);
    let data =
        xy::decode(&files::read(DIGITS, &path)?).map_err(|p| Error::corrupt(DIGITS, &path, p))?;
    let invalid = |problem: String| Error::corrupt(DIGITS, &path, Problem::Invalid(problem));
    if data.features != DIGIT_SIDE * DIGIT_SIDE {
        return Err(invalid(format!(
            "{} features per sample, expected {DIGIT_SIDE}x{DIGIT_SIDE}",
            data.features
        )));
    }
    let pixels = data
        .x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            whole_byte(v, DIGIT_MAX).ok_or_else(|| {
                invalid(format!(
                    "sample {} pixel {} is {v}, expected a whole number in 0..={DIGIT_MAX}",
                    i / data.features,
                    i % data.features
                ))
            })
        })
        .collect::<Result<Vec<u8>>>()?;
    let labels = data
        .y
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            whole_byte(v, CLASSES - 1).ok_or_else(|| {
                invalid(format!(
                    "sample {i} has target {v}, expected a class in 0..{CLASSES}"
                ))
            })
        })
        .collect::<Result<Vec<u8>>>()?;
    Ok(Images {
        n: data.samples,
        rows: DIGIT_SIDE,
        cols: DIGIT_SIDE,
        max_value: DIGIT_MAX,
        pixels,
        labels,
    })
}

pub(crate) fn store_digits(dir: &Path, images: &Images) -> Result<()> {
    if let Some(problem) = images.inconsistency() {
        return Err(unstorable(DIGITS, problem));
    }
    if (images.rows, images.cols, images.max_value) != (DIGIT_SIDE, DIGIT_SIDE, DIGIT_MAX) {
        let problem = format!(
            "{}x{} images with max_value {} (digits are {DIGIT_SIDE}x{DIGIT_SIDE}, 0..={DIGIT_MAX})",
            images.rows, images.cols, images.max_value
        );
        return Err(unstorable(DIGITS, problem));
    }
    let x: Vec<f32> = images.pixels.iter().map(|&p| f32::from(p)).collect();
    let y: Vec<f32> = images.labels.iter().map(|&l| f32::from(l)).collect();
    let file = xy::encode(DIGIT_SIDE * DIGIT_SIDE, &x, &y);
    files::write(DIGITS, &dir.join(DIGITS_FILE), &file)
}
