"""Studies: thin compositions of the layers below, one module per study, all with one face.

Every study module defines

- ``Recipe``: the pydantic model of its YAML recipe (``study: NAME`` selects the module);
- ``run_study(recipe, out_dir, *, data_file=None, log=print, progress=None, options=None)``,
  which writes ``OUT/report.html`` and ``OUT/metrics.json`` and returns the metrics;
- ``summary(metrics)``: one line of headline figures for the command line;
- ``OPTIONS``: the names of the :class:`RunOptions` fields it uses (others are refused).

and is registered in :data:`STUDIES`, the one table ``inverscope run`` reads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from types import ModuleType

from inverscope.core.errors import InverscopeError

#: study name (the recipe's ``study`` key) -> module; a recipe without the key is ``lao_sto``
STUDIES = {
    "lao_sto": "inverscope.studies.lao_sto",
    "pfm_switching": "inverscope.studies.pfm_switching",
    "ising_recognition": "inverscope.studies.ising_recognition",
    "recognition_imaging": "inverscope.studies.recognition_imaging",
    "pacbed": "inverscope.studies.pacbed",
    "knn_polarization": "inverscope.studies.knn_polarization",
    "atom_finding": "inverscope.studies.atom_finding",
}
DEFAULT_STUDY = "lao_sto"


@dataclass
class RunOptions:
    """What the command line adds to a recipe; a study applies the fields named in its ``OPTIONS``.

    Attributes
    ----------
    data_file : str, optional
        The user's own data file (``--data``).
    scheduler : str, optional
        Address of an existing Dask scheduler.
    workers : int, optional
        Dask LocalCluster worker processes (0: in-process).
    devices, num_nodes : optional
        Lightning devices per node and nodes (DDP).
    quiet : bool
        No progress bars.
    check_resources : bool
        Refuse jobs whose memory or disk estimate exceeds the machine's.
    """

    data_file: str | None = None
    scheduler: str | None = None
    workers: int | None = None
    devices: int | str | None = None
    num_nodes: int | None = None
    quiet: bool = False
    check_resources: bool = True

    _FLAGS = {"data_file": "--data", "scheduler": "--scheduler", "workers": "--workers", "devices": "--devices",
              "num_nodes": "--num-nodes"}

    def refuse_unused(self, study: str, used: frozenset[str]) -> None:
        """Raise naming the first option that was given but that `study` does not use."""
        for f in fields(self):
            flag = self._FLAGS.get(f.name)
            if flag and f.name not in used and getattr(self, f.name) is not None:
                raise InverscopeError(f"{flag}: the {study} study does not use it; allowed options: "
                                      + (", ".join(self._FLAGS[n] for n in sorted(used) if n in self._FLAGS) or "none"))


def study_module(name: object) -> ModuleType:
    """The module of study `name`, or one line listing the studies there are."""
    if not isinstance(name, str) or name not in STUDIES:
        raise InverscopeError(f"study: got {name!r}; allowed: {', '.join(STUDIES)}")
    return importlib.import_module(STUDIES[name])


def _merge(base: dict, changes: dict, where: str = "") -> dict:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def load_recipe(recipe, changes: dict | None = None):
    """A study's recipe, validated: from a YAML file or a mapping, with `changes` merged in.

    Parameters
    ----------
    recipe : str, Path or dict
        A recipe file (e.g. ``recipes/lao_sto_quick.yaml``) or its content as a mapping. Its
        ``study`` key picks the study (default ``lao_sto``).
    changes : dict, optional
        Values to change, nested like the recipe; mappings are merged key by key, so
        ``{"campaign": {"num_samples": 30}}`` changes one field and keeps the rest.

    Returns
    -------
    pydantic.BaseModel
        The study module's ``Recipe`` (every field is listed by
        ``python -m inverscope.core.recipe_reference STUDY``).

    Raises
    ------
    InverscopeError
        One line: a missing or unreadable file, invalid YAML, an unknown study, or a field
        that is unknown or out of its range (named with its path).

    Examples
    --------
    >>> from inverscope import studies
    >>> recipe = studies.load_recipe("recipes/lao_sto_quick.yaml", {"campaign": {"num_samples": 30}})
    >>> recipe.campaign.num_samples
    30
    """
    from inverscope.core.config import read_yaml_mapping, validate
    from inverscope.core.errors import ConfigError

    if isinstance(recipe, dict):
        data, source = dict(recipe), "recipe"
    else:
        data, source = read_yaml_mapping(recipe), str(recipe)
    if changes:
        if not isinstance(changes, dict):
            raise ConfigError(f"changes: got {type(changes).__name__}; expected a mapping like the recipe's")
        data = _merge(data, changes)
    name = data.get("study", DEFAULT_STUDY)
    try:
        mod = study_module(name)
    except InverscopeError as err:
        raise InverscopeError(f"{source}: {err}") from None
    return validate(mod.Recipe, data, source)


def run(recipe, out_dir, *, changes: dict | None = None, data_file=None, workers: int | None = None,
        scheduler: str | None = None, devices=None, num_nodes: int | None = None, check_resources: bool = True,
        log=print) -> dict:
    """Run a study end to end from Python, as ``inverscope run RECIPE --out OUT_DIR`` does.

    Parameters
    ----------
    recipe : str, Path, dict or a study's Recipe
        A recipe file, its content as a mapping, or a validated recipe (:func:`load_recipe`).
    out_dir : str or Path
        Output directory: ``report.html``, ``metrics.json``, ``models/``, stores; a campaign
        already there is resumed.
    changes : dict, optional
        Recipe values to change (see :func:`load_recipe`).
    data_file, workers, scheduler, devices, num_nodes : optional
        As ``--data``, ``--workers``, ``--scheduler``, ``--devices``, ``--num-nodes``; options the
        study does not use are refused.
    check_resources : bool
        Refuse jobs whose memory or disk estimate exceeds the machine's (``--no-resource-check``).
    log : callable
        Receives one line per stage (``print`` by default; ``lambda line: None`` for silence).

    Returns
    -------
    dict
        The study's metrics (also written to ``OUT_DIR/metrics.json``).
    """
    if not (hasattr(recipe, "study") and hasattr(recipe, "model_dump")):
        recipe = load_recipe(recipe, changes)
    elif changes:
        recipe = load_recipe(recipe.model_dump(mode="json"), changes)
    mod = study_module(recipe.study)
    options = RunOptions(data_file=None if data_file is None else str(data_file), scheduler=scheduler, workers=workers,
                         devices=devices, num_nodes=num_nodes, quiet=True, check_resources=check_resources)
    options.refuse_unused(recipe.study, mod.OPTIONS)
    return mod.run_study(recipe, out_dir, data_file=options.data_file, options=options, log=log)


__all__ = ["STUDIES", "DEFAULT_STUDY", "RunOptions", "study_module", "load_recipe", "run"]
