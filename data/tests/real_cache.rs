//! Smoke test against the real cache. Ignored by default because it needs the download:
//! run `scripts/fetch-data.sh`, then `cargo test -p lhopt-data -- --ignored`.

use lhopt_data::{CLASSES, DataDir, Split};

#[test]
#[ignore = "needs the real datasets: run scripts/fetch-data.sh first"]
fn real_datasets_load_with_their_published_shapes() {
    let data = DataDir::from_env().expect("cache location");

    let train = data
        .fashion_mnist(Split::Train)
        .expect("Fashion-MNIST train");
    let test = data.fashion_mnist(Split::Test).expect("Fashion-MNIST test");
    assert_eq!((train.n, train.rows, train.cols), (60_000, 28, 28));
    assert_eq!(test.n, 10_000);
    for class in 0..CLASSES {
        // Fashion-MNIST is balanced: 6,000 training images per class.
        assert_eq!(train.labels.iter().filter(|&&l| l == class).count(), 6_000);
    }

    let digits = data.digits().expect("digits");
    assert_eq!((digits.n, digits.rows, digits.cols), (1_797, 8, 8));
    assert_eq!(digits.pixels.iter().max(), Some(&16));

    let text = data.shakespeare().expect("Shakespeare");
    assert!(text.windows(19).any(|w| w == b"To be, or not to be"));

    let emails = data.spam_assassin().expect("SpamAssassin");
    assert_eq!(emails.len(), 6_046);
    assert_eq!(emails.iter().filter(|e| e.is_spam()).count(), 1_896);

    let ratings = data.movielens_100k().expect("MovieLens-100K");
    assert_eq!(ratings.len(), 100_000);
    let users = ratings.iter().map(|r| r.user).max();
    let items = ratings.iter().map(|r| r.item).max();
    assert_eq!((users, items), (Some(943), Some(1_682)));
}
