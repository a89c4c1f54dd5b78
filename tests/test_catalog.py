import re

import pytest

from profiles import DEFAULT_CATALOG
from profiles.catalog import CatalogError, load_catalog


def test_default_catalog_has_the_required_classes():
    cat = load_catalog()
    assert {"mcu", "rpi4", "phone"} <= set(cat.devices)
    assert {"3g", "lte", "5g", "wifi", "ltem"} <= set(cat.radios)
    assert {c.kind for c in cat.clouds.values()} == {"iaas", "faas", "hybrid"}
    lte = cat.radio("lte")
    assert lte.transmit_power_w(1e6) == pytest.approx(lte.base_w + lte.per_mbps_w)


def test_every_number_carries_a_source_comment():
    """A comment above it, or (a grid's figure) the ``source`` field beside it."""
    text = DEFAULT_CATALOG.read_text().splitlines()
    for i, line in enumerate(text):
        if re.match(r"^\s*[a-z_0-9]+\s*=\s*[0-9.]", line):
            context = " ".join(text[max(0, i - 6) : i + 1])
            cited = "#" in context or text[i + 1].startswith("source = ")
            assert cited, f"line {i + 1} has no source nearby: {line}"


def _mutated(tmp_path, old, new):
    text = DEFAULT_CATALOG.read_text()
    assert old in text
    path = tmp_path / "catalog.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("gflops = 0.04", "", r"\[devices.mcu\].gflops: missing"),
        ("gflops = 0.04", "gflops = -1.0", r"\[devices.mcu\].gflops: -1.0 out of range"),
        ("tail_s = 11.576 ", 'tail_s = "long" ', r"\[radios.lte\].tail_s: expected a number"),
        ('kind = "faas"', 'kind = "paas"', r"\[clouds.faas\].kind: must be"),
        ("cold_start_s = 0.8", "", r"\[clouds.faas\].cold_start_s: missing"),
        (
            "uplink_ratio = 0.46",
            "uplink_ratio = 1.5",
            r"\[radios.lte\].uplink_ratio: 1.5 out of range",
        ),
        ("usd_per_gb = 2.59", "usd_per_gb = -2", r"\[data_plan\].usd_per_gb"),
    ],
)
def test_bad_fields_are_named(tmp_path, old, new, message):
    path = _mutated(tmp_path, old, new)
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def test_unknown_names_and_files(tmp_path):
    with pytest.raises(CatalogError, match="no \\[devices.toaster\\]"):
        load_catalog().device("toaster")
    with pytest.raises(CatalogError, match="catalog file not found"):
        load_catalog(tmp_path / "nope.toml")


def test_unknown_tables_and_keys_are_refused_with_a_suggestion(tmp_path):
    path = _mutated(tmp_path, "[data_plan]", "[data_plans]")
    with pytest.raises(CatalogError, match=r"unknown key 'data_plans'; did you mean 'data_plan'"):
        load_catalog(path)
    path = _mutated(tmp_path, "gflops = 0.04", "glops = 0.04")
    with pytest.raises(CatalogError, match=r"\[devices.mcu\]: unknown key 'glops'"):
        load_catalog(path)
