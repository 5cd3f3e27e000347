"""HTML report builder: escaping, tables, atomic writes, embedded figures, and a real browser render."""

from __future__ import annotations

import io
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inverscope.core.errors import InverscopeError  # noqa: E402
from inverscope.report import html as html_mod  # noqa: E402
from inverscope.report.browser import find_chromium, screenshot  # noqa: E402
from inverscope.report.html import HtmlReport, flatten  # noqa: E402

MAGENTA = (230, 20, 200)
CYAN = (20, 200, 230)


def solid_figure(rgb) -> plt.Figure:
    """A 4x3 inch figure that is one solid block of colour `rgb`."""
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(np.broadcast_to(np.array(rgb, dtype=np.uint8), (30, 40, 3)), interpolation="nearest")
    ax.set_axis_off()
    return fig


def png_bytes(rgb) -> bytes:
    """PNG bytes of a small solid image."""
    buf = io.BytesIO()
    mpimg.imsave(buf, np.broadcast_to(np.array(rgb, dtype=np.uint8), (20, 20, 3)).copy(), format="png")
    return buf.getvalue()


def count_colour(png_path, rgb, tol: int = 6) -> int:
    """Pixels of the PNG within `tol` (per channel, 0-255) of `rgb`."""
    img = mpimg.imread(png_path)
    img = np.round(img[..., :3] * 255) if img.dtype.kind == "f" else img[..., :3]
    return int(np.all(np.abs(img.astype(int) - np.array(rgb)) <= tol, axis=-1).sum())


def test_text_is_escaped():
    rep = HtmlReport("T <b>", "sub & more")
    rep.section("S <i>").text("<script>alert(1)</script>")
    doc = rep.html()
    assert "<script>" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "T &lt;b&gt;" in doc and "sub &amp; more" in doc and "S &lt;i&gt;" in doc


def test_params_flattened_and_floats_formatted():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    rep = HtmlReport("t")
    rep.section("p").params({"optics": {"energy_kev": 300.0, "alpha": 0.0214159265}, "name": "x"})
    doc = rep.html()
    assert "optics.energy_kev" in doc and "optics.alpha" in doc
    assert ">0.02142<" in doc and ">300<" in doc


def test_sections_toc_table_metrics():
    rep = HtmlReport("t")
    s1 = rep.section("First part").table(["a", "b"], [[1, 2.5], ["x", None]], caption="cap")
    s2 = rep.section("First part").metrics({"R²": 0.98765, "n": 12})
    assert s1.anchor != s2.anchor
    doc = rep.html()
    for s in (s1, s2):
        assert f'href="#{s.anchor}"' in doc and f'id="{s.anchor}"' in doc
    assert "<caption>cap</caption>" in doc and ">0.9877<" in doc and 'class="card"' in doc
    assert "inverscope" in doc.split("<footer>")[1]


def test_figures_embedded_from_figure_path_and_bytes(tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(png_bytes(CYAN))
    fig = solid_figure(MAGENTA)
    rep = HtmlReport("t")
    rep.section("f").figure(fig, caption="from figure").figure(path, caption="from path") \
        .figure(png_bytes(MAGENTA), alt="from bytes")
    rep.section("row").figures_row([png_bytes(CYAN), png_bytes(MAGENTA)], ["left", "right"])
    doc = rep.html()
    assert not plt.fignum_exists(fig.number), "figure should be closed after rendering"
    srcs = re.findall(r'src="([^"]*)"', doc)
    assert len(srcs) == 5
    assert all(s.startswith("data:image/png;base64,iVBOR") for s in srcs)
    assert 'src="http' not in doc and "file:" not in doc and "url(" not in doc and "<script" not in doc
    assert doc.count("<figcaption>") == 4 and "max-width:100%" in doc


def test_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    rep = HtmlReport("first")
    rep.section("a").text("hello")
    assert rep.write(out) == out
    assert "hello" in out.read_text(encoding="utf-8")
    assert os.listdir(tmp_path) == ["report.html"]

    bad = HtmlReport("second")
    bad.section("b").text("bye")
    real_replace = os.replace

    def failing_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(html_mod.os, "replace", failing_write)
    with pytest.raises(OSError):
        bad.write(out)
    monkeypatch.setattr(html_mod.os, "replace", real_replace)
    assert "hello" in out.read_text(encoding="utf-8") and "bye" not in out.read_text(encoding="utf-8")
    assert os.listdir(tmp_path) == ["report.html"], "temporary file left behind"

    bad.write(out)
    assert "bye" in out.read_text(encoding="utf-8")
    assert os.listdir(tmp_path) == ["report.html"]


def test_screenshot_without_chromium_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INVERSCOPE_CHROMIUM", str(tmp_path / "no-such-chromium"))
    assert find_chromium() is None
    with pytest.raises(InverscopeError, match="chromium: not found"):
        screenshot(tmp_path / "r.html", tmp_path / "r.png")


def test_screenshot_shows_the_figures(tmp_path):
    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not found but CI=true (.ci/run installs it)")
        pytest.skip("chromium not found (install chromium or set INVERSCOPE_CHROMIUM)")

    def build(with_figures: bool, name: str):
        rep = HtmlReport("Browser check", "two solid figures")
        sec = rep.section("Figures").text("Magenta then cyan.").metrics({"pixels": 1.0})
        if with_figures:
            sec.figure(solid_figure(MAGENTA), caption="magenta").figure(solid_figure(CYAN), caption="cyan")
        html_path = rep.write(tmp_path / f"{name}.html")
        return screenshot(html_path, tmp_path / f"{name}.png", width=1000, height=1800)

    shot = build(True, "with")
    blank = build(False, "without")
    assert count_colour(shot, MAGENTA) > 5000 and count_colour(shot, CYAN) > 5000
    assert count_colour(blank, MAGENTA) < 50 and count_colour(blank, CYAN) < 50
