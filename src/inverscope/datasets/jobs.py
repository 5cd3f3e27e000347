"""The store jobs ``inverscope campaign`` can run, by the config's ``kind`` key."""

from __future__ import annotations

import importlib

from inverscope.core.errors import InverscopeError

#: kind -> (module, config class, job class); a config without ``kind`` is a LAO/STO campaign
JOB_KINDS = {
    "lao_sto": ("inverscope.datasets.campaign", "CampaignConfig", "CampaignJob"),
    "pacbed_library": ("inverscope.datasets.pacbed_library", "PACBEDLibraryConfig", "PACBEDLibraryJob"),
    "polar_4d": ("inverscope.datasets.polar_campaign", "PolarCampaignConfig", "PolarCampaignJob"),
}
DEFAULT_KIND = "lao_sto"


def job_classes(kind: object) -> tuple[type, type]:
    """(config class, job class) of store-job `kind`, or one line listing the kinds there are."""
    if not isinstance(kind, str) or kind not in JOB_KINDS:
        raise InverscopeError(f"kind: got {kind!r}; allowed: {', '.join(JOB_KINDS)}")
    module, config, job = JOB_KINDS[kind]
    mod = importlib.import_module(module)
    return getattr(mod, config), getattr(mod, job)


__all__ = ["JOB_KINDS", "DEFAULT_KIND", "job_classes"]
