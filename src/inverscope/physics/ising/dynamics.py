"""Zero-temperature single-spin-flip (Glauber) dynamics of the random-bond random-field Ising model.

Energy E = -sum_<ij> J_ij S_i S_j - sum_i (H + h_i) S_i. At each external field H every spin
antiparallel to its local field f_i = sum_j J_ij S_j + h_i + H flips, one at a time from a stack
(LIFO), until none is: the avalanche runs to completion, then H steps. Each flip lowers E by
2|f_i|, so every avalanche ends.

Nothing is scanned between avalanches. On an up sweep only down spins can be destabilised by
the field: a down spin with local field L_i (without H) flips once H > -L_i. Each such spin sits
in a bucket at the first field step where that holds (a binary search on the field axis), and a
step only visits its own bucket. A spin whose L_i changes is filed again; stale entries are
dropped when their bucket comes up. The down sweep is the mirror image. Cost per sweep is
O(sites + flips x coordination) instead of O(steps x sites).

The kernels are compiled with numba (``nogil``); :mod:`.hysteresis` runs one chunk of loops per
Python thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _bucket(key, g):
    """First sweep step s with g[s] > key (len(g) if none): where a spin of margin `key` flips.
    g is evenly spaced: a guess from the spacing, corrected by at most a step or two."""
    steps = g.shape[0]
    x = (key - g[0]) / (g[1] - g[0])
    if x < 0.0:
        return 0
    if x >= steps:
        return steps
    s = int(x)
    while s > 0 and g[s - 1] > key:
        s -= 1
    while s < steps and g[s] <= key:
        s += 1
    return s


@njit(cache=True, nogil=True, inline="always")
def _target(key, g, step):
    """Bucket to file a spin of margin `key` in (never before step + 1), or -1 if it does not flip on this sweep."""
    b = _bucket(key, g)
    if b <= step:
        b = step + 1
    return b if b < g.shape[0] else -1


# Filing is written out at each site: a helper taking the bucket arrays costs ~100 ns a call in
# numba's reference counting, more than the rest of the work.
@njit(cache=True, nogil=True)
def _sweep(direction, g, spins, local, neighbours, bonds, couplings, stack, queued, head, nxt, who, magnet, out):
    """One branch: g[s] = direction * H at step s (increasing). Adds the mean spin of each step to out[s]."""
    n, z = neighbours.shape
    steps = g.shape[0]
    cap = who.shape[0]
    head[:] = -1
    fill = 0
    for i in range(n):                     # file every spin the field can push
        if spins[i] == -direction:
            b = _target(spins[i] * local[i], g, -1)
            if b >= 0 and fill < cap:
                who[fill], nxt[fill], head[b] = i, head[b], fill
                fill += 1
    for s in range(steps):
        field = direction * g[s]
        top = 0
        if fill >= cap:                    # bucket pool exhausted (pathological bonds): scan instead
            for i in range(n):
                if spins[i] * (local[i] + field) < 0.0 and not queued[i]:
                    stack[top] = i
                    queued[i] = True
                    top += 1
        e = head[s]
        while e >= 0:
            i = who[e]
            e = nxt[e]
            if spins[i] == -direction and not queued[i]:
                if spins[i] * (local[i] + field) < 0.0:
                    stack[top] = i
                    queued[i] = True
                    top += 1
                else:
                    b = _target(spins[i] * local[i], g, s)
                    if b >= 0 and fill < cap:
                        who[fill], nxt[fill], head[b] = i, head[b], fill
                        fill += 1
        while top > 0:
            top -= 1
            i = stack[top]
            queued[i] = False
            if spins[i] * (local[i] + field) >= 0.0:    # stabilised while queued: file it again
                if spins[i] == -direction:
                    b = _target(spins[i] * local[i], g, s)
                    if b >= 0 and fill < cap:
                        who[fill], nxt[fill], head[b] = i, head[b], fill
                        fill += 1
                continue
            sgn = -spins[i]
            spins[i] = sgn
            magnet += 2 * sgn
            if sgn == -direction:          # flipped against the sweep (negative bonds): file it again
                b = _target(sgn * local[i], g, s)
                if b >= 0 and fill < cap:
                    who[fill], nxt[fill], head[b] = i, head[b], fill
                    fill += 1
            for k in range(z):
                j = neighbours[i, k]
                local[j] += 2.0 * couplings[bonds[i, k]] * sgn
                if queued[j]:
                    continue
                if spins[j] * (local[j] + field) < 0.0:
                    stack[top] = j
                    queued[j] = True
                    top += 1
                elif spins[j] == -direction:
                    b = _target(spins[j] * local[j], g, s)
                    if b >= 0 and fill < cap:
                        who[fill], nxt[fill], head[b] = j, head[b], fill
                        fill += 1
        out[s] += magnet / n
    return magnet


@njit(cache=True, nogil=True)
def sweep_chunk(neighbours, bonds, j0, dj, dh, z_bonds, z_fields, h_up, m_up, m_down):
    """Loops of a chunk of parameter sets, averaged over realizations.

    Parameters
    ----------
    j0, dj, dh : (loops,) float64
        Mean bond, bond spread and random-field spread of each loop.
    z_bonds : (loops, realizations, n_bonds) float
        Standard normal draws for the bonds (J = j0 + dj * z).
    z_fields : (loops, realizations, sites) float
        Standard normal draws for the random fields (h = dh * z).
    h_up : (steps,) float64
        Increasing external fields; the down sweep visits them in reverse.
    m_up, m_down : (loops, steps) float64
        Filled with the mean spin of the up and down sweeps (down sweep indexed like h_up).
    """
    n, z = neighbours.shape
    loops, reals, nb = z_bonds.shape
    steps = h_up.shape[0]
    spins = np.empty(n, np.int64)
    local = np.empty(n, np.float64)
    stack = np.empty(n, np.int64)
    queued = np.zeros(n, np.bool_)
    couplings = np.empty(nb, np.float64)
    head = np.empty(steps, np.int64)
    cap = 16 * n * (z + 1)
    nxt = np.empty(cap, np.int64)
    who = np.empty(cap, np.int64)
    g_down = -h_up[::-1].copy()
    down = np.empty(steps, np.float64)
    for b in range(loops):
        m_up[b, :] = 0.0
        down[:] = 0.0
        for r in range(reals):
            for k in range(nb):
                couplings[k] = j0[b] + dj[b] * z_bonds[b, r, k]
            for i in range(n):             # all spins down; local field without H
                spins[i] = -1
                acc = dh[b] * z_fields[b, r, i]
                for k in range(z):
                    acc -= couplings[bonds[i, k]]
                local[i] = acc
            magnet = _sweep(1, h_up, spins, local, neighbours, bonds, couplings, stack, queued, head, nxt, who,
                            -n, m_up[b])
            _sweep(-1, g_down, spins, local, neighbours, bonds, couplings, stack, queued, head, nxt, who,
                   magnet, down)
        m_up[b, :] /= reals
        m_down[b, :] = down[::-1] / reals
