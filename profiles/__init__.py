"""Model, measurement and hardware data behind the simulator.

Kept free of heavy imports: ``profiles.codecs`` and ``profiles.catalog`` are used by
the on-device runtime, which must not pay for torch where it does not need it.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
DEFAULT_WEIGHTS = DATA_DIR / "multiexit_fmnist.pt"
DEFAULT_PROFILE = DATA_DIR / "profile_fmnist.npz"
VARIANTS_PROFILE = DATA_DIR / "profile_fmnist_variants.npz"  # with int8 and pruned blocks
DEFAULT_CATALOG = PACKAGE_DIR / "catalog.toml"
