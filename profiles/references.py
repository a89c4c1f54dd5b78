"""A scenario's model, data and profile, checked together before any work.

A scenario may name a ``model`` (``module:build``), its ``data`` (``module:load``) and
the ``profile`` measured on that model. Training and evaluation simulate from the
profile alone, so a model reference that cannot be imported, or a profile measured on
another model, would only surface later, when a server or a device builds the model.
``check_references`` imports both references, builds the model and compares its hash
with the profile's, so every command refuses such a scenario first, in one line.
Importing a reference runs its code: treat a scenario file like code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from profiles.multiexit import ContractError, build_model, data_for_profile, load_callable
from profiles.profile_io import load_profile


@lru_cache(maxsize=8)
def check_references(profile_path: str, model_ref: str | None, data_ref: str | None) -> None:
    """Refuse (``ContractError`` / ``ProfileError`` naming the reference or file) a
    model reference that does not import or build, a profile whose model hash is not
    the model's, or a data reference that does not import or whose ``load()`` does not
    fit the model (it is called: about a second for Fashion-MNIST). Checked once per
    combination in a process."""
    profile = load_profile(Path(profile_path))
    if data_ref is not None:
        load_callable(data_ref, "data")  # an import error first, before the model builds
    ref = model_ref or profile.model_ref
    if ref is None:
        return
    _, spec = build_model(ref)
    if spec.model_hash != profile.model_hash:
        raise ContractError(
            f"model {ref!r} is model {spec.model_hash}, but the profile {profile.path} "
            f"was measured on model {profile.model_hash}; profile this model "
            "(python -m profiles.profile --model ...) or name the profile's"
        )
    if data_ref is not None:  # what load() returns, checked against the model
        data_for_profile(profile, spec, data_ref)
