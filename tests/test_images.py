"""Real data kept as uint8 (ddflow.data.images) and prepared files memory-mapped (ddflow.data.npzmap): every batch
equals normalising the whole split at once, and a memory-mapped read equals a full read."""
import zipfile

import numpy as np
import pytest
import torch

from ddflow.data import get_info
from ddflow.data.folders import read_imagenet_downsampled
from ddflow.data.images import Images
from ddflow.data.npzmap import NpzStreamWriter, read_npz
from ddflow.data.real import load_real, normalize, to_float
from ddflow.data.sources import load_arrays, prepare
from ddflow.data.zca import fit_zca

INFO = get_info("cifar10")


@pytest.fixture
def uint8_images():
    return np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)


def test_batches_equal_the_whole_split_normalised_at_once(uint8_images):
    whole = normalize(to_float(torch.from_numpy(uint8_images)), INFO)   # the pre-uint8 load_real
    x = Images(uint8_images, INFO)
    idx = torch.tensor([[4, 0, 29], [7, 7, 1]])
    assert x.shape == whole.shape and len(x) == 30 and x.device == torch.device("cpu")
    assert torch.equal(x[:], whole) and torch.equal(x[3:9], whole[3:9]) and torch.equal(x[5], whole[5])
    assert torch.equal(x[idx], whole[idx]) and x[idx].shape == (2, 3, 3, 32, 32)
    assert torch.equal(x[np.array([2, 2, 0])], whole[[2, 2, 0]]) and torch.equal(x[4, 1], whole[4, 1])
    stored = Images(torch.from_numpy(uint8_images), INFO)   # a tensor store answers the same
    assert torch.equal(stored[idx], whole[idx])


def test_zca_space_applies_the_zca_to_the_pixels_of_each_batch(uint8_images):
    pixels = to_float(torch.from_numpy(uint8_images))
    zca = fit_zca(pixels, "kornia", 0.1)
    x = Images(uint8_images, INFO).whitened(zca)
    assert x.space == "zca" and torch.equal(x[[3, 1]], zca.apply(pixels[[3, 1]]))
    assert torch.equal(x.pixels()[:], pixels)
    # fitting on the lazy pixels gives the same ZCA as fitting on the float tensor
    assert torch.equal(fit_zca(Images(uint8_images, INFO).pixels(), "kornia", 0.1).transform, zca.transform)


def test_bad_stores_are_refused():
    with pytest.raises(Exception, match=r"\(N, H, W, 3\) uint8"):
        Images(np.zeros((2, 32, 32, 3), np.float32), INFO)


def test_uncompressed_members_are_memory_mapped_and_equal_a_full_read(tmp_path, uint8_images):
    path = tmp_path / "d.npz"
    with NpzStreamWriter(path) as w:
        w.add_chunks("x", uint8_images.shape, np.uint8, [uint8_images[:7], uint8_images[7:]])
        w.add("y", np.arange(30))
    mapped = read_npz(path, mmap=True)
    assert isinstance(mapped["x"], np.memmap) and np.array_equal(mapped["x"], uint8_images)
    with np.load(path) as f:   # numpy reads the streamed file as an ordinary npz
        assert np.array_equal(f["x"], uint8_images) and np.array_equal(f["y"], np.arange(30))
    np.savez_compressed(tmp_path / "c.npz", x=uint8_images)   # compressed members fall back to a full read
    full = read_npz(tmp_path / "c.npz", mmap=True)["x"]
    assert not isinstance(full, np.memmap) and np.array_equal(full, uint8_images)


def test_a_streamed_member_with_the_wrong_row_count_is_an_error_and_leaves_no_file(tmp_path, uint8_images):
    with pytest.raises(ValueError, match="wrote 30 rows, expected 31"):
        with NpzStreamWriter(tmp_path / "d.npz") as w:
            w.add_chunks("x", (31, 32, 32, 3), np.uint8, [uint8_images])
    assert not (tmp_path / "d.npz").exists()


def _downsampled_imagenet(folder, rng):
    folder.mkdir()
    for k in (1, 2):
        np.savez(folder / f"train_data_batch_{k}.npz", data=rng.integers(0, 256, (6, 12288), dtype=np.uint8),
                 labels=rng.integers(1, 1001, 6))
    np.savez(folder / "val_data.npz", data=rng.integers(0, 256, (4, 12288), dtype=np.uint8),
             labels=rng.integers(1, 1001, 4))


def test_imagenet64_is_prepared_batch_by_batch_into_a_memory_mappable_file(tmp_path):
    _downsampled_imagenet(tmp_path / "src", np.random.default_rng(1))
    info = get_info("imagenet64")
    out = prepare("imagenet64", tmp_path / "imagenet64.npz", root=tmp_path / "src", download=False)
    expected = read_imagenet_downsampled(tmp_path / "src", info)   # the in-memory reader
    with zipfile.ZipFile(out) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    got = load_arrays(out, mmap=True)
    for k, v in expected.items():
        assert np.array_equal(got[k], v), k
    data = load_real(out, info)
    assert isinstance(data.x_train, Images) and not data.x_train.store.flags.owndata   # a view of the file's map
    assert torch.equal(data.x_test[:], normalize(to_float(torch.from_numpy(expected["x_test"])), info))
