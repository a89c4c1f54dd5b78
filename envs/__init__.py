"""The Gymnasium environments of split inference, thin shells over ``sim``. ``import
envs`` registers ``Offload-v0`` (one device: ``gymnasium.make("Offload-v0", ...)``) and
``OffloadFleet-v0`` (N devices sharing one cloud, a ``VectorEnv``:
``gymnasium.make_vec("OffloadFleet-v0", num_envs=N, ...)``)."""

from gymnasium.envs.registration import register, registry

from envs.offload_env import OffloadEnv

# Neither environment needs Gymnasium's order-enforcing or env-checker wrappers: each
# refuses a step before ``reset`` itself, and tests/test_env.py runs Gymnasium's and
# SB3's checkers on it. Without them a step is a few microseconds shorter.
if "Offload-v0" not in registry:
    register(
        id="Offload-v0", entry_point="envs.offload_env:OffloadEnv", order_enforce=False,
        disable_env_checker=True,
    )  # fmt: skip
if "OffloadFleet-v0" not in registry:
    register(
        id="OffloadFleet-v0",
        entry_point="envs.offload_env:OffloadEnv",  # one device, for make_vec's "sync" mode
        vector_entry_point="envs.fleet_env:make_fleet",
    )

__all__ = ["OffloadEnv"]
