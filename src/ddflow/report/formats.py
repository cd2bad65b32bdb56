"""A table's LaTeX and HTML renderings, every text field escaped: caption, notes, index, column heads and cells.

LaTeX: pandas' `to_latex` escapes neither the caption nor anything we add around it, and pdflatex stops on a bare
`%`, `&`, `#`, `_`, `$`, `{`, `}`, `~`, `^` or `\\`, and on Unicode symbols its default input encoding has no glyph
for (Δ, −, σ, ...). `latex_escape` turns every such character into LaTeX source that prints it; the table needs only
`booktabs` (\\toprule, \\midrule, \\bottomrule) beside the LaTeX kernel. HTML: a standalone page (caption, table,
notes) that Snakemake's report shows in place (it offers CSV files only as downloads).
"""
from __future__ import annotations

import html
import re
import unicodedata

import pandas as pd

# ASCII characters with a meaning in LaTeX (backslash first: the others' replacements contain backslashes)
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "&": r"\&", "#": r"\#",
                 "_": r"\_", "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
# Unicode the specs and notes use, as LaTeX source that pdflatex prints without extra packages
LATEX_UNICODE = {"±": r"$\pm$", "—": "---", "–": "--", "−": "$-$", "·": r"$\cdot$", "×": r"$\times$",
                 "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$", "→": r"$\rightarrow$", "…": r"\ldots{}",
                 "°": r"$^\circ$", "µ": r"$\mu$", "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~"}
# LaTeX's names of the Greek letters, by the word Unicode uses (GREEK SMALL LETTER SIGMA -> \sigma)
_GREEK_LOWER = {"ALPHA", "BETA", "GAMMA", "DELTA", "EPSILON", "ZETA", "ETA", "THETA", "IOTA", "KAPPA", "LAMDA", "MU",
                "NU", "XI", "PI", "RHO", "SIGMA", "TAU", "UPSILON", "PHI", "CHI", "PSI", "OMEGA"}
_GREEK_UPPER = {"GAMMA", "DELTA", "THETA", "LAMDA", "XI", "PI", "SIGMA", "UPSILON", "PHI", "PSI", "OMEGA"}


def _latex_char(ch: str) -> str:
    if ch in LATEX_SPECIAL:
        return LATEX_SPECIAL[ch]
    if ch in LATEX_UNICODE:
        return LATEX_UNICODE[ch]
    if ord(ch) < 128:
        return ch if ch.isprintable() else " "
    words = unicodedata.name(ch, "").split()
    if len(words) == 4 and words[:3] == ["GREEK", "SMALL", "LETTER"] and words[3] in _GREEK_LOWER:
        return f"$\\{words[3].lower().replace('lamda', 'lambda')}$"
    if len(words) == 4 and words[:3] == ["GREEK", "CAPITAL", "LETTER"] and words[3] in _GREEK_UPPER:
        return f"$\\{words[3].capitalize().replace('Lamda', 'Lambda')}$"
    if ord(ch) < 256 and ch.isalpha():  # Latin-1 letters (é, ü, ß): pdflatex's utf8 input encoding prints them
        return ch
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return latex_escape(base) if base and base != ch else f"[U+{ord(ch):04X}]"  # printable, never an error


def latex_escape(text: object) -> str:
    """`text` as LaTeX source that prints it literally (pdflatex with the default utf8 input encoding)."""
    return "".join(_latex_char(ch) for ch in str(text))


def _escape_index(index: pd.Index) -> pd.Index:
    if isinstance(index, pd.MultiIndex):
        return pd.MultiIndex.from_tuples([tuple(latex_escape(v) for v in t) for t in index],
                                         names=[None if n is None else latex_escape(n) for n in index.names])
    return pd.Index([latex_escape(v) for v in index], name=None if index.name is None else latex_escape(index.name))


def latex_table(df: pd.DataFrame, caption: str, label: str, notes: list[str] = (), index: bool = True) -> str:
    """A `table` float: the escaped caption, the label (a key, not text: characters other than letters, digits and
    `:._-` become `-`), the frame as a booktabs tabular (dataset heads centred
    over their columns for two header levels), then the notes (escaped) in small type under it."""
    if df.shape[1] == 0:
        raise ValueError("a LaTeX table needs at least one column")
    esc = df.copy()
    esc.index, esc.columns = _escape_index(df.index), _escape_index(df.columns)
    esc = esc.astype(object).map(lambda v: latex_escape("" if v is None or (isinstance(v, float) and pd.isna(v))
                                                        else v))
    columns = ("l" if index else "") + "c" * df.shape[1]
    tex = esc.to_latex(index=index, escape=False, multicolumn=True, multicolumn_format="c", column_format=columns,
                       caption=latex_escape(caption), label=re.sub(r"[^A-Za-z0-9:._-]", "-", label))
    if notes:
        body = "\n".join(f"\\par {latex_escape(n)}" for n in notes)
        tex = tex.replace("\\end{table}", f"\\par\\smallskip{{\\footnotesize\n{body}\n}}\n\\end{{table}}")
    return tex


def latex_document(tables: list[str]) -> str:
    """A minimal pdflatex document holding the given `table` floats (what a paper's preamble needs for them)."""
    return ("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
            "\\begin{document}\n" + "\n\\clearpage\n".join(tables) + "\n\\end{document}\n")


def html_page(df: pd.DataFrame, caption: str, notes: list[str] = (), index: bool = True) -> str:
    """A standalone HTML page: the caption as heading, the table, the notes as a list (every text escaped)."""
    table = df.to_html(index=index, escape=True, na_rep="", border=0, classes="ddflow-table")
    items = "".join(f"<li>{html.escape(str(n))}</li>\n" for n in notes)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(caption)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(caption)}</h1>\n{table}\n<ul class=\"notes\">\n{items}</ul>\n</body></html>\n")


_CSS = ("body{font-family:sans-serif;font-size:14px;margin:1em}h1{font-size:1.2em}"
        "table{border-collapse:collapse}th,td{padding:.25em .6em;border-bottom:1px solid #ccc;white-space:nowrap}"
        "th{background:#f3f3f3}tbody th{text-align:left}.notes{font-size:.9em;color:#333;max-width:60em}")
