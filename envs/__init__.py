"""The Gymnasium environment of split inference. ``import envs`` registers
``Offload-v0`` so that ``gymnasium.make("Offload-v0", ...)`` works."""

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
