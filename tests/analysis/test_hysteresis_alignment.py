"""The loop alignment rule: waveform branches, field scale, response offset/scale, imprint, sign."""

import numpy as np
import pytest

from inverscope.analysis.hysteresis import (AlignmentConfig, align_measured, align_model, sample_model_loops,
                                            waveform_axis)
from inverscope.core.errors import InverscopeError
from inverscope.physics.ising import IsingConfig, simulate_loops

# the bundled PZT waveform: 16 V down to -16 V and back up (96 points)
V = np.concatenate([np.linspace(16, -16, 49), np.linspace(-16, 16, 49)[1:-1]])


def test_branches_and_field_axis_of_the_pzt_waveform():
    ax = waveform_axis(V, AlignmentConfig(field_at_vmax=2.0))
    assert ax.up[0] and not ax.up[1:49].any() and ax.up[49:].all()   # 16 V is reached rising (periodic waveform)
    np.testing.assert_allclose(ax.field, V / 8.0)
    ax2 = waveform_axis(V + 3.0, AlignmentConfig(field_at_vmax=2.0))  # an offset waveform maps to the same field
    np.testing.assert_allclose(ax2.field, ax.field)


def test_model_loops_are_read_on_the_right_branch():
    cfg = IsingConfig(lattice=[16, 16], field_max=3.0, field_steps=301, realizations=1)
    r = simulate_loops([[0.5, 0.0, 0.0]], cfg)                        # square loop switching at +-4 J0 = +-2
    ax = waveform_axis(V, AlignmentConfig(field_at_vmax=3.0))
    y = sample_model_loops(r.field, r.m_up, r.m_down, ax)[0]
    h = ax.field
    expected = np.where(ax.up, np.where(h > 2.0, 1.0, -1.0), np.where(h < -2.0, -1.0, 1.0))
    far = np.abs(np.abs(h) - 2.0) > 0.02                               # away from the jump (interpolation)
    np.testing.assert_array_equal(y[far], expected[far])


def test_scale_offset_and_imprint_are_recovered():
    # a clean model loop, stretched, offset and shifted by a known imprint, comes back to the model loop
    cfg = IsingConfig(lattice=[32, 32], field_max=2.5, field_steps=501, realizations=4)
    acfg = AlignmentConfig(field_at_vmax=2.0)
    ax = waveform_axis(V, acfg)
    r = simulate_loops([[0.25, 0.3, 0.4]], cfg, seed=1)
    model = align_model(r.field, r.m_up, r.m_down, ax, acfg)[0]
    shift_v = 1.5
    shifted = waveform_axis(V, acfg)
    shifted.field = ax.scale * (V - shift_v)                           # the loop centred at V = +1.5 V
    y = sample_model_loops(r.field, r.m_up, r.m_down, shifted)[0]
    measured = 3e-5 * y + 7e-6
    al = align_measured(measured[None], ax, acfg)
    assert al.sign == 1.0
    assert abs(al.imprint_v[0] - shift_v) < 0.15
    inner = np.abs(V) < 16 - 2 * shift_v                               # the shift holds the ends: compare inside
    assert np.max(np.abs(al.loops[0, inner] - model[inner])) < 0.12
    assert al.amplitude[0] == pytest.approx(3e-5 * (model.max() - model.min()) / 2, rel=0.15)


def test_clockwise_data_set_is_negated_as_a_whole():
    cfg = IsingConfig(lattice=[16, 16], field_max=2.0, field_steps=201, realizations=2)
    acfg = AlignmentConfig(field_at_vmax=2.0, remove_imprint=False)
    ax = waveform_axis(V, acfg)
    r = simulate_loops([[0.3, 0.2, 0.3], [0.2, 0.5, 0.5]], cfg)
    y = sample_model_loops(r.field, r.m_up, r.m_down, ax)
    a = align_measured(-y, ax, acfg)
    b = align_measured(y, ax, acfg)
    assert a.sign == -1.0 and b.sign == 1.0
    np.testing.assert_allclose(a.loops, b.loops)


@pytest.mark.parametrize("v,match", [(np.zeros(10), "constant"), (np.arange(10.0), "never turns around"),
                                     (np.array([1.0, np.nan, 2, 3]), "finite 1D waveform")])
def test_bad_waveforms_are_refused(v, match):
    with pytest.raises(InverscopeError, match=match):
        waveform_axis(v, AlignmentConfig())


def test_field_beyond_the_simulation_is_refused():
    cfg = IsingConfig(lattice=[8, 8], field_max=1.0, field_steps=11, realizations=1)
    r = simulate_loops([[0.1, 0.1, 0.1]], cfg)
    with pytest.raises(InverscopeError, match="simulated to 1"):
        sample_model_loops(r.field, r.m_up, r.m_down, waveform_axis(V, AlignmentConfig(field_at_vmax=2.0)))
