"""Preprocessing spaces (ddflow.data.spaces): the ZCA a distillation used is re-applied to the test split at evaluation
(ddflow.records.distilled: DistilledSet.real_in_space)."""
import torch

from ddflow.data import RealData, get_info, normalize
from ddflow.data.spaces import preprocess
from ddflow.records import DistilledSet


def _data():
    info = get_info("mnist")
    g = torch.Generator().manual_seed(0)
    px = torch.rand(300, 1, 6, 6, generator=g)
    y = torch.arange(300) % 10
    return RealData(normalize(px[:200], info), y[:200], normalize(px[200:], info), y[200:], info), px


def _record(images, **kw) -> DistilledSet:
    info = get_info("mnist")
    return DistilledSet(images=images, labels=torch.arange(len(images)) % 10, method="dm", dataset="mnist", ipc=1,
                        seed=0, mean=info.mean, std=info.std, **kw)


def test_raw_is_identity():
    data, _ = _data()
    out, zca = preprocess(data, "raw")
    assert out is data and zca is None


def test_zca_space_round_trip_and_test_split():
    data, px = _data()
    for kind in ("kornia", "frepo"):
        white, zca = preprocess(data, kind)
        assert torch.allclose(white.x_test, zca.apply(px[200:]), atol=1e-4)
        record = _record(white.x_train[:5], space="zca", zca=zca.state_dict())
        again = record.real_in_space(data)
        assert torch.allclose(again.x_test, white.x_test, atol=1e-5)
        assert torch.allclose(record.to_pixels(), px[:5], atol=1e-3)
    assert _record(data.x_train[:5], space="normalized").real_in_space(data) is data
