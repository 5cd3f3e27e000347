"""Self-contained HTML reports: one file, inline CSS, images as base64 data URIs."""

from __future__ import annotations

import base64
import datetime as _dt
import io
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;
 background:#fafbfc;margin:0;line-height:1.5}
main{max-width:1100px;margin:0 auto;padding:24px 32px}
h1{margin:0 0 4px;font-size:1.9em}.subtitle{color:#5b6575;margin:0 0 18px}
h2{border-bottom:2px solid #dfe3ea;padding-bottom:4px;margin-top:36px}
nav{background:#fff;border:1px solid #dfe3ea;border-radius:6px;padding:10px 18px}
nav ol{margin:4px 0;padding-left:20px}a{color:#2457a6;text-decoration:none}
table{border-collapse:collapse;margin:10px 0;background:#fff;font-size:.92em}
th,td{border:1px solid #dfe3ea;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:bottom;color:#5b6575;font-size:.9em;padding-top:4px;text-align:left}
.metrics{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #dfe3ea;border-left:4px solid #2457a6;border-radius:6px;
 padding:8px 16px;min-width:140px}
.card .name{color:#5b6575;font-size:.85em}.card .value{font-size:1.6em;font-weight:600}
figure{margin:14px 0;background:#fff;border:1px solid #dfe3ea;border-radius:6px;padding:8px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#5b6575;font-size:.9em;margin-top:4px}
.row{display:flex;flex-wrap:wrap;gap:12px}.row figure{flex:1 1 300px}
footer{color:#8a93a3;font-size:.8em;border-top:1px solid #dfe3ea;margin-top:40px;padding-top:8px}
"""


def format_value(value: Any) -> str:
    """Format a value for display; floats get 4 significant digits.

    Parameters
    ----------
    value : Any
        Value to format.

    Returns
    -------
    str
        Display string (not yet HTML-escaped).
    """
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into one level with dotted keys.

    Parameters
    ----------
    mapping : Mapping
        Possibly nested mapping.
    prefix : str
        Key prefix used for recursion.

    Returns
    -------
    dict
        ``{"a.b": value, ...}`` in insertion order.
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def png_data_uri(fig_or_png: Any) -> str:
    """Return a ``data:image/png;base64,...`` URI for a figure, a PNG path or PNG bytes.

    Parameters
    ----------
    fig_or_png : matplotlib.figure.Figure or str or os.PathLike or bytes
        A Figure is rendered at dpi 110 (bbox tight) and closed.

    Returns
    -------
    str
        The data URI.
    """
    if isinstance(fig_or_png, (bytes, bytearray)):
        data = bytes(fig_or_png)
    elif isinstance(fig_or_png, (str, os.PathLike)):
        data = Path(fig_or_png).read_bytes()
    elif hasattr(fig_or_png, "savefig"):
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        try:
            fig_or_png.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig_or_png)
        data = buf.getvalue()
    else:
        raise TypeError(f"figure: expected a matplotlib Figure, a PNG path or PNG bytes, got {type(fig_or_png).__name__}")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _version() -> str:
    """Return the installed inverscope version, or ``"unknown"``."""
    try:
        import inverscope

        return str(inverscope.__version__)
    except (ImportError, AttributeError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("inverscope")
        except PackageNotFoundError:
            return "unknown"


class Section:
    """One titled section of an :class:`HtmlReport`; every method returns ``self``."""

    def __init__(self, title: str, anchor: str):
        self.title = title
        self.anchor = anchor
        self._parts: list[str] = []

    def text(self, text: str) -> Section:
        """Add an escaped paragraph."""
        self._parts.append(f"<p>{escape(str(text))}</p>")
        return self

    def params(self, mapping: Mapping[str, Any], caption: str = "") -> Section:
        """Add a key/value table; nested mappings are flattened with dotted keys."""
        rows = [[k, v] for k, v in flatten(mapping).items()]
        return self.table(["parameter", "value"], rows, caption)

    def table(self, headers: list[str], rows: Iterable[Iterable[Any]], caption: str = "") -> Section:
        """Add a table with a header row; numbers are right-aligned, floats shown to 4 digits."""
        head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        cap = f"<caption>{escape(caption)}</caption>" if caption else ""
        self._parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def metrics(self, mapping: Mapping[str, Any]) -> Section:
        """Add a row of headline-number cards (name above a large value)."""
        cards = "".join(
            f'<div class="card"><div class="name">{escape(str(k))}</div>'
            f'<div class="value">{escape(format_value(v))}</div></div>'
            for k, v in mapping.items()
        )
        self._parts.append(f'<div class="metrics">{cards}</div>')
        return self

    def figure(self, fig_or_png: Any, caption: str = "", alt: str = "") -> Section:
        """Add an embedded PNG figure (matplotlib Figure, PNG path or PNG bytes)."""
        self._parts.append(_figure_html(fig_or_png, caption, alt))
        return self

    def figures_row(self, figures: Iterable[Any], captions: Iterable[str] = ()) -> Section:
        """Add several figures side by side (wrapping on narrow screens)."""
        figures, captions = list(figures), list(captions)
        captions += [""] * (len(figures) - len(captions))
        inner = "".join(_figure_html(f, c, c) for f, c in zip(figures, captions))
        self._parts.append(f'<div class="row">{inner}</div>')
        return self

    def html(self) -> str:
        """Return this section as HTML."""
        body = "\n".join(self._parts)
        return f'<section id="{self.anchor}">\n<h2>{escape(self.title)}</h2>\n{body}\n</section>'


def _cell(value: Any) -> str:
    """Return one ``<td>``; numbers get the ``num`` class."""
    cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<td{cls}>{escape(format_value(value))}</td>"


def _figure_html(fig_or_png: Any, caption: str, alt: str) -> str:
    """Return a ``<figure>`` element holding an embedded PNG."""
    alt = alt or caption
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(fig_or_png)}" alt="{escape(alt)}" style="max-width:100%">{cap}</figure>'


class HtmlReport:
    """A single-file HTML report: title, table of contents, sections, footer.

    Parameters
    ----------
    title : str
        Report title (page ``<title>`` and ``<h1>``).
    subtitle : str
        Optional line under the title.
    """

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []

    def section(self, title: str) -> Section:
        """Append and return a new section with a unique anchor id."""
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
        section = Section(title, f"s{len(self.sections) + 1}-{slug}")
        self.sections.append(section)
        return section

    def html(self) -> str:
        """Return the whole document as a string."""
        toc = "".join(f'<li><a href="#{s.anchor}">{escape(s.title)}</a></li>' for s in self.sections)
        sub = f'<p class="subtitle">{escape(self.subtitle)}</p>' if self.subtitle else ""
        stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        body = "\n".join(s.html() for s in self.sections)
        return (
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{escape(self.title)}</h1>\n{sub}\n"
            f"<nav><strong>Contents</strong><ol>{toc}</ol></nav>\n{body}\n"
            f"<footer>Generated {escape(stamp)} by inverscope {escape(_version())}</footer>\n"
            f"</main>\n</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report atomically (temporary file + rename) as UTF-8 and return its path.

        An existing file at `path` is replaced only if rendering and writing succeed.
        """
        path = Path(path)
        text = self.html()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path
