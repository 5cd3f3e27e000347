"""Augmentations: noise statistics, geometry conventions, conservation, seeding, validation."""

import math

import pytest
import torch

from inverscope.core.config import validate
from inverscope.core.errors import ConfigError
from inverscope.datasets.augment import AugmentConfig, Augmenter, blur, jitter_positions, rotate

OFF = dict(dose_e_per_pattern=None, rotation_deg=0.0, position_jitter=0.0, blur_sigma_px=0.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def augmenter(**changes) -> Augmenter:
    return Augmenter(AugmentConfig(**{**OFF, **changes}))


def random_patterns(shape=(3, 5, 17, 16), seed=0) -> torch.Tensor:
    x = torch.rand(shape, generator=gen(seed))
    return x / x.sum(dim=(-2, -1), keepdim=True)


def one(x: torch.Tensor) -> torch.Tensor:
    """A single pattern as a (1, 1, ky, kx) batch."""
    return x[None, None]


def gaussian_blob(n: int, row: float, col: float, sigma: float) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return torch.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2)).float()


# --- Poisson noise -----------------------------------------------------------------------------

@pytest.mark.parametrize("dose", [2e3, 1e5])
def test_poisson_mean_and_variance_match_the_dose(dose):
    value = 1.0 / (32 * 32)
    x = torch.full((8, 4, 32, 32), value)
    y = augmenter(dose_e_per_pattern=(dose, dose))(x, gen(1)).double()
    n = y.numel()
    lam = value * dose  # expected counts per pixel
    var = value / dose  # expected variance of counts / dose
    assert abs(y.mean().item() - value) < 5 * math.sqrt(var / n)
    # Var of the sample variance of Poisson counts ~ (lam + 2 lam^2) / n, scaled by 1 / dose^4.
    sd_var = math.sqrt((lam + 2 * lam**2) / n) / dose**2
    assert abs(y.var().item() - var) < 5 * sd_var
    counts = y * dose
    assert torch.allclose(counts, counts.round(), atol=1e-3 * max(1.0, lam))  # whole electrons


def test_doses_are_log_uniform_in_the_range():
    doses = augmenter(dose_e_per_pattern=(1e3, 1e5))._doses(20000, gen(3))
    assert doses.min() >= 1e3 and doses.max() <= 1e5
    logs = torch.log10(doses)
    sd = (2 / math.sqrt(12)) / math.sqrt(doses.numel())  # uniform on [3, 5]
    assert abs(logs.mean().item() - 4.0) < 5 * sd
    assert abs((logs < 3.5).double().mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / doses.numel())


def test_each_example_gets_its_own_dose():
    x = torch.full((32, 4, 16, 16), 1.0 / 256)
    y = augmenter(dose_e_per_pattern=(1e3, 1e5))(x, gen(3)).double()
    inv_dose = y.var(dim=(1, 2, 3)) / y.mean(dim=(1, 2, 3))  # Poisson: var / mean = 1 / dose
    assert 1 / inv_dose.max() < 3e3 and 1 / inv_dose.min() > 3e4


# --- No-op -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 5, 17, 16), (5, 17, 16)])
def test_everything_off_returns_the_same_values_in_a_new_tensor(shape):
    x = random_patterns(shape if len(shape) == 4 else (1, *shape)).reshape(shape)
    before = x.clone()
    y = augmenter()(x, gen(0))
    assert torch.equal(y, x) and y.dtype == torch.float32 and y.shape == x.shape
    assert y.data_ptr() != x.data_ptr()
    y.add_(1)
    assert torch.equal(x, before)


def test_full_pipeline_keeps_shape_dtype_and_leaves_input_alone():
    x = random_patterns().double()
    before = x.clone()
    aug = augmenter(dose_e_per_pattern=(1e4, 1e6), rotation_deg=5, position_jitter=0.5, blur_sigma_px=1.0)
    y = aug(x, gen(0))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.equal(x, before)
    assert aug(x[0], gen(0)).shape == x[0].shape


# --- Rotation ----------------------------------------------------------------------------------

def test_rot90_convention_on_a_square_odd_pattern():
    # Odd size: pixel n // 2 is the array centre, so +90 deg must equal torch.rot90 exactly.
    x = random_patterns((2, 3, 15, 15))
    y = rotate(x, torch.tensor([90.0, -90.0]))
    assert torch.allclose(y[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(y[1], torch.rot90(x[1], -1, dims=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize("ky, kx", [(16, 16), (15, 21), (20, 13)])
def test_plus_90_turns_counter_clockwise_about_pixel_n_over_2(ky, kx):
    # Convention: row 0 at the top; +90 takes a spot right of the centre to above it.
    cy, cx = ky // 2, kx // 2
    x = torch.zeros(ky, kx)
    x[cy + 1, cx + 3] = 1.0  # one row down, three columns right
    y = rotate(one(x), torch.tensor([90.0]))[0, 0]
    expected = torch.zeros(ky, kx)
    expected[cy - 3, cx + 1] = 1.0  # three rows up, one column right
    assert torch.allclose(y, expected, atol=1e-5)
    if ky == kx:  # even n: torch.rot90 turns about (n - 1) / 2, i.e. half a pixel up-left of n // 2
        shifted = torch.roll(torch.rot90(x, 1, dims=(0, 1)), shifts=1, dims=0)
        assert torch.allclose(y, shifted, atol=1e-5)


@pytest.mark.parametrize("n", [16, 17])
def test_the_zero_frequency_pixel_stays_put_for_any_angle(n):
    x = torch.zeros(n, n)
    x[n // 2, n // 2] = 1.0
    y = rotate(one(x).expand(1, 3, n, n), torch.tensor([37.0]))[0]
    assert torch.allclose(y[:, n // 2, n // 2], torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("angle", [3.0, -10.0])
def test_centred_disc_is_unchanged_by_a_small_rotation(angle):
    # Soft edge (1.5 px): bilinear resampling then errs by < 0.7 % of the peak. The same disc
    # turned about the array centre (n - 1) / 2 instead of pixel n // 2 errs by ~ 2.3 % at 10 deg.
    n = 32
    r, c = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    disc = torch.sigmoid((8.0 - torch.hypot(r - n // 2, c - n // 2)) / 1.5).float()
    y = rotate(one(disc), torch.tensor([angle]))[0, 0]
    assert (y - disc).abs().max() < 0.01
    assert torch.linalg.norm(y - disc) / torch.linalg.norm(disc) < 0.01


@pytest.mark.parametrize("angle", [33.0, -71.0, 180.0])
def test_rotation_conserves_the_intensity_of_an_interior_feature(angle):
    blob = gaussian_blob(33, 10.0, 21.0, 1.5)
    y = rotate(one(blob), torch.tensor([angle]))[0, 0]
    assert abs(y.sum().item() / blob.sum().item() - 1) < 0.02
    assert y.sum() > 0 and not torch.allclose(y, blob, atol=1e-3)


def test_one_angle_per_example_shared_by_its_patterns():
    x = random_patterns((4, 3, 17, 17))
    x[:, 1] = x[:, 0]
    y = augmenter(rotation_deg=10)(x, gen(5))
    assert torch.equal(y[:, 0], y[:, 1])  # same pattern, same angle
    assert not torch.allclose(y[0, 0], y[1, 0])


# --- Blur --------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.6, 1.5, 2.5])
def test_blur_conserves_an_interior_feature_and_lowers_the_peak(sigma):
    blob = gaussian_blob(48, 20.0, 27.0, 1.0).double()
    y = blur(one(blob), torch.tensor([sigma]))[0, 0]
    assert abs(y.sum().item() / blob.sum().item() - 1) < 1e-5
    assert y.max() < 0.9 * blob.max()
    # Gaussian on Gaussian: peak falls to s0^2 / (s0^2 + sigma^2) (discretisation aside).
    assert y.max().item() == pytest.approx(1 / (1 + sigma**2), rel=0.05)
    assert torch.equal(blur(one(blob), torch.tensor([0.0]))[0, 0], blob)


def test_blur_sigma_is_per_example():
    blob = gaussian_blob(31, 15, 15, 1.0)
    x = torch.stack([blob, blob])[:, None]
    y = blur(x, torch.tensor([0.0, 2.0]))
    assert torch.allclose(y[0, 0], blob, atol=1e-7) and y[1, 0].max() < 0.5 * blob.max()


# --- Position jitter ---------------------------------------------------------------------------

def test_zero_jitter_is_identity_and_half_a_step_averages_neighbours():
    x = random_patterns((2, 6, 9, 8))
    assert torch.equal(jitter_positions(x, torch.zeros(2)), x)
    y = jitter_positions(x, torch.tensor([0.5, -0.5]))
    assert torch.allclose(y[0, :-1], (x[0, :-1] + x[0, 1:]) / 2, rtol=0, atol=1e-7)
    assert torch.equal(y[0, -1], x[0, -1])  # clamped at the end
    assert torch.allclose(y[1, 1:], (x[1, :-1] + x[1, 1:]) / 2, rtol=0, atol=1e-7)
    assert torch.equal(y[1, 0], x[1, 0])  # clamped at the start


def test_quarter_step_interpolates_linearly():
    x = torch.arange(5, dtype=torch.float32)[None, :, None, None].expand(1, 5, 2, 2)
    y = jitter_positions(x, torch.tensor([0.25]))
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.25, 1.25, 2.25, 3.25, 4.0]))


# --- Seeding -----------------------------------------------------------------------------------

def test_same_seed_same_bytes_different_seed_differs():
    x = random_patterns()
    aug = augmenter(dose_e_per_pattern=(1e4, 1e6), rotation_deg=4, position_jitter=0.5, blur_sigma_px=1.2)
    a, b, c = aug(x, gen(7)), aug(x, gen(7)), aug(x, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_rng_is_not_used():
    x = random_patterns()
    aug = augmenter(dose_e_per_pattern=(1e4, 1e6), rotation_deg=4, position_jitter=0.5, blur_sigma_px=1.2)
    torch.manual_seed(0)
    a = aug(x, gen(7))
    torch.manual_seed(1)
    assert torch.equal(a, aug(x, gen(7)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_input_device_with_a_cpu_generator():
    x = random_patterns().cuda()
    aug = augmenter(dose_e_per_pattern=(1e4, 1e6), rotation_deg=4, position_jitter=0.5, blur_sigma_px=1.2)
    a, b = aug(x, gen(7)), aug(x, gen(7))
    assert a.device == x.device and torch.equal(a, b)
    quiet = augmenter(rotation_deg=4, position_jitter=0.5, blur_sigma_px=1.2)
    assert torch.allclose(quiet(x, gen(3)).cpu(), quiet(x.cpu(), gen(3)), atol=1e-6)


# --- Config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, field", [
    ({"blur_sigma_px": -1.0}, "blur_sigma_px"),
    ({"rotation_deg": -2.0}, "rotation_deg"),
    ({"position_jitter": 1.5}, "position_jitter"),
    ({"dose_e_per_pattern": [1e6, 1e4]}, "dose_e_per_pattern"),
    ({"dose_e_per_pattern": [0.0, 1e4]}, "dose_e_per_pattern"),
    ({"blur_sigma": 1.0}, "blur_sigma"),
])
def test_bad_config_raises_config_error_naming_the_field(data, field):
    with pytest.raises(ConfigError, match=field) as err:
        validate(AugmentConfig, data, "augment")
    assert "\n" not in str(err.value)


def test_defaults_and_describe():
    cfg = validate(AugmentConfig, {"dose_e_per_pattern": None}, "augment")
    assert cfg.rotation_deg == 2.0 and cfg.dose_e_per_pattern is None
    d = Augmenter(AugmentConfig()).describe()
    assert d["dose_e_per_pattern"] == [1e4, 1e6] and d["order"][0] == "position_jitter"
