import pytest

from envs.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario


def test_default_scenario_loads_and_matches_the_dataclass_defaults():
    sc = load_scenario()
    assert sc.device == "mcu" and sc.cloud == "faas"
    assert sc.radio_for("hsdpa") == "3g" and sc.radio_for("unknown") == "lte"
    assert sc.thresholds[-1] > 1.0  # the "no early exit" entry
    assert sc.reward.energy == 0.05 and sc.workload.deadline_s == 0.2


def _write(tmp_path, old, new):
    text = DEFAULT_SCENARIO.read_text()
    assert old in text, old
    path = tmp_path / "s.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('device = "mcu"', "", r"\[scenario\].device: missing"),
        ("deadline_s = 0.2", "deadline_s = -0.2", r"\[workload\].deadline_s: -0.2 out of range"),
        ("deadline_s = 0.2", 'deadline_s = "soon"', r"\[workload\].deadline_s: expected a number"),
        ("rate_hz = 2.0", "rate_hz = 0", r"\[workload\].rate_hz: 0.0 out of range"),
        ('arrival = "poisson"', 'arrival = "bursty"', r"\[workload\].arrival: must be one of"),
        ("initial_min = 0.05", "initial_min = 1.5", r"\[battery\].initial_min: 1.5 out of range"),
        ("accuracy = 1.0", "accuracy = -1", r"\[reward\].accuracy"),
        ("accuracy = 1.0", "accurracy = 1.0", r"\[reward\]: unknown field\(s\) accurracy"),
        ("grid = [0.5, 0.7", "grid = [0.7, 0.5", r"\[thresholds\].grid: values must increase"),
        ("[probe]", "[probes]", r"unknown table\(s\) probes"),
    ],
)
def test_bad_scenarios_name_the_field(tmp_path, old, new, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_write(tmp_path, old, new))


def test_unknown_device_or_radio_fails_when_the_env_is_built(tmp_path):
    from envs import OffloadEnv
    from profiles.catalog import CatalogError

    with pytest.raises(CatalogError, match=r"no \[devices.toaster\]"):
        OffloadEnv(
            load_scenario(_write(tmp_path, 'device = "mcu"', 'device = "toaster"')),
            trace_source="builtin",
        )
    with pytest.raises(CatalogError, match=r"no \[radios.4g\]"):
        OffloadEnv(
            load_scenario(_write(tmp_path, 'hsdpa = "3g"', 'hsdpa = "4g"')), trace_source="builtin"
        )


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "none.toml")
