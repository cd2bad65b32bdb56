from __future__ import annotations

import pytest
import torch

from ddflow.errors import DdflowError
from ddflow.ops import kmeans as km
from ddflow.ops.kmeans import kmeans, kmeans_batched, nearest_to_centroids, representative_indices


@pytest.fixture(autouse=True)
def _one_thread():
    """Small problems: one thread is fastest and does not fight other jobs for the cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(seed: int = 0, n_per: int = 40, k: int = 5, dim: int = 16, sep: float = 10.0):
    """k well-separated Gaussian blobs (unit noise, means ~sep apart), labels interleaved."""
    g = gen(seed)
    means = torch.randn(k, dim, generator=g) * sep
    labels = torch.arange(n_per * k) % k
    x = means[labels] + torch.randn(n_per * k, dim, generator=g)
    return x, labels, means


def inertia(x, c, a):
    return ((x - c[a]) ** 2).sum().item()


def assert_recovers(x, labels, means, c, a, k):
    # purity 1.0 both ways: every true blob lies in one cluster and every cluster holds one blob
    for b in range(k):
        assert torch.unique(a[labels == b]).numel() == 1
    mapping = torch.stack([a[labels == b][0] for b in range(k)])
    assert torch.unique(mapping).numel() == k
    # centroid of the cluster of blob b is close to the blob's true mean (40 points, unit noise in 16-D)
    err = (c[mapping] - means).norm(dim=1)
    assert err.max().item() < 1.5
    # and equals the sample mean of its members
    for j in range(k):
        torch.testing.assert_close(c[j], x[a == j].mean(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_kmeanspp_finds_planted_clusters(seed):
    x, labels, means = blobs(seed)
    c, a = kmeans(x, 5, gen(100 + seed))
    assert c.shape == (5, 16) and c.dtype == torch.float32
    assert a.shape == (200,) and a.dtype == torch.long
    assert_recovers(x, labels, means, c, a, 5)


def test_random_init_finds_planted_clusters_best_of_restarts():
    # random init can fall into a local minimum; the best of a few restarts (by inertia) must be the truth
    x, labels, means = blobs(7)
    runs = [kmeans(x, 5, gen(s), init="random") for s in range(8)]
    c, a = min(runs, key=lambda r: inertia(x, *r))
    assert_recovers(x, labels, means, c, a, 5)
    # the local minima are real local minima: never better than the truth
    truth = inertia(x, torch.stack([x[labels == b].mean(0) for b in range(5)]), labels)
    assert all(inertia(x, *r) >= truth - 1e-3 for r in runs)


def test_random_init_starts_from_distinct_samples():
    x = torch.randn(50, 3, generator=gen(0))
    c = km._init_random(x, 10, gen(1))
    d = torch.cdist(c, x)
    assert (d.min(dim=1).values == 0).all()  # every initial centre is a sample
    assert torch.unique(d.argmin(dim=1)).numel() == 10  # distinct samples


def test_kmeanspp_init_prefers_far_points():
    # 99 points at the origin and one far away: D^2 sampling must pick the far one as 2nd centre whenever
    # the first centre is at the origin (its weight is everything)
    x = torch.zeros(100, 4)
    x[37] = 100.0
    for s in range(10):
        c = km._init_plusplus(x, km._sq_norms(x), 2, gen(s))
        assert sorted(c[:, 0].tolist()) == [0.0, 100.0]


def greedy_reference(x, c):
    d = torch.cdist(c.double(), x.double())  # (k, N) brute force
    used, out = set(), []
    for j in range(c.shape[0]):
        order = torch.argsort(d[j], stable=True).tolist()
        pick = next(i for i in order if i not in used)
        used.add(pick)
        out.append(pick)
    return out


def test_nearest_to_centroids_matches_bruteforce():
    x = torch.randn(300, 8, generator=gen(0))
    # centroids near 20 distinct samples: the plain cdist argmin is distinct and must be returned
    c = x[torch.randperm(300, generator=gen(1))[:20]] + 0.01 * torch.randn(20, 8, generator=gen(2))
    want = torch.cdist(c.double(), x.double()).argmin(dim=1)
    assert torch.unique(want).numel() == 20
    assert torch.equal(nearest_to_centroids(x, c), want)
    # random centroids: some share their nearest sample; the greedy rule (in centroid order) decides
    c = torch.randn(40, 8, generator=gen(3)) * 0.5
    assert torch.unique(torch.cdist(c, x).argmin(dim=1)).numel() < 40  # conflicts do occur
    got = nearest_to_centroids(x, c)
    assert torch.unique(got).numel() == 40
    assert got.tolist() == greedy_reference(x, c)


def test_nearest_to_centroids_distinct_when_shared():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 3.0]])
    # centroids 0 and 1 both have sample 0 as nearest; centroid 1 is nearer to sample 1 than sample 3
    c = torch.tensor([[0.1, 0.0], [0.2, 0.0], [9.0, 0.0]])
    assert nearest_to_centroids(x, c).tolist() == [0, 1, 2]
    # order matters: the earlier centroid wins the shared sample
    c2 = torch.tensor([[0.2, 0.0], [0.1, 0.0], [9.0, 0.0]])
    assert nearest_to_centroids(x, c2).tolist() == [0, 1, 2]
    c3 = torch.tensor([[0.0, 0.1], [0.0, 0.2], [0.0, 0.3]])  # all three prefer sample 0
    assert nearest_to_centroids(x, c3).tolist() == [0, 1, 3]
    c4 = torch.tensor([[0.0, 0.3], [0.0, 0.2], [0.0, 0.1], [0.0, 0.0]])  # all four: 0, then 1, 3, 2
    assert nearest_to_centroids(x, c4).tolist() == [0, 1, 3, 2]


def test_nearest_to_centroids_rejects_bad_shapes():
    with pytest.raises(DdflowError):
        nearest_to_centroids(torch.randn(5, 3), torch.randn(2, 4))
    with pytest.raises(DdflowError):
        nearest_to_centroids(torch.randn(2, 3), torch.randn(3, 3))


def test_determinism_same_seed_identical_other_seed_differs():
    x = torch.randn(400, 12, generator=gen(0))  # no structure: results depend on the initialisation
    for init in ("k-means++", "random"):
        c1, a1 = kmeans(x, 8, gen(5), init=init)
        c2, a2 = kmeans(x, 8, gen(5), init=init)
        assert torch.equal(c1, c2) and torch.equal(a1, a2)
        c3, a3 = kmeans(x, 8, gen(6), init=init)
        assert not torch.equal(a1, a3)
    i1 = km._init_plusplus(x, km._sq_norms(x), 8, gen(5))
    assert torch.equal(i1, km._init_plusplus(x, km._sq_norms(x), 8, gen(5)))
    assert not torch.equal(i1, km._init_plusplus(x, km._sq_norms(x), 8, gen(6)))
    assert not torch.equal(km._init_random(x, 8, gen(5)), km._init_random(x, 8, gen(6)))


def test_generator_state_advances():
    x = torch.randn(100, 4, generator=gen(0))
    g = gen(3)
    c1, _ = kmeans(x, 6, g)
    c2, _ = kmeans(x, 6, g)  # second call continues the stream
    c3, _ = kmeans(x, 6, gen(3))
    assert torch.equal(c1, c3)
    assert not torch.equal(c1, c2)


def test_representative_indices():
    x, _, _ = blobs(3)
    idx = representative_indices(x, 17, gen(0))
    assert idx.shape == (17,) and idx.dtype == torch.long
    assert torch.unique(idx).numel() == 17
    assert idx.min().item() >= 0 and idx.max().item() < x.shape[0]
    c, _ = kmeans(x, 17, gen(0))
    assert torch.equal(idx, nearest_to_centroids(x, c))
    assert torch.equal(representative_indices(x, 200, gen(0)), torch.arange(200))
    assert torch.equal(representative_indices(x, 500, gen(0)), torch.arange(200))


def test_k_larger_than_n_raises():
    x = torch.randn(4, 3)
    with pytest.raises(DdflowError):
        kmeans(x, 5, gen(0))
    with pytest.raises(DdflowError):
        kmeans(x, 0, gen(0))
    with pytest.raises(DdflowError):
        kmeans(x, 2, gen(0), init="bogus")
    with pytest.raises(DdflowError):
        kmeans(torch.randn(4), 2, gen(0))
    with pytest.raises(DdflowError):
        kmeans(torch.tensor([[0.0], [float("nan")]]), 1, gen(0))


def test_k_equals_n_every_point_its_own_cluster():
    x = torch.randn(7, 3, generator=gen(0))
    c, a = kmeans(x, 7, gen(1))
    assert torch.unique(a).numel() == 7
    torch.testing.assert_close(c[a], x)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("init", ["random", "k-means++"])
def test_empty_clusters_are_reseeded(seed, init):
    # three distinct points, ten copies each, five clusters: an initialisation on duplicates is unavoidable
    # for 'random' (pigeonhole), so some clusters start empty; all must end non-empty, finite, on the data
    pts = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    x = pts.repeat(10, 1)
    c, a = kmeans(x, 5, gen(seed), init=init)
    assert torch.isfinite(c).all()
    assert (torch.bincount(a, minlength=5) > 0).all()
    assert (torch.cdist(c, pts).min(dim=1).values < 1e-6).all()
    for j in range(5):
        torch.testing.assert_close(c[j], x[a == j].mean(0))


def test_relocation_rule():
    # clusters 1 and 3 empty; keepers (nearest of each cluster) are points 0 (cluster 0) and 4 (cluster 2);
    # the rest ranked farthest first: 2 (9.0), then 1 and 5 tie at 4.0 -> lower index 1 first
    a = torch.tensor([0, 0, 0, 2, 2, 2])
    mind = torch.tensor([0.5, 4.0, 9.0, 1.0, 0.1, 4.0])
    assert km._relocate_empty(a, mind, 4).tolist() == [0, 3, 1, 2, 2, 2]
    # no empty cluster: unchanged
    a2 = torch.tensor([0, 1, 2, 3, 1])
    assert torch.equal(km._relocate_empty(a2, torch.rand(5), 4), a2)
    # a donor cluster is never emptied: both points of cluster 0 far away, but one is its keeper
    a3 = torch.tensor([0, 0, 1])
    assert km._relocate_empty(a3, torch.tensor([9.0, 8.0, 7.0]), 3).tolist() == [2, 0, 1]


def test_cluster_sum_paths_agree():
    # the CUDA path (one-hot product) and the CPU path (index_add_) compute the same sums
    x = torch.randn(500, 7, generator=gen(0))
    a = torch.randint(0, 9, (500,), generator=gen(1))
    torch.testing.assert_close(km._sums_onehot(x, a, 9), km._sums_index_add(x, a, 9))
    want = torch.stack([x[a == j].sum(0) for j in range(9)])
    torch.testing.assert_close(km._sums_index_add(x, a, 9), want)


def test_float64_input_stays_float64():
    x = torch.randn(60, 3, generator=gen(0), dtype=torch.float64)
    c, a = kmeans(x, 4, gen(0))
    assert c.dtype == torch.float64


def test_chunked_distances_match_unchunked(monkeypatch):
    x = torch.randn(257, 5, generator=gen(0))
    c0, a0 = kmeans(x, 6, gen(1))
    monkeypatch.setattr(km, "_CHUNK_ELEMENTS", 6 * 10)  # 10 rows per chunk
    c1, a1 = kmeans(x, 6, gen(1))
    assert torch.equal(a0, a1)
    torch.testing.assert_close(c0, c1)
    assert torch.equal(nearest_to_centroids(x, c0), torch.cdist(c0.double(), x.double()).argmin(dim=1))


def test_kmeans_batched_equals_per_class():
    xs = [blobs(s, n_per=20 + 7 * s)[0] for s in range(4)] + [torch.randn(90, 16, generator=gen(9))]
    for init in ("k-means++", "random"):
        per = [kmeans(x, 6, gen(50 + i), init=init) for i, x in enumerate(xs)]
        bat = kmeans_batched(xs, 6, [gen(50 + i) for i in range(len(xs))], init=init)
        assert len(bat) == len(xs)
        for (c1, a1), (c2, a2) in zip(per, bat):
            assert torch.equal(c1, c2) and torch.equal(a1, a2)
    # one shared generator is consumed class after class, as by sequential calls
    g1, g2 = gen(4), gen(4)
    per = [kmeans(x, 3, g1) for x in xs]
    bat = kmeans_batched(xs, 3, [g2] * len(xs))
    assert all(torch.equal(p[0], b[0]) for p, b in zip(per, bat))
    rep = km.representative_indices_batched(xs + [xs[0][:4]], 6, [gen(i) for i in range(len(xs) + 1)])
    for i, x in enumerate(xs):
        assert torch.equal(rep[i], representative_indices(x, 6, gen(i)))
    assert torch.equal(rep[-1], torch.arange(4))
    with pytest.raises(DdflowError):
        kmeans_batched(xs, 3, [gen(0)])
    with pytest.raises(DdflowError):
        kmeans_batched([xs[0], torch.randn(2, 16)], 3, [gen(0), gen(1)])


def test_iters_limit_and_tolerance():
    x = torch.randn(300, 6, generator=gen(0))
    c1, a1 = kmeans(x, 10, gen(2), iters=1)
    c100, a100 = kmeans(x, 10, gen(2), iters=100, tol=0.0)
    assert inertia(x, c100, a100) < inertia(x, c1, a1)
    # at a fixed point (tol=0 run to the end) another Lloyd step changes nothing
    mind, a = km._min_dist(x, km._sq_norms(x), c100)
    assert torch.equal(a, a100)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        x, labels, means = blobs(0)
        for init in ("k-means++", "random"):
            c_cpu, a_cpu = kmeans(x, 5, gen(11), init=init)
            c_gpu, a_gpu = kmeans(x.cuda(), 5, gen(11), init=init)
            assert c_gpu.device.type == "cuda" and a_gpu.device.type == "cuda"
            assert torch.equal(a_cpu, a_gpu.cpu())
            torch.testing.assert_close(c_cpu, c_gpu.cpu(), rtol=1e-4, atol=1e-4)
            # deterministic on the GPU too
            c_gpu2, a_gpu2 = kmeans(x.cuda(), 5, gen(11), init=init)
            assert torch.equal(c_gpu, c_gpu2) and torch.equal(a_gpu, a_gpu2)
        r_cpu = representative_indices(x, 9, gen(3))
        r_gpu = representative_indices(x.cuda(), 9, gen(3))
        assert torch.equal(r_cpu, r_gpu.cpu())
        xs = [blobs(s)[0].cuda() for s in range(3)]
        per = [kmeans(xx, 5, gen(i)) for i, xx in enumerate(xs)]
        bat = kmeans_batched(xs, 5, [gen(i) for i in range(3)])
        assert all(torch.equal(p[0], b[0]) and torch.equal(p[1], b[1]) for p, b in zip(per, bat))
        # nearest_to_centroids with conflicts on the GPU
        xx = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 3.0]])
        cc = torch.tensor([[0.0, 0.3], [0.0, 0.2], [0.0, 0.1], [0.0, 0.0]])
        assert nearest_to_centroids(xx.cuda(), cc.cuda()).tolist() == [0, 1, 3, 2]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
