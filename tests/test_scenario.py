import pytest

from sim.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario


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
        ("rate_hz = 2.0", "rate_hz = true", r"\[workload\].rate_hz: expected a number, got True"),
        ('arrival = "poisson"', 'arrival = "bursty"', r"\[workload\].arrival: must be one of"),
        ("initial_min = 0.05", "initial_min = 1.5", r"\[battery\].initial_min: 1.5 out of range"),
        ("accuracy = 1.0", "accuracy = -1", r"\[reward\].accuracy"),
        (
            "accuracy = 1.0",
            "accurracy = 1.0",
            r"\[reward\]: unknown key 'accurracy'; did you mean 'accuracy'\?",
        ),
        ("grid = [0.5, 0.7", "grid = [0.7, 0.5", r"\[thresholds\].grid: values must increase"),
        ("[probe]", "[probes]", r"unknown key 'probes'; did you mean 'probe'\?"),
    ],
)
def test_bad_scenarios_name_the_field(tmp_path, old, new, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_write(tmp_path, old, new))


def test_unknown_device_or_radio_is_named_when_the_scenario_loads(tmp_path):
    with pytest.raises(
        ScenarioError, match=r"\[scenario\].device: 'toaster' is not in the catalog"
    ):
        load_scenario(_write(tmp_path, 'device = "mcu"', 'device = "toaster"'))
    with pytest.raises(ScenarioError, match=r"\[radio\].hsdpa: '4g' is not in the catalog"):
        load_scenario(_write(tmp_path, 'hsdpa = "3g"', 'hsdpa = "4g"'))
    with pytest.raises(ScenarioError, match=r"did you mean 'faas'"):
        load_scenario(_write(tmp_path, 'cloud = "faas"', 'cloud = "fass"'))


def test_unknown_device_in_a_python_scenario_fails_when_the_env_is_built():
    from envs import OffloadEnv
    from profiles.catalog import CatalogError
    from sim import Scenario

    with pytest.raises(CatalogError, match=r"no \[devices.toaster\]"):
        OffloadEnv(Scenario(device="toaster"), trace_source="builtin")


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "none.toml")


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('name = "default"', 'name = "default"\ndevise = "mcu"',
         r"\[scenario\]: unknown key 'devise'; did you mean 'device'\?"),
        ("grid = [", "grids = [", r"\[thresholds\]: unknown key 'grids'; did you mean 'grid'\?"),
        ("episode_requests = 400", "episode_requests = 2.7",
         r"\[workload\].episode_requests: expected an integer, got 2.7"),
        ("deadline_s = 0.2", "deadline_s = nan", r"\[workload\].deadline_s: nan is not finite"),
        ("latency = 0.2", "latency = nan", r"\[reward\].latency: nan is not finite"),
        ("requests_per_charge = 20000", "requests_per_charge = 0",
         r"\[reward\].requests_per_charge: 0.0 out of range"),
        ("[reward]", "[reward]\nenergy_weight = 1", r"did you mean 'energy"),
    ],
)  # fmt: skip
def test_unknown_keys_and_non_integers_are_refused(tmp_path, old, new, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_write(tmp_path, old, new))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda m: m.Workload(deadline_s=float("nan")), r"\[workload\].deadline_s: nan"),
        (lambda m: m.Workload(deadline_s=0), r"\[workload\].deadline_s: 0.0 out of range"),
        (lambda m: m.Workload(rate_hz=0), r"\[workload\].rate_hz: 0.0 out of range"),
        (lambda m: m.Workload(arrival="bogus"), r"\[workload\].arrival: must be one of"),
        (lambda m: m.Workload(episode_requests=2.7), r"expected an integer, got 2.7"),
        (lambda m: m.Battery(capacity_j=-5), r"\[battery\].capacity_j: -5.0 out of range"),
        (lambda m: m.Battery(0.9, 0.1), r"\[battery\].initial_min: 0.9 exceeds initial_max"),
        (lambda m: m.RewardWeights(energy=float("nan")), r"\[reward\].energy: nan"),
        (lambda m: m.RewardWeights(requests_per_charge=0), r"requests_per_charge: 0.0 out of"),
        (lambda m: m.Scenario(thresholds=(0.9, 0.5)), r"\[scenario\].thresholds: values must"),
        (lambda m: m.Scenario(device=""), r"\[scenario\].device: expected a non-empty string"),
        (lambda m: m.Scenario(workload={"rate_hz": 1}), r"\[scenario\].workload: expected a"),
    ],
)
def test_a_scenario_built_in_python_is_validated_like_a_file(build, message):
    from sim import scenario as m

    with pytest.raises(ScenarioError, match=message):
        build(m)


def test_a_catalog_that_is_a_binary_file_is_named(tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_bytes(bytes(range(256)) * 4)
    path = _write(tmp_path, 'catalog = "builtin"', f'catalog = "{catalog}"')
    with pytest.raises(ScenarioError, match=r"catalog.toml: not a text file"):
        load_scenario(path)
