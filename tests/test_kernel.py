"""The compiled core: many devices stepped at once give what one device gives alone,
and the FaaS pool grows without changing an answer."""

from __future__ import annotations

import numpy as np
import pytest

from agents.heuristics import CloudOnly, Edgent
from agents.predictor import Predictor
from agents.rollout import make_specs, run_batched, run_episode
from envs import OffloadEnv
from sim.faas_pool import FaasPool
from traces.sets import load_families


@pytest.fixture(scope="module")
def env():
    return OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test",
                      episode_requests=60)  # fmt: skip


@pytest.fixture(scope="module")
def specs():
    families = load_families("builtin", split="test")[0]
    return [s for f in sorted(families) for s in make_specs(families[f], 2, 3, (0.05, 1.0))]


def _policies(env):
    from agents.ppo import load_ppo

    return [
        Edgent(env.system, Predictor(env.system)),
        CloudOnly(env.system),
        load_ppo("runs/default"),
    ]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_episodes_stepped_together_equal_episodes_stepped_alone(env, specs, which):
    policy = _policies(env)[which]
    alone = [run_episode(env, policy, spec) for spec in specs]
    together = run_batched(env, policy, specs)
    for a, b in zip(alone, together, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_the_faas_pool_grows_without_changing_an_answer():
    rng = np.random.default_rng(0)
    arrive = np.sort(rng.uniform(0, 5, 400)) + rng.normal(0, 0.05, 400)  # a little out of order
    cut = rng.integers(0, 3, 400)
    args = ((0.2, 0.1, 0.05), 0, 0.1, 1.0, 0.4)
    roomy, tight = (
        FaasPool(*args, instances=256, intervals=64),
        FaasPool(*args, instances=1, intervals=1),
    )
    for lo in range(0, 400, 50):  # a fleet's steps: a batch at a time, the past forgotten
        got = [pool.serve_many(arrive[lo : lo + 50], cut[lo : lo + 50]) for pool in (roomy, tight)]
        for a, b in zip(*got, strict=True):
            np.testing.assert_array_equal(a, b)
        for pool in (roomy, tight):
            pool.prune(float(arrive[lo : lo + 50].min()))
    assert tight.starts.shape[0] > 1 and roomy.instances == tight.instances


def test_a_throttled_faas_cloud_waits_for_an_instance():
    pool = FaasPool((0.5,), 1, 0.1, 10.0, 0.0)
    queue, service, cold = pool.serve_many(np.array([0.0, 0.1]), np.array([0, 0]))
    assert queue[0] == 0.0 and queue[1] == pytest.approx(0.4) and pool.throttled == 1
    assert cold.tolist() == [True, False]  # the second waited for the first's instance
