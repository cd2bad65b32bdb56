"""ISA's analyses on small data: recall, the information test, Fig. 5 and Fig. 6 (in process, no Snakemake)."""
import copy
import json

import pytest
import torch

from ddflow.nets import build_net
from ddflow.ops import krr as K
from ddflow.records import DistilledSet, load_distilled
from ddflow.report import isa as A


def test_recall_counts_real_samples_inside_the_knn_balls():
    syn = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    real = torch.tensor([[0.5, 0.0], [0.1, 0.1], [5.0, 5.0], [30.0, 30.0]])
    # k = 1: radii 1, 1, 1 and ~12.7 (distance to the nearest other synthetic sample)
    assert A.recall(real, syn, k=1) == 0.75
    assert A.recall(real, syn, k=5) == 0.75                 # k capped at 3: radius 14.1 around (0, 0) reaches (5, 5)
    assert A.recall(real[:1], syn[:2], k=1) == 1.0


def _distilled(mnist5k, method, tmp_path, ipc=2):
    idx = torch.cat([i[:ipc] for i in mnist5k.indices_per_class()])
    d = DistilledSet(images=mnist5k.x_train[idx].clone(), labels=K.init_learned_labels(mnist5k.y_train[idx], 10),
                     method=method, dataset="mnist5k", ipc=ipc, seed=0, mean=mnist5k.info.mean,
                     std=mnist5k.info.std, space="normalized")
    path = tmp_path / f"{method}.pt"
    d.save(path)
    return path


@pytest.fixture()
def featnet(mnist5k):
    return build_net("ConvNetW32", 1, 10, 28, torch.Generator().manual_seed(0)).eval()


def test_information_test_and_tables(mnist5k, featnet, tmp_path):
    paths = [_distilled(mnist5k, m, tmp_path) for m in ("frepo", "isa")]
    df = A.information_table(paths, mnist5k, featnet, tmp_path / "info", batch=200, batches=1)
    assert list(df.method) == ["frepo", "isa"] and (df.easy_from_hard > 0).all() and (df.hard_from_easy > 0).all()
    # P6's finding holds for real features: the hard samples carry the easy ones, not the reverse
    assert (df.easy_from_hard < df.hard_from_easy).all(), df
    r = A.recall_table(paths, mnist5k, featnet, tmp_path / "recall", k=5, n_real=300)
    assert ((r.recall > 0) & (r.recall <= 1)).all() and (tmp_path / "recall.md").exists()
    A.fig6(paths, mnist5k, featnet, tmp_path / "fig6.png")
    assert (tmp_path / "fig6.png").stat().st_size > 1000


def test_fig5_from_cells(tmp_path):
    cells = []
    for i, m in enumerate(["frepo"] + [f"frepo-drop-{w}{p}" for w in ("hard", "easy") for p in (10, 20, 30)]):
        p = tmp_path / f"{m}.json"
        p.write_text(json.dumps({"method": m, "dataset": "mnist5k", "ipc": 10, "accuracies": [50.0 + i, 52.0]}))
        cells.append(p)
    A.fig5(cells, "mnist5k", 10, tmp_path / "fig5.png")
    assert (tmp_path / "fig5.png").stat().st_size > 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_analyses_run_on_cuda_with_distilled_sets_loaded_on_the_cpu(mnist5k, mnist5k_path, featnet, tmp_path):
    """The CLI's case: real data and feature net on the device, distilled sets as loaded (CPU); the same numbers as
    on the CPU up to float error."""
    from ddflow.data import load_real

    cuda = torch.device("cuda")
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        data = load_real(mnist5k_path, mnist5k.info, cuda)
        net = copy.deepcopy(featnet).to(cuda)
        paths = [_distilled(mnist5k, m, tmp_path) for m in ("frepo", "isa")]
        gpu = A.information_table(paths, data, net, tmp_path / "info_gpu", batch=200, batches=1)
        cpu = A.information_table(paths, mnist5k, featnet, tmp_path / "info_cpu", batch=200, batches=1)
        for key in ("easy_from_hard", "hard_from_easy"):
            assert gpu[key].tolist() == pytest.approx(cpu[key].tolist(), rel=1e-3)
        r_gpu = A.recall_table(paths, data, net, tmp_path / "recall_gpu", k=5, n_real=300)
        r_cpu = A.recall_table(paths, mnist5k, featnet, tmp_path / "recall_cpu", k=5, n_real=300)
        assert r_gpu.recall.tolist() == pytest.approx(r_cpu.recall.tolist(), abs=0.01)
        A.fig6(paths, data, net, tmp_path / "fig6.png")
        assert (tmp_path / "fig6.png").stat().st_size > 1000
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_information_test_draws_the_same_real_batches_for_every_method(mnist5k, featnet, tmp_path, monkeypatch):
    drawn: dict[str, list[list[int]]] = {}
    real_randperm = torch.randperm

    def spy(n, *args, **kwargs):
        out = real_randperm(n, *args, **kwargs)
        drawn.setdefault(current, []).append(out[:200].tolist())
        return out

    monkeypatch.setattr(A.torch, "randperm", spy)
    for current in ("frepo", "isa"):
        A.information_test(load_distilled(_distilled(mnist5k, current, tmp_path)), mnist5k, featnet, batch=200,
                           batches=2)
    assert len(drawn["frepo"]) == 2 and drawn["frepo"] == drawn["isa"]
