"""Recipes: named sets of `lenet5 train` options, each with where it comes from and the figure
its source published.

A recipe is a small TOML file: ``description``, an ``[options]`` table of train options under
their TrainConfig names (``batch_size = 64``, ``pool = "avg"``), and a ``[reference]`` table
(``figure``: the source's published MNIST test accuracy in percent, or absent for ours;
``source``: where it comes from). The recipes shipped with lenet5 are the ``*.toml`` files
here; what a recipe measured here (``lenet5 sweep --recipe NAME --seeds 5``) is in
``measured.json``, written by ``benchmarks/recipes.py``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ..errors import Lenet5Error
from ..files import is_number
from ..hparams import OPTIMIZER_OPTIONS
from ..training import TrainConfig, check_types

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MEASURED_FILE = "measured.json"
TOP_LEVEL_KEYS = ("description", "options", "reference")
"""What a recipe file holds at its top level ..."""
REFERENCE_KEYS = ("figure", "source")
"""... and in its [reference] section."""
# Options a recipe may set: every training setting except where a run goes and its seed.
OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                if f.name not in ("out", "seed", "data_dir"))


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    options: dict
    reference: dict  # {"figure": accuracy % or None, "source": str}
    measured: dict = field(default_factory=dict)  # what `lenet5 sweep` measured here

    def as_json(self) -> dict:
        return {"name": self.name, "description": self.description, "options": self.options,
                "reference": {"figure": self.reference.get("figure"),
                              "source": self.reference.get("source")},
                "measured": self.measured}

    def flags(self) -> str:
        """The recipe as `lenet5 train` options, e.g. ``--batch-size 64 --nesterov``."""
        def flag(key: str, value: object) -> str:
            name = key.replace("_", "-")
            if isinstance(value, bool):  # switches: --name / --no-name
                return f"--{name}" if value else f"--no-{name}"
            return f"--{name} {value}"

        return " ".join(flag(k, v) for k, v in self.options.items())

    def config(self, overrides: dict) -> TrainConfig:
        """The recipe's settings, with ``overrides`` (options given explicitly) on top; where
        they choose another optimizer, the recipe's settings of its own optimizer go (the
        fast recipe's momentum with --optimizer adam would be refused as not applying)."""
        options = dict(self.options)
        mine = options.get("optimizer")
        if overrides.get("optimizer", mine) != mine:
            for name in OPTIMIZER_OPTIONS.get(mine, ()):
                options.pop(name, None)
        return TrainConfig(**{**options, **overrides})


def names() -> list[str]:
    return sorted(p.name[:-5] for p in files(__name__).iterdir() if p.name.endswith(".toml"))


def _measured() -> dict:
    path = files(__name__).joinpath(MEASURED_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}


def _parse(text: str, name: str, where: str, measured: dict) -> Recipe:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Lenet5Error(f"{where} is not valid TOML ({exc}); fix the recipe file.") from None
    options, reference = _table(document, "options", where), _table(document, "reference", where)
    for place, read, known in ((where, document, TOP_LEVEL_KEYS),
                               (f"{where}'s [reference]", reference, REFERENCE_KEYS)):
        stray = sorted(set(read) - set(known))
        if stray:  # a misspelt section, or an option outside [options], would be ignored
            raise Lenet5Error(
                f"{place} holds {', '.join(stray)}, which a recipe does not read; it reads "
                f"only {', '.join(known)}"
                + (" (train options go in the [options] section)"
                   if set(stray) & set(OPTIONS) else "") + "; fix the recipe file.")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise Lenet5Error(f"{where} sets unknown options {', '.join(unknown)}; a recipe may "
                          f"set: {', '.join(OPTIONS)}.")
    check_types(options, where, "fix the recipe file")
    description, source = document.get("description", ""), reference.get("source", "")
    figure = reference.get("figure")
    for key, value, kind, right in (
            ("description", description, "text", isinstance(description, str)),
            ("source", source, "text", isinstance(source, str)),
            ("figure", figure, "a percentage",
             figure is None or (is_number(figure) and 0 <= figure <= 100))):
        if not right:
            raise Lenet5Error(f"{where}'s {key} is {value!r}, not {kind}; fix the recipe file.")
    return Recipe(name=name, description=description, options=options,
                  reference={"figure": figure, "source": source},
                  measured=measured)


def _table(document: dict, key: str, where: str) -> dict:
    """The document's [key] table (empty where there is none)."""
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise Lenet5Error(f"{key} in {where} is {table!r}, not a table; write it as a [{key}] "
                          "section of `name = value` lines, and fix the recipe file.")
    return table


def load_recipe(name_or_file: str) -> Recipe:
    """A shipped recipe by name, or a recipe file of the user's."""
    path = Path(name_or_file)
    if path.suffix == ".toml" or path.is_file():
        try:
            text = path.read_text(encoding="utf-8-sig")  # TOML is UTF-8 in any locale (a
            # byte-order mark, as some editors write, is skipped)
        except UnicodeDecodeError:
            raise Lenet5Error(f"recipe {path} is not UTF-8 text, which TOML must be; save it as "
                              "UTF-8.") from None
        except OSError as exc:
            raise Lenet5Error(f"cannot read recipe {path} ({exc.strerror or exc}); pass a "
                              "recipe name (`lenet5 recipes` lists them) or a .toml file.") \
                from None
        return _parse(text, path.stem, str(path), {})  # measured here only if shipped
    if name_or_file not in names():
        raise Lenet5Error(f"unknown --recipe {name_or_file!r}; choose one of: "
                          f"{', '.join(names())}, or pass a recipe .toml file.")
    return _shipped(name_or_file, _measured())


def _shipped(name: str, measured: dict) -> Recipe:
    text = files(__name__).joinpath(f"{name}.toml").read_text()
    return _parse(text, name, f"recipe {name}", measured.get(name, {}))


def all_recipes() -> list[Recipe]:
    measured = _measured()  # read once for them all
    return [_shipped(name, measured) for name in names()]
