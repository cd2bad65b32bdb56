"""Batched k-means in plain torch, for DREAM's representative matching.

DREAM (Liu et al., ICCV 2023, "Efficient Dataset Distillation by Representative Matching") replaces the random
real batch of a class with the real samples nearest to the k-means centroids of that class's features (the
current network's ``embed()`` output), with as many clusters as the real batch size per class. This module
gives that selection (:func:`representative_indices`) and the clustering under it; how often to re-cluster
(DREAM: every 10 matching steps) is the caller's business.

Algorithm (per class, on the device of its input, in float32; float64 input stays float64):

1. Initialisation. ``'k-means++'``: the first centre is a uniform draw, every further centre is drawn with
   probability proportional to D(x)^2, the squared distance to the nearest centre chosen so far (one trial
   per centre). The weights are quantised to integers before the cumulative sum, so the draw is exact and
   identical on every device for identical distances. When all remaining weight is zero (duplicates), the
   draw falls back to a uniform one. ``'random'``: k distinct samples (a random permutation's first k).
   Every random number comes from the caller's CPU ``torch.Generator``: the uniforms / the permutation are
   drawn on the CPU and then moved to the device; all of them are drawn before Lloyd's iterations start.
2. Lloyd's iterations. Squared distances ``||x||^2 - 2 x c^T + ||c||^2`` are computed in row chunks (at most
   2^22 distances at a time); every point goes to its nearest centre (ties: the lower centre index). Clusters
   left empty are re-seeded (rule below); each centre becomes the mean of its points (``index_add_`` on the
   CPU, a one-hot matrix product on CUDA, where ``index_add_`` would be non-deterministic). The loop stops
   when the largest centre shift is at most ``tol`` times the data scale (the root-mean-square distance of
   the samples to their mean), or after ``iters`` iterations.
3. Empty clusters. Every cluster keeps its own nearest point (the "keeper"; ties: lowest sample index). The
   remaining points are ranked by their distance to their assigned centre, farthest first (ties: lowest
   sample index), and the empty clusters, in increasing cluster index, take them in that order: the point
   moves to the empty cluster and becomes its centre. As k <= N there are always enough non-keepers, no
   donor cluster can become empty, and so every returned cluster is non-empty. The rule is deterministic.

The returned assignment is the one of the last iteration (after re-seeding); the returned centroids are
exactly the means of the samples it assigns to them.

:func:`kmeans_batched` runs several classes in one Lloyd loop: each iteration queues the per-class kernels
of every class still running and then synchronises with the host once for all of them (to drop the
classes that have converged). Every floating-point reduction is computed per class with exactly the same
operations and shapes as :func:`kmeans`, so its results are bitwise identical to calling :func:`kmeans` per
class with the same generators (a padded ``bmm`` over classes would not guarantee that: BLAS results depend on
the shapes).
"""
from __future__ import annotations

import torch

from ..errors import DdflowError

__all__ = [
    "kmeans",
    "kmeans_batched",
    "nearest_to_centroids",
    "representative_indices",
    "representative_indices_batched",
]

_CHUNK_ELEMENTS = 1 << 22  # distances held at once per chunk (16 MiB in float32)
_INITS = ("k-means++", "random")


# ----------------------------------------------------------------------------------------------- checks
def _compute_dtype(*ts: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _check_x(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise DdflowError(f"kmeans: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise DdflowError(f"kmeans: {name} must be 2-D (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise DdflowError(f"kmeans: {name} must have at least one sample and one feature, got {tuple(x.shape)}")
    if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32,
                                                                   torch.int64, torch.uint8)):
        raise DdflowError(f"kmeans: {name} must be real-valued, got dtype {x.dtype}")
    xc = x.detach().to(_compute_dtype(x)).contiguous()
    if not bool(torch.isfinite(xc).all()):
        raise DdflowError(f"kmeans: {name} contains NaN or infinite values")
    return xc


def _check_k(k: int, n: int, name: str = "x") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise DdflowError(f"kmeans: k must be an int, got {k!r}")
    if k < 1:
        raise DdflowError(f"kmeans: k must be >= 1, got {k}")
    if k > n:
        raise DdflowError(f"kmeans: k={k} clusters need at least k samples, but {name} has N={n}")
    return k


def _check_generator(g: torch.Generator) -> torch.Generator:
    if not isinstance(g, torch.Generator):
        raise DdflowError(f"kmeans: generator must be a torch.Generator, got {type(g).__name__}")
    if g.device.type != "cpu":
        raise DdflowError(f"kmeans: generator must be a CPU torch.Generator, got one on {g.device}")
    return g


def _check_common(iters: int, tol: float, init: str) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise DdflowError(f"kmeans: iters must be an int >= 1, got {iters!r}")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
        raise DdflowError(f"kmeans: tol must be a number >= 0, got {tol!r}")
    if init not in _INITS:
        raise DdflowError(f"kmeans: init must be one of {list(_INITS)}, got {init!r}")


# -------------------------------------------------------------------------------------------- distances
def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def _chunk_rows(k: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, k))


def _dist_chunk(x: torch.Tensor, xn: torch.Tensor, c: torch.Tensor, cn: torch.Tensor) -> torch.Tensor:
    """Squared distances (rows of x, centres c), clamped at 0 against cancellation."""
    d = torch.addmm(cn.unsqueeze(0), x, c.t(), beta=1, alpha=-2)
    return d.add_(xn.unsqueeze(1)).clamp_min_(0)


def _min_dist(x: torch.Tensor, xn: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared distance to the nearest centre, index of that centre) for every row of x."""
    n = x.shape[0]
    cn = _sq_norms(c)
    step = _chunk_rows(c.shape[0])
    mind = torch.empty(n, dtype=x.dtype, device=x.device)
    arg = torch.empty(n, dtype=torch.long, device=x.device)
    for s in range(0, n, step):
        e = min(n, s + step)
        d = _dist_chunk(x[s:e], xn[s:e], c, cn)
        arg[s:e] = d.argmin(dim=1)  # first minimum on ties
        mind[s:e] = d.gather(1, arg[s:e].unsqueeze(1)).squeeze(1)
    return mind, arg


def _dist_matrix(x: torch.Tensor, xn: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Full (N, k) squared-distance matrix, built chunk by chunk."""
    n = x.shape[0]
    cn = _sq_norms(c)
    step = _chunk_rows(c.shape[0])
    out = torch.empty(n, c.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, n, step):
        e = min(n, s + step)
        out[s:e] = _dist_chunk(x[s:e], xn[s:e], c, cn)
    return out


# ------------------------------------------------------------------------------------------------- init
def _init_random(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    idx = torch.randperm(x.shape[0], generator=g)[:k].to(x.device)
    return x.index_select(0, idx).clone()


def _init_plusplus(x: torch.Tensor, xn: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ (D^2 sampling, one trial per centre) without host synchronisation."""
    n = x.shape[0]
    dev = x.device
    u = torch.rand(k, generator=g, dtype=torch.float64).to(dev)  # all draws up front, on the CPU
    # integer weights: floor(d2 / max * 2^bits) with the total below 2^53, so the cumulative sum is exact
    # (order-independent, hence identical on every device) and the target is exact in float64
    scale = float(2 ** max(1, 52 - n.bit_length()))
    uniform = (u * n).floor().long().clamp_(max=n - 1)
    idx = torch.empty(k, dtype=torch.long, device=dev)
    idx[0] = uniform[0]
    d2 = None
    for j in range(1, k):
        new = idx[j - 1: j]
        c = x.index_select(0, new)  # (1, D)
        dj = (xn - 2 * (x @ c[0]) + xn.index_select(0, new)).clamp_min_(0)
        dj.index_fill_(0, new, 0)
        d2 = dj if d2 is None else torch.minimum(d2, dj)
        d64 = d2.to(torch.float64)
        top = d64.max()
        w = torch.where(top > 0, d64 / torch.where(top > 0, top, 1.0) * scale, 0.0).floor_().long()
        cdf = torch.cumsum(w, 0)
        total = cdf[-1]
        t = torch.minimum((u[j] * total.to(torch.float64)).floor().long(), (total - 1).clamp(min=0))
        pick = torch.searchsorted(cdf, t.view(1), right=True).clamp_(max=n - 1)
        idx[j: j + 1] = torch.where(total > 0, pick, uniform[j: j + 1])
    return x.index_select(0, idx).clone()


# ------------------------------------------------------------------------------------------------ Lloyd
def _relocate_empty(a: torch.Tensor, mind: torch.Tensor, k: int) -> torch.Tensor:
    """Give every empty cluster a point (see the module docstring); no host synchronisation. Needs k <= N."""
    n = a.shape[0]
    dev = a.device
    counts = torch.bincount(a, minlength=k)
    empty = counts == 0
    # keepers: the nearest point of every cluster (ties: lowest index)
    by_dist = torch.argsort(mind, stable=True)
    grouped = by_dist[torch.argsort(a[by_dist], stable=True)]
    lab = a[grouped]
    first = torch.ones(n, dtype=torch.bool, device=dev)
    first[1:] = lab[1:] != lab[:-1]
    keeper = torch.zeros(n, dtype=torch.bool, device=dev).scatter_(0, grouped, first)
    score = torch.where(keeper, torch.full_like(mind, -1.0), mind)
    cand = torch.argsort(score, descending=True, stable=True)  # farthest non-keepers first, lowest index on ties
    rank = (torch.cumsum(empty, 0) - 1).clamp_(min=0)
    slots = torch.arange(k, device=dev)
    target = torch.where(empty, cand[rank], n + slots)  # non-empty clusters write into private dummy slots
    ext = torch.cat([a, a.new_zeros(k)])
    ext.scatter_(0, target, slots)  # all targets distinct
    return ext[:n]


def _sums_index_add(x: torch.Tensor, a: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, a, x)


def _sums_onehot(x: torch.Tensor, a: torch.Tensor, k: int) -> torch.Tensor:
    onehot = torch.zeros(k, x.shape[0], dtype=x.dtype, device=x.device)
    onehot.scatter_(0, a.unsqueeze(0), 1.0)  # distinct positions: deterministic
    return onehot @ x


def _cluster_sums(x: torch.Tensor, a: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster sums of the rows of x: index_add_ on the CPU (sequential, deterministic); a one-hot matrix
    product elsewhere (CUDA's index_add_ uses float atomics, whose order varies between runs)."""
    return _sums_index_add(x, a, k) if x.device.type == "cpu" else _sums_onehot(x, a, k)


class _Run:
    """One class's k-means state."""

    def __init__(self, x: torch.Tensor, k: int, g: torch.Generator, init: str, tol: float):
        self.x = x
        self.k = k
        self.xn = _sq_norms(x)
        spread = ((x - x.mean(dim=0, keepdim=True)) ** 2).sum(dim=1).mean().sqrt()
        self.thresh = spread * tol
        self.c = _init_plusplus(x, self.xn, k, g) if init == "k-means++" else _init_random(x, k, g)
        self.a: torch.Tensor | None = None
        self.converged: torch.Tensor | None = None

    def step(self) -> None:
        mind, a = _min_dist(self.x, self.xn, self.c)
        a = _relocate_empty(a, mind, self.k)
        counts = torch.bincount(a, minlength=self.k)
        new_c = _cluster_sums(self.x, a, self.k) / counts.unsqueeze(1).to(self.x.dtype)
        shift = (new_c - self.c).norm(dim=1).max()
        self.c, self.a = new_c, a
        self.converged = shift <= self.thresh


def _flags(ts: list[torch.Tensor]) -> list[bool]:
    """One host synchronisation per device for a list of 0-d bool tensors."""
    out: list[bool | None] = [None] * len(ts)
    by_dev: dict[torch.device, list[int]] = {}
    for i, t in enumerate(ts):
        by_dev.setdefault(t.device, []).append(i)
    for idx in by_dev.values():
        vals = torch.stack([ts[i] for i in idx]).tolist()
        for i, v in zip(idx, vals):
            out[i] = bool(v)
    return out  # type: ignore[return-value]


def kmeans_batched(xs: list[torch.Tensor], k: int, generators: list[torch.Generator], iters: int = 100,
                   tol: float = 1e-4, init: str = "k-means++") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """k-means on several data sets (e.g. one per class) in one Lloyd loop.

    Returns ``[(centroids (k, D), assignment (N_i,) long), ...]``, bitwise identical to
    ``[kmeans(x, k, g, iters, tol, init) for x, g in zip(xs, generators)]`` (the generators are consumed in
    the same order). The host synchronises once per iteration for all classes, instead of once per class.
    """
    if not isinstance(xs, (list, tuple)) or not isinstance(generators, (list, tuple)):
        raise DdflowError("kmeans_batched: xs and generators must be lists")
    if len(xs) != len(generators):
        raise DdflowError(f"kmeans_batched: got {len(xs)} data sets but {len(generators)} generators")
    _check_common(iters, tol, init)
    checked = []
    for i, (x, g) in enumerate(zip(xs, generators)):
        xc = _check_x(x, f"xs[{i}]")
        _check_k(k, xc.shape[0], f"xs[{i}]")
        checked.append((xc, _check_generator(g)))
    runs = [_Run(xc, k, g, init, float(tol)) for xc, g in checked]
    active = list(range(len(runs)))
    for _ in range(iters):
        for i in active:
            runs[i].step()
        done = _flags([runs[i].converged for i in active])  # type: ignore[misc]
        active = [i for i, d in zip(active, done) if not d]
        if not active:
            break
    return [(r.c, r.a) for r in runs]  # type: ignore[misc]


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 100, tol: float = 1e-4,
           init: str = "k-means++") -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of the rows of ``x`` (N, D) on x's device.

    Returns ``(centroids (k, D), assignment (N,) long)``; centroids are float32 (float64 for float64 input)
    and every cluster is non-empty. ``k`` must be <= N (else :class:`DdflowError`). ``init`` is
    ``'k-means++'`` or ``'random'``; every random draw comes from ``generator`` (a CPU generator), so the
    result is deterministic given its state. Stops when the largest centre shift is <= ``tol`` times the
    data scale (RMS distance to the mean) or after ``iters`` Lloyd iterations.
    """
    return kmeans_batched([x], k, [generator], iters=iters, tol=tol, init=init)[0]


# ------------------------------------------------------------------------------------------- selection
def nearest_to_centroids(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """For every centroid (in order) the index of its nearest sample in ``x``, all indices distinct.

    If a centroid's nearest sample was already taken by an earlier centroid, it takes its nearest sample not
    taken yet. Ties in distance go to the lowest sample index. Returns a (k,) long tensor on x's device.
    """
    xc = _check_x(x, "x")
    cc = _check_x(centroids, "centroids")
    if cc.shape[1] != xc.shape[1]:
        raise DdflowError(f"nearest_to_centroids: x has D={xc.shape[1]} features but centroids have "
                          f"{cc.shape[1]}")
    k, n = cc.shape[0], xc.shape[0]
    if k > n:
        raise DdflowError(f"nearest_to_centroids: {k} distinct samples asked for but x has N={n}")
    dt = _compute_dtype(xc, cc)
    xc = xc.to(dt)
    cc = cc.to(device=xc.device, dtype=dt)
    d = _dist_matrix(xc, _sq_norms(xc), cc)  # (N, k)
    nearest = d.argmin(dim=0)
    if torch.unique(nearest).numel() == k:
        return nearest  # no conflicts: the greedy rule gives the plain argmin
    out = torch.empty(k, dtype=torch.long, device=xc.device)
    used = torch.zeros(n, dtype=torch.bool, device=xc.device)
    inf = torch.tensor(float("inf"), dtype=dt, device=xc.device)
    for j in range(k):  # greedy in centroid order, without host synchronisation
        pick = torch.where(used, inf, d[:, j]).argmin().view(1)
        out[j: j + 1] = pick
        used.index_fill_(0, pick, True)
    return out


def representative_indices(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 100) -> torch.Tensor:
    """DREAM's selection: indices of the k samples of ``x`` nearest to its k k-means centroids (distinct).

    If ``k >= N`` every index is returned (``arange(N)``) and the generator is not used.
    """
    return representative_indices_batched([x], k, [generator], iters=iters)[0]


def representative_indices_batched(xs: list[torch.Tensor], k: int, generators: list[torch.Generator],
                                   iters: int = 100) -> list[torch.Tensor]:
    """:func:`representative_indices` for several classes at once (identical results, one Lloyd loop)."""
    if not isinstance(xs, (list, tuple)) or not isinstance(generators, (list, tuple)):
        raise DdflowError("representative_indices_batched: xs and generators must be lists")
    if len(xs) != len(generators):
        raise DdflowError(f"representative_indices_batched: got {len(xs)} data sets but "
                          f"{len(generators)} generators")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DdflowError(f"representative_indices: k must be an int >= 1, got {k!r}")
    out: list[torch.Tensor | None] = [None] * len(xs)
    todo = []
    for i, x in enumerate(xs):
        xc = _check_x(x, f"xs[{i}]")
        if k >= xc.shape[0]:
            out[i] = torch.arange(xc.shape[0], device=xc.device)
        else:
            todo.append(i)
    if todo:
        res = kmeans_batched([xs[i] for i in todo], k, [generators[i] for i in todo], iters=iters)
        for i, (c, _) in zip(todo, res):
            out[i] = nearest_to_centroids(xs[i], c)
    return out  # type: ignore[return-value]
