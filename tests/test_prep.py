"""Preprocessing spaces: the ZCA a distillation used is re-applied to the test split at evaluation."""
import torch

from ddflow.data import RealData, get_info, normalize
from ddflow.prep import for_distilled, preprocess, to_pixels


def _data():
    info = get_info("mnist")
    g = torch.Generator().manual_seed(0)
    px = torch.rand(300, 1, 6, 6, generator=g)
    y = torch.arange(300) % 10
    return RealData(normalize(px[:200], info), y[:200], normalize(px[200:], info), y[200:], info), px


def test_raw_is_identity():
    data, _ = _data()
    out, zca = preprocess(data, "raw")
    assert out is data and zca is None


def test_zca_space_round_trip_and_test_split():
    data, px = _data()
    for kind in ("kornia", "frepo"):
        white, zca = preprocess(data, kind)
        assert torch.allclose(white.x_test, zca.apply(px[200:]), atol=1e-4)
        record = {"images": white.x_train[:5], "space": "zca", "zca": zca.state_dict()}
        again = for_distilled(data, record)
        assert torch.allclose(again.x_test, white.x_test, atol=1e-5)
        assert torch.allclose(to_pixels(record), px[:5], atol=1e-3)
    assert for_distilled(data, {"space": "normalized"}) is data
