"""Save and load models as safetensors + JSON metadata; loading never unpickles.

``NAME.safetensors`` holds the weights; ``NAME.json`` holds the architecture name and
config, the normalization, class names, the input description and provenance, so the
file pair rebuilds the model on any machine.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import inverscope
from inverscope.core.errors import InverscopeError
from inverscope.core.io import write_json_atomic
from inverscope.models.nets import build_net

FORMAT = "inverscope.model/1"


def model_paths(path) -> tuple[Path, Path]:
    """(weights, metadata) paths for `path` given with or without a suffix."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_model(path, net: torch.nn.Module, architecture: str, metadata: dict) -> Path:
    """Write weights and metadata atomically; returns the weights path.

    Parameters
    ----------
    path : str or Path
        ``NAME``, ``NAME.safetensors`` or ``NAME.json``; writes ``NAME.safetensors`` (the
        weights) and ``NAME.json`` (the metadata), creating the folder if needed.
    net : torch.nn.Module
        A network of ``inverscope.models.nets`` (it carries its ``config``).
    architecture : str
        Its name in ``inverscope.models.nets.NETS`` (e.g. ``"stack_cnn3d"``, ``"unet"``).
    metadata : dict
        JSON-ready extras stored beside ``format``, ``architecture``, ``config`` and
        ``inverscope_version``: ``task``, ``class_names``, ``normalization``, ``input`` (e.g.
        ``sampling_mrad`` [mrad]), provenance.

    Returns
    -------
    Path
        The weights file ``NAME.safetensors``.

    Examples
    --------
    >>> import inverscope as isc
    >>> from inverscope.models.nets import build_net
    >>> net = build_net("shallow_mlp", {"inputs": 8, "outputs": 3})
    >>> weights = isc.save_model("models/mlp", net, "shallow_mlp", {"task": "regression"})
    >>> weights.name, sorted(p.name for p in weights.parent.iterdir())
    ('mlp.safetensors', ['mlp.json', 'mlp.safetensors'])
    """
    weights, meta_path = model_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=f".{weights.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp)
        os.replace(tmp, weights)
    finally:
        Path(tmp).unlink(missing_ok=True)
    meta = {"format": FORMAT, "architecture": architecture, "config": net.config.model_dump(mode="json"),
            "inverscope_version": inverscope.__version__, **metadata}
    write_json_atomic(meta_path, meta)
    return weights


def load_metadata(path) -> dict:
    weights, meta_path = model_paths(path)
    if not weights.is_file() or not meta_path.is_file():
        raise InverscopeError(f"{path}: a model needs both {weights.name} and {meta_path.name}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InverscopeError(f"{meta_path}: not valid JSON model metadata") from None
    if not isinstance(meta, dict):
        raise InverscopeError(f"{meta_path}: model metadata must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise InverscopeError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    for key, kind in (("architecture", str), ("config", dict)):
        if not isinstance(meta.get(key), kind):
            raise InverscopeError(f"{meta_path}: {key}: got {meta.get(key)!r}; model metadata needs a "
                                  f"{'name' if kind is str else 'mapping'} here")
    return meta


def load_model(path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the network from metadata and load its weights (eval mode).

    Parameters
    ----------
    path : str or Path
        ``NAME``, ``NAME.safetensors`` or ``NAME.json``; both files must exist. Nothing is
        unpickled.
    device : str
        Torch device for the weights and the network ('cpu', 'cuda', ...).

    Returns
    -------
    net : torch.nn.Module
        The network in eval mode, on `device`.
    meta : dict
        The metadata of ``NAME.json`` (``architecture``, ``config``, ``task``, normalization,
        class names, input calibration, ...).

    Raises
    ------
    InverscopeError
        A missing file, metadata that is not inverscope's, an unknown architecture, or weights
        that are unreadable or do not match it.

    Examples
    --------
    A network saved with ``save_model`` and loaded back (a trained model would be e.g.
    ``out/lao_sto_quick/models/classifier_paper``; ``isc.Model`` applies those to data):

    >>> import torch
    >>> import inverscope as isc
    >>> from inverscope.models.nets import build_net
    >>> _ = isc.save_model("models/mlp", build_net("shallow_mlp", {"inputs": 8, "outputs": 3}), "shallow_mlp",
    ...                    {"task": "regression"})
    >>> net, meta = isc.load_model("models/mlp")
    >>> meta["architecture"], meta["task"], net.training
    ('shallow_mlp', 'regression', False)
    >>> net(torch.zeros(2, 8)).shape
    torch.Size([2, 3])
    """
    meta = load_metadata(path)
    weights, meta_path = model_paths(path)
    try:
        net = build_net(meta["architecture"], meta["config"])
    except InverscopeError as err:
        raise type(err)(f"{meta_path}: {err}") from None
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises several types on corrupt or foreign files
        raise InverscopeError(f"{weights}: not a readable safetensors file ({type(err).__name__}); "
                              "models are saved by inverscope as NAME.safetensors + NAME.json") from None
    try:
        net.load_state_dict(state)
    except Exception as err:
        raise InverscopeError(f"{weights}: weights do not match the metadata's architecture ({type(err).__name__})") from None
    return net.to(device).eval(), meta
