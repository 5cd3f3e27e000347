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


__all__ = ["STUDIES", "DEFAULT_STUDY", "RunOptions", "study_module"]
