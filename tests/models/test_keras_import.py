"""Published Agar et al. (2019) BiLSTM autoencoder: preprocessing, Keras LSTM semantics, weight import.

The reference numbers come from /work/shared/data/agar2019/README.md (inference mode:
dropout off, BatchNorm moving statistics).
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from inverscope.core.errors import InverscopeError
from inverscope.datasets.preprocess import (
    Standardizer,
    interpolate_nonfinite,
    published_preprocessing,
    range_filter,
    savgol_outliers,
)
from inverscope.models.keras_import import load_keras_bilstm_weights
from inverscope.models.nets.bilstm_ae import BiLSTM, BiLSTMAutoencoder, BiLSTMAutoencoderConfig, KerasLSTM

SHARED = Path("/work/shared/data/agar2019")
ACTIVE_PIEZO = {1, 7, 11, 12, 15}


def data_file(packaged: str, original: str | None = None) -> Path | None:
    """The packaged copy under inverscope/data/agar2019, else the shared original, else None."""
    try:
        res = importlib.resources.files("inverscope") / "data" / "agar2019" / packaged
        if res.is_file():
            return Path(str(res))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    shared = SHARED / (original or packaged)
    return shared if shared.is_file() else None


def need(path: Path | None) -> Path:
    if path is None:
        pytest.skip("Agar 2019 data files not available")
    return path


# --------------------------------------------------------------------------- preprocessing


def test_interpolate_nonfinite_linear_and_edges():
    y = np.array([[np.nan, 1.0, np.inf, 3.0, -np.inf], [0.0, 1.0, 2.0, 3.0, 4.0]])
    out = interpolate_nonfinite(y)
    np.testing.assert_allclose(out[0], [1.0, 1.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(out[1], y[1])
    # along another axis
    np.testing.assert_allclose(interpolate_nonfinite(y.T, axis=0), out.T)
    assert np.isnan(y[0, 0])  # input untouched
    with pytest.raises(InverscopeError):
        interpolate_nonfinite(np.full((2, 4), np.nan))


def test_savgol_outliers_removes_spike_only():
    t = np.linspace(0, 2 * np.pi, 96)
    loops = np.stack([np.sin(t), np.cos(2 * t)])
    dirty = loops.copy()
    dirty[0, 40] += 5.0
    dirty[1, 3] = np.nan
    clean = savgol_outliers(dirty, window=7, order=3, n_outliers=3)
    assert np.isfinite(clean).all()
    # the spike is replaced by the linear interpolation of its neighbours' values
    assert abs(clean[0, 40] - loops[0, 40]) < 0.05
    # at most n_outliers points per loop change (plus the NaN), the rest is not smoothed
    changed0 = np.nonzero(clean[0] != dirty[0])[0]
    assert 40 in changed0 and len(changed0) <= 3
    changed1 = np.nonzero(clean[1] != dirty[1])[0]
    assert 3 in changed1 and len(changed1) <= 4
    far = np.setdiff1d(np.arange(96), np.arange(30, 51))
    np.testing.assert_array_equal(clean[0, far], dirty[0, far])


def test_range_filter():
    out = range_filter(np.array([1290.0, 1300.0, 1320.0, 1341.0, np.inf]), 1300, 1340)
    assert np.isnan(out[[0, 3, 4]]).all() and list(out[[1, 2]]) == [1300.0, 1320.0]
    with pytest.raises(InverscopeError):
        range_filter(np.zeros(3), 2, 1)


def test_standardizer_global_and_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 96))
    s = Standardizer().fit(x)
    assert s.mean == pytest.approx(x.mean()) and s.std == pytest.approx(x.std())
    z = s.transform(x)
    assert z.mean() == pytest.approx(0.0, abs=1e-12) and z.std() == pytest.approx(1.0)
    s2 = Standardizer.from_dict(s.to_dict())
    np.testing.assert_allclose(s2.inverse_transform(s2.transform(x)), x)
    assert s2.to_dict() == s.to_dict()
    with pytest.raises(InverscopeError):
        Standardizer().transform(x)
    with pytest.raises(InverscopeError):
        Standardizer.from_dict({"mean": 0.0})
    with pytest.raises(InverscopeError):
        Standardizer().fit(np.array([1.0, np.nan]))


# --------------------------------------------------------------------------- LSTM semantics


def _hs(v: float) -> float:
    return min(1.0, max(0.0, 0.2 * v + 0.5))


def test_hard_sigmoid_lstm_cell_by_hand():
    cell = KerasLSTM(1, 1, gate="hard_sigmoid")
    w = [0.5, -1.0, 2.0, 3.0]  # kernel columns: i, f, c, o
    r = [0.7, 0.4, -0.6, 1.5]
    bias = [0.1, 1.0, -0.2, -4.0]
    with torch.no_grad():
        cell.kernel.copy_(torch.tensor([w]))
        cell.recurrent_kernel.copy_(torch.tensor([r]))
        cell.bias.copy_(torch.tensor(bias))
    xs = [1.0, -2.0, 0.5]

    def run(seq):
        h = c = 0.0
        hs = []
        for x in seq:
            z = [x * w[k] + h * r[k] + bias[k] for k in range(4)]
            i, f, g, o = _hs(z[0]), _hs(z[1]), math.tanh(z[2]), _hs(z[3])
            c = f * c + i * g
            h = o * math.tanh(c)
            hs.append(h)
        return hs, h

    want, want_last = run(xs)
    out, last = cell(torch.tensor(xs, dtype=torch.float64).reshape(1, 3, 1).float())
    np.testing.assert_allclose(out.detach().numpy().ravel(), want, rtol=1e-6, atol=1e-7)
    assert last.item() == pytest.approx(want_last, rel=1e-6)
    # go_backwards: processed from the end, outputs returned in time order
    back, back_last = run(xs[::-1])
    out_b, last_b = cell(torch.tensor(xs).reshape(1, 3, 1), reverse=True)
    np.testing.assert_allclose(out_b.detach().numpy().ravel(), back[::-1], rtol=1e-6, atol=1e-7)
    assert last_b.item() == pytest.approx(back_last, rel=1e-6)
    # the o-gate saturates at 0 for z_o <= -2.5: hard, not logistic
    assert _hs(-4.0 + 3.0 * -2.0) == 0.0


@pytest.mark.parametrize("gate", ["hard_sigmoid", "sigmoid"])
def test_bilstm_concat_matches_single_directions(gate):
    torch.manual_seed(0)
    bi = BiLSTM(3, 5, gate=gate, return_sequences=True)
    with torch.no_grad():
        for p in bi.parameters():
            p.normal_(0, 0.7)
    x = torch.randn(4, 7, 3)
    f_seq, f_last = bi.forward_lstm(x)
    b_seq, b_last = bi.backward_lstm(x, reverse=True)
    torch.testing.assert_close(bi(x), torch.cat([f_seq, b_seq], -1))
    bi.return_sequences = False
    torch.testing.assert_close(bi(x), torch.cat([f_last, b_last], -1))
    if gate == "sigmoid":  # the fused torch kernel (used on GPU) agrees with the loop
        seq, last = bi._fused(x.transpose(0, 1))
        torch.testing.assert_close(seq.transpose(0, 1), torch.cat([f_seq, b_seq], -1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(last, torch.cat([f_last, b_last], -1), rtol=1e-5, atol=1e-6)
    # torch.nn.LSTM uses the same gate order (i, f, g, o) as Keras for sigmoid gates
    if gate == "sigmoid":
        ref = torch.nn.LSTM(3, 5, batch_first=True)
        with torch.no_grad():
            ref.weight_ih_l0.copy_(bi.forward_lstm.kernel.t())
            ref.weight_hh_l0.copy_(bi.forward_lstm.recurrent_kernel.t())
            ref.bias_ih_l0.copy_(bi.forward_lstm.bias)
            ref.bias_hh_l0.zero_()
        torch.testing.assert_close(ref(x)[0], f_seq, rtol=1e-5, atol=1e-6)


def test_autoencoder_shapes_and_config():
    cfg = BiLSTMAutoencoderConfig(steps=10, lstm_units=4, encoder_layers=2, decoder_layers=1, latent=3)
    m = BiLSTMAutoencoder(cfg).eval()
    x = torch.randn(5, 10)
    rec, z = m(x)
    assert rec.shape == (5, 10) and z.shape == (5, 3) and (z >= 0).all()
    torch.testing.assert_close(m(x.unsqueeze(-1))[0], rec)
    torch.testing.assert_close(m.encode(x), z)
    with pytest.raises(ValueError):
        m(torch.randn(5, 11))
    d = BiLSTMAutoencoderConfig()
    got = (d.steps, d.lstm_units, d.latent, d.gate, d.bn_eps, d.bn_momentum)
    assert got == (96, 64, 16, "hard_sigmoid", 1e-3, 0.01)


# --------------------------------------------------------------------------- Keras import (synthetic files)


def _write_keras_file(path: Path, model: BiLSTMAutoencoder, extra_layers=(), break_shape: bool = False) -> None:
    """Write ``model`` in the Keras 2 save_weights layout (what the published files use)."""
    cfg = model.config
    names: list[str] = []
    with h5py.File(path, "w") as f:

        def layer(name: str, weights: dict[str, np.ndarray]) -> None:
            g = f.create_group(name)
            full = [f"{name}/{k}:0" for k in weights]
            g.attrs["weight_names"] = np.array([s.encode() for s in full])
            for key, arr in zip(full, weights.values()):
                g.create_dataset(key, data=np.asarray(arr, dtype=np.float32))
            names.append(name)

        def bi(idx: int, mod: BiLSTM) -> None:
            w = {}
            for d in ("forward", "backward"):
                sub = getattr(mod, f"{d}_lstm")
                w[f"{d}_lstm_{idx}/kernel"] = sub.kernel.detach().numpy()
                w[f"{d}_lstm_{idx}/recurrent_kernel"] = sub.recurrent_kernel.detach().numpy()
                w[f"{d}_lstm_{idx}/bias"] = sub.bias.detach().numpy()
            layer(f"bidirectional_{idx}", w)

        def bn(idx: int, mod) -> None:
            layer(
                f"batch_normalization_{idx}",
                {
                    "gamma": mod.weight.detach().numpy(),
                    "beta": mod.bias.detach().numpy(),
                    "moving_mean": mod.running_mean.numpy(),
                    "moving_variance": mod.running_var.numpy(),
                },
            )

        for name in extra_layers:
            layer(name, {"kernel": np.zeros((3, 3))})
        for i, mod in enumerate(model.encoder):
            bi(i + 1, mod)
        bn(1, model.bn1)
        kernel = model.encoding.weight.detach().numpy().T
        if break_shape:
            kernel = kernel[:, :-1]
        layer("encoding", {"kernel": kernel, "bias": model.encoding.bias.detach().numpy()})
        bn(2, model.bn2)
        for i, mod in enumerate(model.decoder):
            bi(cfg.encoder_layers + i + 1, mod)
        layer(
            "time_distributed_1",
            {"kernel": model.output.weight.detach().numpy().T, "bias": model.output.bias.detach().numpy()},
        )
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["keras_version"] = b"2.1.5"
        f.attrs["backend"] = b"tensorflow"


def _randomized(cfg: BiLSTMAutoencoderConfig) -> BiLSTMAutoencoder:
    torch.manual_seed(1)
    m = BiLSTMAutoencoder(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
        m.bn1.running_var.uniform_(0.5, 2.0)
        m.bn2.running_mean.normal_()
    return m.eval()


def test_keras_file_round_trip(tmp_path):
    cfg = BiLSTMAutoencoderConfig(steps=12, lstm_units=5, encoder_layers=2, decoder_layers=3, latent=4)
    src = _randomized(cfg)
    path = tmp_path / "w.hdf5"
    _write_keras_file(path, src)
    model, meta = load_keras_bilstm_weights(path, steps=12)
    assert not model.training and meta["keras_version"] == "2.1.5"
    assert meta["config"]["encoder_layers"] == 2 and meta["config"]["decoder_layers"] == 3
    assert meta["config"]["lstm_units"] == 5 and meta["config"]["latent"] == 4
    for (k, a), (k2, b) in zip(src.state_dict().items(), model.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(a, b)
    x = torch.randn(6, 12)
    torch.testing.assert_close(model(x)[0], src(x)[0])


def test_wrong_weights_files_raise(tmp_path):
    cfg = BiLSTMAutoencoderConfig(steps=8, lstm_units=3, encoder_layers=1, decoder_layers=1, latent=2)
    src = _randomized(cfg)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        g = f.create_group("conv2d_1")
        g.attrs["weight_names"] = np.array([b"conv2d_1/kernel:0"])
        g.create_dataset("conv2d_1/kernel:0", data=np.zeros((3, 3, 1, 8), np.float32))
        f.attrs["layer_names"] = np.array([b"conv2d_1"])
    bad_shape = tmp_path / "bad_shape.hdf5"
    _write_keras_file(bad_shape, src, break_shape=True)
    extra = tmp_path / "extra.hdf5"
    _write_keras_file(extra, src, extra_layers=("conv2d_1",))
    not_h5 = tmp_path / "text.hdf5"
    not_h5.write_text("hello")
    no_names = tmp_path / "plain.h5"
    with h5py.File(no_names, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    for path in (other, bad_shape, extra, not_h5, no_names, tmp_path / "missing.hdf5"):
        with pytest.raises(InverscopeError) as err:
            load_keras_bilstm_weights(path)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- published weights on real data


@pytest.fixture(scope="module")
def piezo_result():
    mat = need(data_file("NN_of_Mixed_PZT_BEPS_data.mat"))
    weights = need(data_file("keras/piezoresponse_weights.hdf5", "keras/piezoresponse/weights.15179-0.00.hdf5"))
    import scipy.io as sio

    raw = sio.loadmat(str(mat))["Loopdata_mixed"]
    assert raw.shape == (60, 60, 96) and np.isnan(raw).sum() == 3
    loops = np.asarray(raw).reshape(3600, 96)  # row-major over the 60 x 60 grid
    x, scaler = published_preprocessing(loops)
    model, meta = load_keras_bilstm_weights(weights)
    with torch.no_grad():
        rec, z = model(torch.tensor(x, dtype=torch.float32))
    return x, scaler, rec.numpy(), z.numpy(), meta


@pytest.mark.slow
def test_published_preprocessing_constants(piezo_result):
    x, scaler, *_ = piezo_result
    assert x.shape == (3600, 96) and np.isfinite(x).all()
    assert scaler.mean == pytest.approx(-1.0466e-5, rel=1e-3)
    assert scaler.std == pytest.approx(7.8557e-5, rel=1e-3)


@pytest.mark.slow
def test_published_piezoresponse_reconstruction(piezo_result):
    x, _, rec, _, meta = piezo_result
    assert meta["config"]["gate"] == "hard_sigmoid" and meta["config"]["lstm_units"] == 64
    mse = float(np.mean((rec - x) ** 2))
    assert mse == pytest.approx(0.00252, rel=0.01)


@pytest.mark.slow
def test_published_piezoresponse_latents(piezo_result):
    *_, z, _ = piezo_result
    assert z.shape == (3600, 16)
    assert set(np.nonzero((z > 0).any(axis=0))[0].tolist()) == ACTIVE_PIEZO
    published = np.load(need(data_file("published_piezoresponse_embeddings.npy")))
    assert published.shape == (3600, 16)
    for j in sorted(ACTIVE_PIEZO):
        r = np.corrcoef(z[:, j], published[:, j])[0, 1]
        assert r >= 0.98, f"latent {j}: correlation {r:.4f}"


@pytest.mark.slow
def test_published_resonance_reconstruction():
    data = need(data_file("resonance_normalized_3600x96.npy"))
    weights = need(data_file("keras/resonance_weights.hdf5", "keras/resonance/weights.00022570-0.0123.hdf5"))
    y = np.load(data)  # already normalized by the authors: no preprocessing
    assert y.shape == (3600, 96)
    model, _ = load_keras_bilstm_weights(weights)
    with torch.no_grad():
        rec, z = model(torch.tensor(y, dtype=torch.float32))
    mse = float(np.mean((rec.numpy() - y) ** 2))
    assert mse == pytest.approx(0.01094, rel=0.01)
    assert set(np.nonzero((z.numpy() > 0).any(axis=0))[0].tolist()) == {4, 6, 11, 15}
