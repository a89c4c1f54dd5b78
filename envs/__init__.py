"""The Gymnasium environments of split inference. ``import envs`` registers
``Offload-v0`` (one device: ``gymnasium.make("Offload-v0", ...)``) and
``OffloadFleet-v0`` (N devices sharing one cloud, a ``VectorEnv``:
``gymnasium.make_vec("OffloadFleet-v0", num_envs=N, ...)``)."""

from gymnasium.envs.registration import register, registry

from envs.offload_env import OffloadEnv
from envs.scenario import Scenario, ScenarioError, load_scenario
from envs.system import Outcome, System
from telemetry.observation import (
    OBS_DIM,
    OBS_NAMES,
    ObservationContext,
    Telemetry,
    build_observation,
)

if "Offload-v0" not in registry:
    register(id="Offload-v0", entry_point="envs.offload_env:OffloadEnv")
if "OffloadFleet-v0" not in registry:
    register(
        id="OffloadFleet-v0",
        entry_point="envs.offload_env:OffloadEnv",  # one device, for make_vec's "sync" mode
        vector_entry_point="envs.fleet_env:make_fleet",
    )

__all__ = [
    "OBS_DIM",
    "OBS_NAMES",
    "OffloadEnv",
    "Outcome",
    "Scenario",
    "ScenarioError",
    "System",
    "Telemetry",
    "build_observation",
    "ObservationContext",
    "load_scenario",
]
