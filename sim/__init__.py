"""The simulation core: everything a request costs, with no Gymnasium in it.

* ``sim.scenario``: the scenario file (device, radio, cloud, battery, workload, reward
  weights), loaded and validated;
* ``sim.system``: the tables a scenario and a measured profile make (device times per
  block, exit and codec; per-sample exits, bytes and correctness; cloud tail times);
* ``sim.physics``: a request's latency, energy, money, leakage and reward, for one
  request or a batch of requests (many devices at once, numpy arrays);
* ``sim.cloud``: the shared cloud (IaaS workers with a queue and batching, FaaS
  instances with cold starts and throttling);
* ``sim.reward``: the reward of a request from its outcome;
* ``sim.metrics``: what every report says about a set of requests (``summarise``).

The Gymnasium environments (``envs``), the planners, the evaluation, the device loop
and sim-to-real all call these functions; none computes a request's cost itself.
"""

from sim.scenario import Scenario, ScenarioError, load_scenario
from sim.system import Outcome, System

__all__ = ["Outcome", "Scenario", "ScenarioError", "System", "load_scenario"]
