"""Typed errors a user can cause.

Every error raised for bad input is an :class:`InverscopeError` whose message is
one line naming the field, the value and what is allowed. The CLI prints that
line (no traceback) and exits with a non-zero status.
"""

from __future__ import annotations


class InverscopeError(ValueError):
    """Base class of every error caused by user input."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(InverscopeError):
    """A configuration file or value is invalid."""


class StructureError(InverscopeError):
    """A structure (ASE Atoms, CIF) cannot be simulated as given."""


class GridError(InverscopeError):
    """A simulation grid is inconsistent or too coarse for the request."""


class ScanError(InverscopeError):
    """A scan is empty or reaches outside the cell."""


def field_error(field: str, value: object, allowed: str, cls: type[InverscopeError] = ConfigError):
    """Build an error whose message names `field`, its `value` and what is `allowed`."""
    return cls(f"{field}: got {value!r}; {allowed}")
