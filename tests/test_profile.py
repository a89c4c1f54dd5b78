import json
import subprocess
import sys

import numpy as np
import pytest

from profiles.model import model_hash
from profiles.profile_io import ProfileError, load_profile

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_shipped_profile_matches_the_shipped_weights(profile, model):
    profile.check_model_hash(model_hash(model), "shipped weights")
    assert profile.n_blocks == model.n_blocks == 5
    assert profile.splits["test"].n == 10000 and profile.splits["val"].n == 6000


def test_shipped_profile_meets_the_accuracy_bar(profile):
    test = profile.splits["test"]
    assert test.exit_correct[-1].mean() >= 0.91
    # Early exits are weaker than the final one, and cheaper.
    assert test.exit_correct[0].mean() < test.exit_correct[-1].mean()


def test_profile_is_consistent(profile):
    test = profile.splits["test"]
    # Lossless codecs keep the final answer; raw input is 784 bytes + header.
    np.testing.assert_array_equal(test.final_correct[0, 0], test.exit_correct[-1])
    np.testing.assert_array_equal(test.final_correct[1, 0], test.exit_correct[-1])
    assert (test.sent_bytes[0, 0] == 784 + 33).all()
    # Bytes shrink with the compression level at every activation cut.
    for cut in range(1, profile.n_blocks):
        means = test.sent_bytes[cut, :5].mean(axis=1)  # the activation codecs
        assert (np.diff(means) < 0).all(), cut
    assert profile.leakage[0, 0] == pytest.approx(1.0)


def test_hash_mismatch_is_refused(profile):
    with pytest.raises(ProfileError, match="measured on another model"):
        profile.check_model_hash("0123456789abcdef")


def test_corrupt_or_incomplete_profiles_name_the_field(tmp_path, profile):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ProfileError, match="bad.npz: not a readable profile"):
        load_profile(bad)
    with np.load(profile.path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    del arrays["test_sent_bytes"]
    partial = tmp_path / "partial.npz"
    np.savez(partial, **arrays)
    with pytest.raises(ProfileError, match="field 'test_sent_bytes' is missing"):
        load_profile(partial)
    with np.load(profile.path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["leakage"] = arrays["leakage"] * 3
    np.savez(partial, **arrays)
    with pytest.raises(ProfileError, match="field 'leakage'"):
        load_profile(partial)


def test_show_json_has_the_documented_keys():
    out = subprocess.run(
        [sys.executable, "-m", "profiles", "show", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(out.stdout)
    for key in ("model_hash", "n_blocks", "final_accuracy", "exits", "cuts"):
        assert key in summary
    assert set(summary["exits"][0]) == {"block", "accuracy"}
    assert {"cut", "codec", "mean_bytes", "accuracy", "leakage"} <= set(summary["cuts"][0])


@pytest.mark.slow
def test_profiler_is_deterministic_apart_from_timings(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"p{i}.npz"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "profiles.profile",
                "--quick",
                "--out",
                str(path),
                "--repeats",
                "3",
                "--leak-train",
                "200",
                "--leak-epochs",
                "1",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        paths.append(path)
    a, b = load_profile(paths[0]), load_profile(paths[1])
    assert a.model_hash == b.model_hash
    for split in ("val", "test"):
        for field in ("labels", "exit_conf", "exit_correct", "sent_bytes", "final_correct"):
            np.testing.assert_array_equal(
                getattr(a.splits[split], field), getattr(b.splits[split], field)
            )
    np.testing.assert_allclose(a.leakage, b.leakage, atol=1e-6)


def test_a_learned_bottleneck_beats_sending_the_image(profile):
    """The shipped profile's bar: at some intermediate cut a bottleneck sends at most
    half the bytes of the smallest image codec within 2 points of the full model, loses
    at most 1 point of accuracy, and leaks less than any way of sending the image."""
    test = profile.splits["test"]
    full = test.exit_correct[-1].mean()
    image = [lvl for lvl in range(profile.levels_at(0))
             if test.final_correct[0, lvl].mean() >= full - 0.02]  # fmt: skip
    smallest = min(test.sent_bytes[0, lvl].mean() for lvl in image)
    image_leak = min(profile.leakage[0, lvl] for lvl in range(profile.levels_at(0)))
    winners = [
        (e["cut"], e["name"]) for e in profile.bottlenecks.values()
        if test.sent_bytes[e["cut"], e["level"]].mean() <= smallest / 2
        and test.final_correct[e["cut"], e["level"]].mean() >= full - 0.01
        and profile.leakage[e["cut"], e["level"]] < image_leak
    ]  # fmt: skip
    assert (1, "bottleneck-c4") in winners and (2, "bottleneck-c4") in winners
