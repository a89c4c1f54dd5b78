"""Typed, validated settings: the tables of the project's TOML files and the
command-line arguments of its scripts.

* ``settings.tables``: one validator for plain-data tables (a number in range, an
  integer that is really an integer, a choice, no unknown key, with the closest known
  key suggested). The scenario, the hyperparameters and the catalog use it, so a value
  is checked the same way whether it comes from a file or from Python.
* ``settings.cli``: command-line arguments as a dataclass (a help text per field, as
  CleanRL's ``Args``), validated once before a script touches anything, and
  ``run_cli``, which turns the project's input errors into one line and exit code 2,
  and Ctrl-C into exit code 130, instead of a traceback.

Depends on nothing else in the project.
"""

from settings.tables import InputError, SettingsError

__all__ = ["InputError", "SettingsError"]
