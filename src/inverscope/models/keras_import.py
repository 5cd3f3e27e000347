"""Import the published Keras 2 weights of the Agar et al. (2019) BiLSTM autoencoder.

Reads the HDF5 file written by Keras ``save_weights`` / ``ModelCheckpoint`` (weights at the
top level, or under ``model_weights`` for a full model file) with h5py; no Keras needed.
Layers are visited in the file's ``layer_names`` order: the Bidirectional layers before
``encoding`` are the encoder, those after it the decoder; the first BatchNormalization
precedes ``encoding`` and the second follows it; the TimeDistributed Dense is the output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inverscope.core.errors import InverscopeError
from inverscope.models.nets.bilstm_ae import BiLSTMAutoencoder, BiLSTMAutoencoderConfig

__all__ = ["load_keras_bilstm_weights"]


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes | np.bytes_) else str(v)


def _layer_weights(root, name: str, where: str) -> dict[str, np.ndarray]:
    """{weight suffix (e.g. 'forward_lstm_1/kernel') : array} of one layer, in file order."""
    group = root[name]
    out: dict[str, np.ndarray] = {}
    for wname in (_s(w) for w in group.attrs.get("weight_names", [])):
        key = wname.split(":")[0]
        key = key.split("/", 1)[1] if "/" in key else key  # drop the leading layer name
        out[key] = np.asarray(group[wname], dtype=np.float32)
    if not out:
        raise InverscopeError(f"{where}: layer {name!r} holds no weights")
    return out


def _pick(weights: dict[str, np.ndarray], suffix: str, shape: tuple[int, ...], where: str) -> torch.Tensor:
    hits = [k for k in weights if k == suffix or k.endswith("/" + suffix)]
    if len(hits) != 1:
        raise InverscopeError(f"{where}: expected one weight '{suffix}', found {len(hits)} ({', '.join(weights)})")
    arr = weights[hits[0]]
    if tuple(arr.shape) != tuple(shape):
        raise InverscopeError(f"{where}: weight '{hits[0]}' has shape {arr.shape}, expected {shape}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_keras_bilstm_weights(
    path: str | Path, steps: int = 96, gate: str = "hard_sigmoid"
) -> tuple[BiLSTMAutoencoder, dict]:
    """Build a :class:`BiLSTMAutoencoder` holding the Keras weights in ``path``.

    ``steps`` (the RepeatVector length) is not stored in a weights file; 96 is the
    published value. Returns (model in eval mode, meta) where meta has the Keras version,
    backend, layer names and the inferred config. Raises :class:`InverscopeError` (one
    line) if the file is not readable or does not hold this architecture.
    """
    import h5py

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise InverscopeError(f"{where}: no such weights file")
    try:
        fh = h5py.File(path, "r")
    except OSError:
        raise InverscopeError(f"{where}: not an HDF5 file") from None
    with fh:
        root = fh["model_weights"] if "model_weights" in fh else fh
        if "layer_names" not in root.attrs:
            raise InverscopeError(f"{where}: no 'layer_names' attribute; not a Keras weights file")
        names = [_s(n) for n in root.attrs["layer_names"]]
        with_w = [n for n in names if len(root[n].attrs.get("weight_names", [])) > 0]
        if "encoding" not in with_w:
            raise InverscopeError(f"{where}: no 'encoding' layer; layers are {', '.join(with_w) or 'none'}")
        split = with_w.index("encoding")
        before, after = with_w[:split], with_w[split + 1 :]
        enc_names = [n for n in before if n.startswith("bidirectional")]
        dec_names = [n for n in after if n.startswith("bidirectional")]
        bn_names = [n for n in with_w if n.startswith("batch_normalization")]
        out_names = [n for n in after if n.startswith("time_distributed") or n.startswith("dense")]
        if (
            not enc_names
            or not dec_names
            or len(bn_names) != 2
            or len(out_names) != 1
            or before != enc_names + bn_names[:1]
            or after != bn_names[1:] + dec_names + out_names
        ):
            raise InverscopeError(
                f"{where}: layers {', '.join(with_w)} do not match the BiLSTM autoencoder "
                f"(bidirectional x N, batch_normalization, encoding, batch_normalization, bidirectional x M, dense)"
            )
        layers = {n: _layer_weights(root, n, where) for n in with_w}
        enc_w = layers["encoding"]
        k = [v for key, v in enc_w.items() if key.endswith("kernel")]
        if len(k) != 1 or k[0].ndim != 2:
            raise InverscopeError(f"{where}: layer 'encoding' has no 2-D kernel")
        u2, latent = k[0].shape
        rk = [v for key, v in layers[enc_names[0]].items() if key.endswith("recurrent_kernel")]
        if not rk:
            raise InverscopeError(f"{where}: layer {enc_names[0]!r} has no recurrent_kernel")
        units = rk[0].shape[0]
        if u2 != 2 * units:
            raise InverscopeError(f"{where}: encoding input {u2} != 2 x LSTM units {units}")
        config = BiLSTMAutoencoderConfig(
            steps=steps,
            lstm_units=units,
            encoder_layers=len(enc_names),
            decoder_layers=len(dec_names),
            latent=latent,
            gate=gate,
        )
        model = BiLSTMAutoencoder(config)

        def load_bi(module, name: str, in_size: int) -> None:
            w = layers[name]
            for direction in ("forward", "backward"):
                sub = getattr(module, f"{direction}_lstm")
                # keys look like 'forward_lstm_1/kernel'; keep this direction's, by weight name
                dw = {key.rsplit("/", 1)[-1]: v for key, v in w.items() if key.startswith(direction)}
                lw = f"{where}: layer {name!r} {direction}"
                sub.kernel.data.copy_(_pick(dw, "kernel", (in_size, 4 * units), lw))
                sub.recurrent_kernel.data.copy_(_pick(dw, "recurrent_kernel", (units, 4 * units), lw))
                sub.bias.data.copy_(_pick(dw, "bias", (4 * units,), lw))

        def load_bn(module, name: str, size: int) -> None:
            w, lw = layers[name], f"{where}: layer {name!r}"
            module.weight.data.copy_(_pick(w, "gamma", (size,), lw))
            module.bias.data.copy_(_pick(w, "beta", (size,), lw))
            module.running_mean.data.copy_(_pick(w, "moving_mean", (size,), lw))
            module.running_var.data.copy_(_pick(w, "moving_variance", (size,), lw))

        def load_dense(module, name: str, n_in: int, n_out: int) -> None:
            w, lw = layers[name], f"{where}: layer {name!r}"
            module.weight.data.copy_(_pick(w, "kernel", (n_in, n_out), lw).t())
            module.bias.data.copy_(_pick(w, "bias", (n_out,), lw))

        with torch.no_grad():
            for i, name in enumerate(enc_names):
                load_bi(model.encoder[i], name, 1 if i == 0 else u2)
            load_bn(model.bn1, bn_names[0], u2)
            load_dense(model.encoding, "encoding", u2, latent)
            load_bn(model.bn2, bn_names[1], latent)
            for i, name in enumerate(dec_names):
                load_bi(model.decoder[i], name, latent if i == 0 else u2)
            load_dense(model.output, out_names[0], u2, 1)
        meta = {
            "source": str(path),
            "keras_version": _s(root.attrs.get("keras_version", fh.attrs.get("keras_version", ""))),
            "backend": _s(root.attrs.get("backend", fh.attrs.get("backend", ""))),
            "layer_names": names,
            "config": config.model_dump(),
        }
    model.eval()
    return model, meta
