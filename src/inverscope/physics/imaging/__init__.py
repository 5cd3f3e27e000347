"""Fast image models (incoherent HAADF, crude ABF) for bulk training data."""

from inverscope.physics.imaging.incoherent import (probe_fwhm_angstrom, probe_intensity, render_incoherent,
                                                    splat_bilinear)

__all__ = ["probe_fwhm_angstrom", "probe_intensity", "render_incoherent", "splat_bilinear"]
