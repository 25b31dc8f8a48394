"""The split-fractions asset check on a ``SplitKeySample``: what a user sees in the UI's check result."""

import numpy as np

from emberharmony_assets.checks import split_fractions_check
from emberharmony_core.features.split import SplitKeySample, assign_split


def sample_of(keys, splits, capacity=65_536):
    sample = SplitKeySample(capacity)
    sample.add(np.asarray(keys, dtype=object), np.asarray(splits, dtype=object))
    return sample


def test_hash_splits_pass_with_exact_counts_below_the_capacity():
    keys = [f"sensor_{i:04d}" for i in range(5_000)]
    result = split_fractions_check(sample_of(keys, assign_split(np.array(keys, dtype=object))), (0.8, 0.1, 0.1))
    assert result.passed
    assert result.metadata["distinct_keys"].value == 5_000 and "sampled_keys" not in result.metadata
    assert abs(result.metadata["share_train"].value - 0.8) < 0.03


def test_a_skewed_split_fails_naming_the_split_even_from_a_sample():
    keys = [f"user_{i}" for i in range(300_000)]
    splits = np.where(np.arange(300_000) % 2 == 0, "train", "test").astype(object)  # half, not 80%, is train
    result = split_fractions_check(sample_of(keys, splits, capacity=8_192), (0.8, 0.1, 0.1))
    assert not result.passed
    problems = result.metadata["problems"].value
    assert problems.startswith("train: 0.49") and "validation: 0.000 vs configured 0.1" in problems
    assert result.metadata["sampled_keys"].value == 8_192
    assert abs(result.metadata["distinct_keys"].value - 300_000) / 300_000 < 0.05


def test_too_few_keys_are_not_tested():
    result = split_fractions_check(sample_of(["a", "b", "c"], ["train"] * 3), (0.8, 0.1, 0.1))
    assert result.passed and "not tested" in result.metadata["note"].value
