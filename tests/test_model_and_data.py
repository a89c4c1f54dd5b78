import gzip
import struct

import numpy as np
import pytest
import torch

from profiles.dataset import DatasetError, load_official, load_splits
from profiles.model import (
    Architecture,
    MultiExitCNN,
    WeightsError,
    load_model,
    model_hash,
    save_weights,
)


def test_head_tail_compose_for_every_cut(model):
    x = torch.rand(4, 1, 28, 28)
    with torch.inference_mode():
        full = model(x)
        for cut in range(model.n_blocks + 1):
            torch.testing.assert_close(model.tail(cut, model.head(cut, x)), full)


def test_forward_all_ends_with_the_final_classifier(model):
    x = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(model.forward_all(x)[-1], model(x))


def test_cut_out_of_range_is_refused(model):
    with pytest.raises(ValueError, match="cut must be in 0..5"):
        model.head(6, torch.rand(1, 1, 28, 28))


def test_shipped_weights_meet_the_accuracy_bar(model):
    test = load_official("test")
    x = torch.from_numpy(test.images[:2000].astype(np.float32)[:, None] / 255.0)
    with torch.inference_mode():
        acc = (model(x).argmax(1).numpy() == test.labels[:2000]).mean()
    assert acc >= 0.90  # 2000-image subset; the full test split is in the profile (>= 0.91)


def test_splits_are_deterministic_and_disjoint():
    a, b = load_splits(), load_splits()
    np.testing.assert_array_equal(a["val"].labels, b["val"].labels)
    assert len(a["train"].labels) + len(a["val"].labels) == 60000
    assert len(a["test"].labels) == 10000


def test_weights_for_another_architecture_are_refused(tmp_path):
    other = MultiExitCNN(Architecture(channels=(8, 16, 24, 32, 48)))
    path = tmp_path / "other.pt"
    save_weights(other, path, {})
    payload = torch.load(path, weights_only=True)
    payload["arch"] = Architecture().to_dict()  # claims the default architecture
    torch.save(payload, path)
    with pytest.raises(
        WeightsError, match=r"other\.pt: state_dict\['blocks.0.0.weight'\] has shape"
    ):
        load_model(path)


def test_corrupt_and_missing_weights_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="bad.pt: not a readable weights file"):
        load_model(bad)
    with pytest.raises(WeightsError, match="missing.pt: weights file not found"):
        load_model(tmp_path / "missing.pt")


def test_expected_hash_mismatch_is_refused(model, tmp_path):
    from profiles import DEFAULT_WEIGHTS

    with pytest.raises(WeightsError, match="does not match"):
        load_model(DEFAULT_WEIGHTS, expected_hash="0" * 16)
    assert len(model_hash(model)) == 16


def _write_idx(path, magic, dims, data: bytes):
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + data)


def test_missing_and_corrupt_dataset_files_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz: file not found"):
        load_official("test")
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (2, 28, 28), b"\0" * 100)
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz: header says"):
        load_official("test")
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x801, (2, 28, 28), b"\0" * 1568)
    with pytest.raises(DatasetError, match="magic number"):
        load_official("test")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable gzip"):
        load_official("test")
