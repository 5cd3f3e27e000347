"""Run a trained stack network on stacks of CBED patterns: normalization, batching, MC dropout.

The network input is ``(T(x) - mean) / std`` with the transform T (none or sqrt) and the
``mean`` and ``std`` (scalar or per detector pixel) of the model metadata (``normalization``), then ``net(x)``. Classification gives
softmax probabilities; regression gives the value of the first output and, with
``mc_dropout > 0``, the spread of that value over stochastic (dropout-on) passes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.modules.dropout import _DropoutNd

from inverscope.core.errors import InverscopeError
from inverscope.models.normalization import normalization_tensors, normalize


def expected_stack_shape(meta: dict) -> tuple[int, int, int]:
    """(positions, ky, kx) the model was trained on, from its metadata."""
    inp = meta.get("input") or {}
    try:
        return (int(inp["positions"]), *(int(s) for s in inp["pattern_shape"]))
    except (KeyError, TypeError, ValueError):
        raise InverscopeError("model metadata: 'input' needs 'positions' and 'pattern_shape'") from None


def check_stack_shape(shape: tuple[int, ...], meta: dict) -> None:
    """Raise a one-line error when stacks of `shape` (P, ky, kx) do not fit the model."""
    want = expected_stack_shape(meta)
    got = tuple(int(s) for s in shape)
    if got == want:
        return
    hint = ""
    if got[1:] != want[1:]:
        f = got[1] // want[1]
        factor = f" {f}" if f >= 2 and got[1] // f == want[1] and got[2] // f == want[2] else " N"
        hint = f"; the detector patterns differ in size: bin them with --bin{factor}" if got[1] > want[1] else \
            "; the detector patterns are smaller than the model's (use data recorded with the model's detector)"
    raise InverscopeError(f"stacks have shape (positions, ky, kx) = {got} but the model expects {want}{hint}")


def check_finite(x: np.ndarray, what: str = "data") -> None:
    """Raise a one-line error naming how many values of `x` are NaN or infinite."""
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise InverscopeError(f"{what}: {bad} of {x.size} values are NaN or infinite (unwritten or corrupt patterns?)")


def _normalization(meta: dict, device: torch.device) -> tuple[str, torch.Tensor, torch.Tensor]:
    return normalization_tensors(meta.get("normalization") or {}, device)


def _dropout_modules(net: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in net.modules() if isinstance(m, _DropoutNd)]


def predict_stacks(net: torch.nn.Module, meta: dict, x: np.ndarray, batch_size: int = 256, mc_dropout: int = 0,
                   device: str | torch.device = "cpu", seed: int = 0) -> dict[str, np.ndarray]:
    """Predict descriptors for stacks `x`.

    Parameters
    ----------
    net : torch.nn.Module
        The network (as from :func:`inverscope.models.io.load_model`), on `device`.
    meta : dict
        Its metadata: ``task``, ``normalization``, ``input`` and (classification) ``class_names``.
    x : ndarray, shape (n, P, ky, kx)
        Stacks of CBED patterns, in the units the model was trained on.
    batch_size : int
        Stacks per forward pass.
    mc_dropout : int
        Regression only: number of stochastic passes with dropout on (all other layers in
        eval mode) whose standard deviation is returned as ``std``; 0 gives NaN. Ignored
        for classification.
    device : str or torch.device
        Where to compute.
    seed : int
        Seed of the dropout masks: the same call (same x, batch_size, seed) gives the same ``std``.

    Returns
    -------
    dict
        Classification: ``probabilities`` (n, C), ``class_index`` (n,) int64, ``confidence``
        (n,) (the largest probability). Regression: ``value`` (n,) (deterministic pass,
        first output) and ``std`` (n,).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise InverscopeError(f"stacks: expected 4 dimensions (n, positions, ky, kx), got shape {x.shape}")
    check_stack_shape(x.shape[1:], meta)
    check_finite(x, "stacks")
    dev = torch.device(device)
    transform, mean, std = _normalization(meta, dev)
    task = meta.get("task", "classification")
    if task not in ("classification", "regression"):
        raise InverscopeError(f"model metadata: task {task!r}, expected 'classification' or 'regression'")
    n_mc = int(mc_dropout) if task == "regression" else 0
    was_training = net.training
    net.eval()
    outs, spreads = [], []
    fork = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=fork, device_type=dev.type):
            torch.manual_seed(int(seed))
            for i in range(0, x.shape[0], int(batch_size)):
                xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32), device=dev)
                xb = normalize(xb, transform, mean, std)
                out = net(xb).float()
                outs.append(out.cpu().numpy())
                if n_mc:
                    for m in _dropout_modules(net):
                        m.train()
                    passes = torch.stack([net(xb)[:, 0].float() for _ in range(n_mc)])
                    for m in _dropout_modules(net):
                        m.eval()
                    spreads.append(passes.std(0, correction=1 if n_mc > 1 else 0).cpu().numpy())
    finally:
        net.train(was_training)
    out = np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)
    if task == "classification":
        prob = torch.softmax(torch.from_numpy(out), dim=1).numpy()
        return {"probabilities": prob, "class_index": prob.argmax(1).astype(np.int64), "confidence": prob.max(1)}
    value = out[:, 0]
    spread = np.concatenate(spreads) if spreads else np.full(value.shape, np.nan, np.float32)
    return {"value": value, "std": spread}


__all__ = ["predict_stacks", "check_stack_shape", "check_finite", "expected_stack_shape"]
