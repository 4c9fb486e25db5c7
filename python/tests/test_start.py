"""Runs start where the policy file says its policy was trained to start (core/FORMAT.md)."""

import struct
import zlib

import pytest

import lhopt


def as_version_2(v1: bytes, start_lr: float) -> bytes:
    """A format-version-1 policy file rewritten as version 2 with `start_lr`: the header gains a
    little-endian f32 after the card, the preamble says version 2 and the new length."""
    assert v1[:4] == b"LHPO" and struct.unpack_from("<H", v1, 4)[0] == 1

    def varint(at: int) -> "tuple[int, int]":
        value, shift = 0, 0
        while True:
            byte = v1[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, at

    at = 10
    for _ in range(5):  # feature set, obs_dim, pre, hidden, post
        _, at = varint(at)
    at += 9  # head sizes
    for _ in range(2):  # name, card
        length, at = varint(at)
        at += length
    body = v1[10:at] + struct.pack("<f", start_lr) + v1[at:-4]
    head = b"LHPO" + struct.pack("<HI", 2, 10 + len(body) + 4)
    return head + body + struct.pack("<I", zlib.crc32(head + body))


def test_a_run_starts_at_the_files_start_lr(parity_policy):
    v2 = as_version_2(parity_policy, 1e-2)
    made = lambda policy, **kw: lhopt.Controller(policy, total_steps=64, decisions=8, **kw)
    assert made(v2).hyper == {**lhopt.INITIAL_HYPER, "lr": pytest.approx(1e-2)}
    # Overrides replace single values of the policy's start, not of the spec's initial values.
    assert made(v2, initial={"wd": 0.1}).hyper["lr"] == pytest.approx(1e-2)
    assert made(v2, initial={"lr": 3e-3}).hyper["lr"] == pytest.approx(3e-3)
    # A version 1 file has no start lr and starts at the initial values.
    assert made(parity_policy).hyper == lhopt.INITIAL_HYPER


def test_a_start_lr_outside_the_bounds_is_a_bad_file(parity_policy):
    with pytest.raises(lhopt.LhoptError, match="malformed"):
        lhopt.Controller(as_version_2(parity_policy, 2.0), total_steps=64, decisions=8)
