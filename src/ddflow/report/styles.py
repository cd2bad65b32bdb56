"""One colour-and-marker pair per method, the same in every figure: a fixed table keyed by method id.

Pair k of the table is (COLOURS[k % 10], MARKERS[k % 12]): neighbours in the table differ in both colour and marker,
and the first 60 pairs are all distinct (lcm(10, 12) = 60). The table holds every method of the registry
(ddflow.methods.registry) and room for the kernel and label-learning methods not yet implemented; a method id not
in it (an imported set's name, a new method) gets one of the 20 pairs after the table, chosen by a stable hash of
its id (so two unknown ids may share a pair: add new methods to the table).
"""
from __future__ import annotations

import zlib

# matplotlib's tab10 palette (colour-blind-friendlier than the old default) and markers legible at 6 pt
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
N_PAIRS = 60

# method id -> its index in the pair sequence; never renumber (figures stay comparable across runs and papers)
METHOD_ORDER = (
    # baselines and the whole training set
    "random", "herding", "whole",
    # gradient and distribution matching, with their DREAM and ISA variants
    "dc", "dsa", "dm", "dc-dream", "dsa-dream", "dm-dream", "dm-isa", "cafe", "cafe-dream", "idm",
    # trajectory matching
    "mtt", "mtt-isa", "tesla", "ead", "ead-literal",
    # IDC and DREAM, FRePo, ISA, HaBa
    "idc", "dream", "frepo", "isa", "haba",
    # FRePo with the hardest or easiest real samples discarded (ISA Fig. 5)
    "frepo-drop-hard10", "frepo-drop-hard20", "frepo-drop-hard30",
    "frepo-drop-easy10", "frepo-drop-easy20", "frepo-drop-easy30",
    # room for the kernel, label-learning and later methods
    "dd", "ld", "rtp", "kip", "rfad", "rcig", "rfad-isa", "rcig-isa", "datm", "ftd", "sre2l",
)
METHOD_STYLES: dict[str, tuple[str, str]] = {m: (COLOURS[k % len(COLOURS)], MARKERS[k % len(MARKERS)])
                                             for k, m in enumerate(METHOD_ORDER)}
_SPARE = range(len(METHOD_ORDER), N_PAIRS)


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of a method id: its fixed pair, or a spare pair after the table chosen by a hash of the id."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    k = _SPARE[zlib.crc32(method.encode()) % len(_SPARE)]
    return COLOURS[k % len(COLOURS)], MARKERS[k % len(MARKERS)]
