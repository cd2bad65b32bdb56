"""Tests for ddflow.augment: DSA (differentiable Siamese augmentation) and DC's per-image augmentation."""
from __future__ import annotations

import math

import pytest
import torch

from ddflow.augment import DC_TRANSFORMS, DSA, DSA_FAMILIES, DCAugment, DSAParams, make_augment
from ddflow.errors import DdflowError

FULL = "color_crop_cutout_flip_scale_rotate"


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def images(n: int = 8, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(1000 + seed))


def draws_equal(a: dict, b: dict) -> bool:
    if a["n"] != b["n"] or tuple(a["chunks"]) != tuple(b["chunks"]):
        return False
    return all(torch.equal(a[k], b[k]) for k in a if k not in ("n", "chunks"))


# ---------------------------------------------------------------------------------------------
# DSA: Siamese sharing, determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(DSA_FAMILIES) + [FULL])
def test_siamese_dsa_applies_identical_transforms(strategy):
    dsa = DSA(strategy)
    a, b = images(2, seed=1)[0], images(2, seed=1)[1]
    others = images(4, seed=2)
    real = torch.cat([a[None], b[None], others])  # 6 images
    syn = torch.stack([a, b])  # 2 images
    changed = False
    for seed in range(12):
        draw = dsa.siamese(gen(seed))
        assert draw["n"] == 1
        out_real, out_syn = dsa.apply(real, draw), dsa.apply(syn, draw)
        assert out_real.shape == real.shape and out_syn.shape == syn.shape
        # identical input images -> identical outputs, across the two batches
        assert torch.allclose(out_real[:2], out_syn, atol=1e-6, rtol=0)
        # within one batch every image gets the same transform
        copies = a.expand(5, -1, -1, -1).clone()
        out_copies = dsa.apply(copies, draw)
        assert torch.allclose(out_copies, out_copies[:1].expand_as(out_copies), atol=1e-6, rtol=0)
        assert torch.allclose(out_copies[0], out_real[0], atol=1e-6, rtol=0)
        changed |= not torch.allclose(out_real, real)
    assert changed, "the augmentation never changed the images"


@pytest.mark.parametrize("strategy", ["rotate", "crop", FULL])
def test_same_seed_same_output_different_seed_differs(strategy):
    dsa = DSA(strategy)
    x = images()
    out0 = dsa(x, gen(0))
    assert torch.equal(out0, dsa(x, gen(0)))
    assert any(not torch.equal(out0, dsa(x, gen(s))) for s in range(1, 4))


def test_random_numbers_come_from_the_given_generator_only():
    dsa = DSA(FULL)
    torch.manual_seed(0)
    d1 = dsa.sample(8, gen(5))
    torch.manual_seed(123)  # the global RNG must not matter
    d2 = dsa.sample(8, gen(5))
    assert draws_equal(d1, d2)


# ---------------------------------------------------------------------------------------------
# DSA: per-family behaviour against hand expectations
# ---------------------------------------------------------------------------------------------


def test_flip_with_prob_one_equals_width_flip_and_prob_zero_is_identity():
    x = images()
    assert torch.equal(DSA("flip", DSAParams(prob_flip=1.0))(x, gen(0)), torch.flip(x, dims=[3]))
    assert torch.equal(DSA("flip", DSAParams(prob_flip=0.0))(x, gen(0)), x)


def test_flip_default_flips_each_sample_independently():
    dsa = DSA("flip")
    x = images(64)
    draw = dsa.sample(64, gen(3))
    out = dsa.apply(x, draw)
    flipped = draw["flip"]
    assert 10 < int(flipped.sum()) < 54  # per sample, probability 0.5
    assert torch.equal(out[flipped], x[flipped].flip(3))
    assert torch.equal(out[~flipped], x[~flipped])


def _shift_by_hand(img: torch.Tensor, dh: int, dw: int) -> torch.Tensor:
    """out[i, j] = img[i + dh, j + dw], zero outside, by explicit loops."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dh < h and 0 <= j + dw < w:
                out[:, i, j] = img[:, i + dh, j + dw]
    return out


def test_crop_shifts_by_drawn_integer_offsets_with_zero_fill():
    dsa = DSA("crop")
    x = images(6)
    draw = dsa.sample(6, gen(7))
    out = dsa.apply(x, draw)
    shifts = dsa.crop_shifts(draw, 32, 32)
    assert shifts.dtype == torch.long and shifts.abs().max() <= 4  # round(0.125 * 32) = 4
    assert shifts.abs().sum() > 0
    for k in (0, 3):
        expected = _shift_by_hand(x[k], int(shifts[k, 0]), int(shifts[k, 1]))
        assert torch.equal(out[k], expected)


def test_crop_extreme_draws_shift_by_the_full_pad_on_non_square_images():
    dsa = DSA("crop")
    x = images(2, h=20, w=28)  # pads round(2.5) = 3 rows (half up), round(3.5) = 4 cols
    draw = DSA.make_draw("crop", 2, crop=torch.tensor([[0.0, 0.999999], [0.999999, 0.0]]))
    shifts = dsa.crop_shifts(draw, 20, 28)
    assert shifts.tolist() == [[-3, 4], [3, -4]]
    out = dsa.apply(x, draw)
    assert torch.equal(out[0], _shift_by_hand(x[0], -3, 4))
    assert torch.equal(out[1], _shift_by_hand(x[1], 3, -4))


def test_crop_shift_distribution_covers_every_integer_in_range():
    dsa = DSA("crop")
    shifts = dsa.crop_shifts(dsa.sample(2000, gen(0)), 32, 32)
    assert sorted(set(shifts.flatten().tolist())) == list(range(-4, 5))


def test_cutout_zeroes_exactly_one_square_of_round_half_size():
    dsa = DSA("cutout")
    ones = torch.ones(200, 3, 32, 32)
    draw = dsa.sample(200, gen(11))
    out = dsa.apply(ones, draw)
    boxes = dsa.cutout_boxes(draw, 32, 32)
    zeros = (out == 0).sum(dim=(1, 2, 3)) // 3
    assert torch.all((out == 0) | (out == 1))
    assert torch.all(zeros <= 16 * 16)
    inside = (boxes[:, 2] - boxes[:, 0] == 16) & (boxes[:, 3] - boxes[:, 1] == 16)
    assert inside.any() and (~inside).any()
    assert torch.all(zeros[inside] == 256)
    for k in range(0, 200, 17):  # the zeros are exactly the box, on every channel
        t, left, b, r = boxes[k].tolist()
        mask = torch.ones(32, 32)
        mask[t:b, left:r] = 0
        assert torch.equal(out[k], mask.expand(3, -1, -1))


def test_cutout_centred_draw_zeroes_the_centre_square():
    dsa = DSA("cutout")
    out = dsa.apply(torch.ones(1, 1, 32, 32), DSA.make_draw("cutout", 1, cutout=torch.tensor([[0.5, 0.5]])))
    expected = torch.ones(1, 1, 32, 32)
    expected[..., 8:24, 8:24] = 0
    assert torch.equal(out, expected)
    # non-square image: hole round(0.5 * 20) x round(0.5 * 28) = 10 x 14
    out = dsa.apply(torch.ones(1, 1, 20, 28), DSA.make_draw("cutout", 1, cutout=torch.tensor([[0.5, 0.5]])))
    assert int((out == 0).sum()) == 10 * 14


def test_cutout_centre_range_matches_official_randint_bounds():
    # official: centre ~ randint(0, size + 1 - hole % 2), rows [c - hole // 2, c - hole // 2 + hole) clipped
    dsa = DSA("cutout")
    boxes = dsa.cutout_boxes(dsa.sample(4000, gen(13)), 20, 30)  # holes 10 (even) x 15 (odd)
    rows = {(t, b) for t, _, b, _ in boxes.tolist()}
    cols = {(left, r) for _, left, _, r in boxes.tolist()}
    assert rows == {(max(c - 5, 0), min(c + 5, 20)) for c in range(0, 21)}
    assert cols == {(max(c - 7, 0), min(c + 8, 30)) for c in range(0, 30)}


def test_color_matches_hand_computation_from_drawn_uniforms():
    dsa = DSA("color")
    x = images(4)
    out = dsa(x, gen(21))
    # replay the generator: family index first, then brightness, saturation, contrast uniforms
    g = gen(21)
    torch.randint(0, 1, (1,), generator=g)
    ub, us, uc = torch.rand(4, generator=g), torch.rand(4, generator=g), torch.rand(4, generator=g)
    for k in range(4):
        y = x[k] + (float(ub[k]) - 0.5) * 1.0
        gray = y.mean(dim=0, keepdim=True)
        y = (y - gray) * (float(us[k]) * 2.0) + gray
        m = y.mean()
        y = (y - m) * (float(uc[k]) + 0.5) + m
        assert torch.allclose(out[k], y, atol=1e-5, rtol=0)


def test_color_parts_by_hand_draws():
    dsa = DSA("color")
    x = images(1)
    assert torch.allclose(dsa.apply(x, DSA.make_draw("color", 1, brightness=torch.tensor([0.3]))), x + 0.3, atol=1e-6)
    gray = dsa.apply(x, DSA.make_draw("color", 1, saturation=torch.tensor([0.0])))
    assert torch.allclose(gray, x.mean(dim=1, keepdim=True).expand_as(x), atol=1e-6)
    flat = dsa.apply(x, DSA.make_draw("color", 1, contrast=torch.tensor([0.0])))
    assert torch.allclose(flat, torch.full_like(x, float(x.mean())), atol=1e-6)
    doubled = dsa.apply(x, DSA.make_draw("color", 1, contrast=torch.tensor([2.0])))
    assert torch.allclose(doubled, 2 * x - x.mean(), atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 3, 32, 32), (2, 3, 20, 28)])
def test_unit_scale_and_zero_rotation_are_identity(shape):
    dsa = DSA(FULL)
    x = torch.rand(*shape, generator=gen(4))
    n = shape[0]
    assert torch.allclose(dsa.apply(x, DSA.make_draw("scale", n, scale=torch.ones(n, 2))), x, atol=1e-5)
    assert torch.allclose(dsa.apply(x, DSA.make_draw("rotate", n, angle=torch.zeros(n))), x, atol=1e-5)


def test_scale_theta_two_samples_every_other_pixel_with_zero_border():
    # theta = diag(2, 2): output point u samples input at 2u, so the image shrinks by 2 about the centre
    x = torch.arange(25.0).view(1, 1, 5, 5)
    out = DSA("scale").apply(x, DSA.make_draw("scale", 1, scale=torch.tensor([[2.0, 2.0]])))
    assert torch.allclose(out[0, 0, 1:4, 1:4], x[0, 0, ::2, ::2], atol=1e-5)
    border = torch.ones(5, 5, dtype=torch.bool)
    border[1:4, 1:4] = False
    assert torch.allclose(out[0, 0][border], torch.zeros(16), atol=1e-6)


def test_rotate_90_degrees_equals_rot90():
    dsa = DSA("rotate")
    x = images(4)
    plus = dsa.apply(x, DSA.make_draw("rotate", 4, angle=torch.full((4,), math.pi / 2)))
    minus = dsa.apply(x, DSA.make_draw("rotate", 4, angle=torch.full((4,), -math.pi / 2)))
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(plus[inner], torch.rot90(x, 1, dims=(2, 3))[inner], atol=1e-4)
    assert torch.allclose(minus[inner], torch.rot90(x, -1, dims=(2, 3))[inner], atol=1e-4)
    assert not torch.allclose(plus[inner], minus[inner], atol=1e-2)


def test_scale_and_rotate_draws_stay_in_official_ranges():
    dsa = DSA(FULL)
    sc = DSA("scale").sample(500, gen(1))["scale"]
    assert sc.min() >= 1 / 1.2 - 1e-6 and sc.max() <= 1.2 + 1e-6 and sc.max() - sc.min() > 0.3
    ang = DSA("rotate").sample(500, gen(2))["angle"]
    lim = 15 / 180 * math.pi
    assert ang.abs().max() <= lim + 1e-6 and ang.abs().max() > 0.9 * lim
    assert dsa.families == DSA_FAMILIES


# ---------------------------------------------------------------------------------------------
# DSA: one family per call, groups, sample_many
# ---------------------------------------------------------------------------------------------


def test_one_family_per_call_with_groups_one():
    dsa = DSA(FULL)
    seen = set()
    for seed in range(60):
        draw = dsa.sample(8, gen(seed))
        assert len(draw["chunks"]) == 1 and draw["chunks"][0][1] == 8
        seen.add(draw["chunks"][0][0])
    assert seen == set(DSA_FAMILIES)


def test_sample_draws_family_then_only_that_familys_parameters():
    dsa = DSA("crop_rotate")
    g = gen(8)
    draw = dsa.sample(5, g)
    replay = gen(8)
    fam = dsa.families[int(torch.randint(0, 2, (1,), generator=replay))]
    assert draw["chunks"] == ((fam, 5),)
    if fam == "crop":
        assert torch.equal(draw["crop"], torch.rand(5, 2, generator=replay))
    else:
        expected = (torch.rand(5, generator=replay) - 0.5) * 2 * 15.0 / 180 * math.pi
        assert torch.allclose(draw["angle"], expected)
    # nothing else was consumed: both generators are now in the same state
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=replay))


def test_groups_draw_one_family_per_chunk_from_one_generator():
    dsa = DSA(FULL)
    draw = dsa.sample(8, gen(4), groups=4)
    g = gen(4)
    parts = [dsa.sample(2, g) for _ in range(4)]
    assert draw["chunks"] == tuple(p["chunks"][0] for p in parts)
    for key in ("scale", "angle", "crop", "cutout", "flip", "brightness"):
        assert torch.equal(draw[key], torch.cat([p[key] for p in parts]))
    with pytest.raises(DdflowError, match="divisible"):
        dsa.sample(7, gen(0), groups=2)


def test_sample_many_chunks_equal_separate_samples_and_augmentations():
    dsa = DSA(FULL)
    sizes = [3, 5, 4]
    x = images(12)
    mixed = 0
    for base in range(0, 40, 4):
        seeds = [base, base + 1, base + 2]
        draw = dsa.sample_many(sizes, [gen(s) for s in seeds])
        out = dsa.augment_many(x, sizes, [gen(s) for s in seeds])
        assert torch.equal(out, dsa.apply(x, draw))
        mixed += len({f for f, _ in draw["chunks"]}) > 1
        start = 0
        for size, seed in zip(sizes, seeds):
            alone = dsa.sample(size, gen(seed))
            sl = slice(start, start + size)
            assert draw["chunks"][seeds.index(seed)] == alone["chunks"][0]
            for key in ("flip", "scale", "angle", "crop", "cutout", "brightness", "saturation", "contrast"):
                assert torch.equal(draw[key][sl], alone[key])
            assert torch.allclose(out[sl], dsa(x[sl], gen(seed)), atol=1e-6, rtol=0)
            start += size
    assert mixed > 0, "no batch mixed several families; the per-family path went untested"


def test_sample_many_allows_an_empty_chunk():
    dsa = DSA(FULL)
    x = images(6).requires_grad_(True)
    for seed in range(8):
        out = dsa.augment_many(x, [2, 0, 4], [gen(seed), gen(seed + 50), gen(seed + 100)])
        assert torch.allclose(out[:2], dsa(x[:2], gen(seed)), atol=1e-6, rtol=0)
        assert torch.allclose(out[2:], dsa(x[2:], gen(seed + 100)), atol=1e-6, rtol=0)
    out.sum().backward()
    assert x.grad is not None


def test_draw_of_another_size_is_rejected_unless_size_one():
    dsa = DSA("rotate")
    with pytest.raises(DdflowError, match="4"):
        dsa.apply(images(6), dsa.sample(4, gen(0)))
    assert dsa.apply(images(6), dsa.sample(1, gen(0))).shape == (6, 3, 32, 32)


def test_none_strategy_is_identity():
    for s in ("none", ""):
        dsa = DSA(s)
        assert dsa.families == ()
        x = images(4)
        assert torch.equal(dsa(x, gen(0)), x)


# ---------------------------------------------------------------------------------------------
# DSA: gradients, errors, devices
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(DSA_FAMILIES))
def test_gradients_flow_to_images_for_every_family(family):
    dsa = DSA(family, DSAParams(prob_flip=1.0))
    x = images(4).requires_grad_(True)
    w = torch.rand(4, 3, 32, 32, generator=gen(9))
    (dsa(x, gen(0)) * w).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_gradients_flow_through_a_batch_mixing_families():
    dsa = DSA(FULL)
    x = images(12).requires_grad_(True)
    draw = dsa.sample_many([4, 4, 4], [gen(0), gen(1), gen(3)])
    assert len({f for f, _ in draw["chunks"]}) > 1
    (dsa.apply(x, draw) * torch.rand(12, 3, 32, 32, generator=gen(2))).sum().backward()
    assert (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_unknown_family_raises_naming_it_and_the_allowed_ones():
    with pytest.raises(DdflowError, match="blur") as info:
        DSA("color_blur")
    assert "cutout" in str(info.value) and "rotate" in str(info.value)
    with pytest.raises(DdflowError, match="blur"):
        DCAugment("crop_blur")
    with pytest.raises(DdflowError, match="weird"):
        make_augment("weird", "crop")


def test_non_generator_or_non_image_input_is_rejected():
    dsa = DSA("crop")
    with pytest.raises(DdflowError, match="torch.Generator"):
        dsa.sample(4, 123)
    with pytest.raises(DdflowError, match=r"\(N, C, H, W\)"):
        dsa(torch.rand(3, 32, 32), gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", list(DSA_FAMILIES) + [FULL])
def test_cuda_apply_matches_cpu(strategy):
    dsa = DSA(strategy)
    x = images(8)
    draw = dsa.sample_many([4, 4], [gen(0), gen(1)])
    xc = x.cuda().requires_grad_(True)
    out = dsa.apply(xc, draw)
    assert out.is_cuda
    assert torch.allclose(out.cpu(), dsa.apply(x, draw), atol=1e-5)
    out.sum().backward()
    assert xc.grad is not None


# ---------------------------------------------------------------------------------------------
# DCAugment
# ---------------------------------------------------------------------------------------------


def mnist_like(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=gen(2000 + seed))


def _batch_mean_padded(img: torch.Tensor, batch: torch.Tensor, pad: int) -> torch.Tensor:
    """img padded by `pad` with the batch's per-channel mean (official utils.py augment, cropfun)."""
    m = batch.mean(dim=(0, 2, 3)).view(-1, 1, 1)
    c, h, w = img.shape
    out = m.expand(c, h + 2 * pad, w + 2 * pad).clone()
    out[:, pad:pad + h, pad:pad + w] = img
    return out


def test_dc_noise_only_adds_gaussian_noise_of_std_0001():
    aug = DCAugment("noise")
    x = mnist_like()
    d = aug(x, gen(0)) - x
    assert 0.0009 < float(d.std()) < 0.0011
    assert abs(float(d.mean())) < 1e-4


def test_dc_crop_is_an_integer_window_of_the_batch_mean_padded_image():
    """Official VICO-UoE/DatasetCondensation utils.py augment/cropfun: pad with the minibatch's per-channel mean,
    window offsets np.random.permutation(crop * 2)[0], i.e. 0..2*crop-1 (shifts -4..+3)."""
    aug = DCAugment("crop")
    x = mnist_like(6)
    draw = aug.sample(x.shape, gen(3))
    out = aug.apply(x, draw)
    found = []
    for k in range(6):
        padded = _batch_mean_padded(x[k], x, 4)
        hits = [(r, c) for r in range(8) for c in range(8)
                if torch.allclose(out[k], padded[:, r:r + 28, c:c + 28], atol=1e-6)]
        assert hits, f"image {k} is not a window of its batch-mean-padded self"
        found.append(hits[0])
    assert found == [tuple(rc) for rc in draw["crop"].tolist()]
    offsets = aug.sample((3000, 1, 28, 28), gen(0))["crop"]
    assert sorted(set(offsets.flatten().tolist())) == list(range(8))


def test_dc_chooses_one_transform_per_image():
    aug = DCAugment("crop_noise")
    x = mnist_like(64)
    draw = aug.sample(x.shape, gen(5))
    out = aug.apply(x, draw)
    crop_code, noise_code = DC_TRANSFORMS.index("crop"), DC_TRANSFORMS.index("noise")
    is_noise = draw["choice"] == noise_code
    assert torch.all((draw["choice"] == crop_code) | is_noise)
    assert 10 < int(is_noise.sum()) < 54  # chosen per image, not per batch
    diff = (out - x).abs().amax(dim=(1, 2, 3))
    assert torch.all(diff[is_noise] < 0.01) and torch.all(diff[is_noise] > 0)
    for k in torch.nonzero(~is_noise).squeeze(1)[:5].tolist():
        # crop only, no noise: exactly a window of the batch-mean-padded image
        padded = _batch_mean_padded(x[k], x, 4)
        assert any(torch.allclose(out[k], padded[:, r:r + 28, c:c + 28], atol=1e-6)
                   for r in range(8) for c in range(8))


def _draw(kind: str, values: torch.Tensor, n: int) -> dict:
    d = {"n": n, "choice": torch.full((n,), DC_TRANSFORMS.index(kind)), "crop": torch.zeros(0, 2, dtype=torch.long),
         "scale": torch.zeros(0, 2), "rotate": torch.zeros(0), "noise": torch.zeros(0, 1, 28, 28)}
    d[kind] = values
    return d


def test_dc_scale_is_a_nearest_resize_on_a_zero_canvas_cropped_at_the_centre():
    """Official utils.py augment/scalefun: h = int(U * H), w = int(U * H), F.interpolate (nearest) into a zero
    canvas of side max(h, w, H, W) at int((side - h) / 2), then the centre H x W window; computed here by hand."""
    aug = DCAugment("scale")
    x = mnist_like(2)
    factors = torch.tensor([[0.85, 1.13], [1.19, 0.81]])
    out = aug.apply(x, _draw("scale", factors, 2))
    for i, (fh, fw) in enumerate(factors.tolist()):
        sh, sw = int(fh * 28), int(fw * 28)
        rows = (torch.arange(sh) * 28 / sh).floor().long()  # nearest: source index floor(dst * in / out)
        cols = (torch.arange(sw) * 28 / sw).floor().long()
        small = x[i][:, rows][:, :, cols]
        side = max(sh, sw, 28)
        canvas = torch.zeros(1, side, side)
        canvas[:, (side - sh) // 2:(side - sh) // 2 + sh, (side - sw) // 2:(side - sw) // 2 + sw] = small
        r = (side - 28) // 2
        assert torch.equal(out[i], canvas[:, r:r + 28, r:r + 28])


def test_dc_rotate_is_scipys_spline_rotation_filled_with_the_batch_mean():
    """Official utils.py augment/rotatefun: scipy.ndimage.rotate(image, integer angle, axes=(-2, -1),
    cval=np.mean(channel means)), reshape then the centre window; a constant batch stays constant."""
    from scipy.ndimage import rotate
    aug = DCAugment("rotate")
    const = torch.full((3, 1, 28, 28), 3.0)
    assert torch.allclose(aug(const, gen(0)), const, atol=1e-4)
    x = mnist_like(2)
    out = aug.apply(x, _draw("rotate", torch.tensor([30.0, -44.0]), 2))
    fill = float(x.mean())
    for i, angle in enumerate((30.0, -44.0)):
        turned = rotate(x[i].numpy(), angle=angle, axes=(-2, -1), cval=fill)
        r = (turned.shape[-1] - 28) // 2
        assert torch.allclose(out[i], torch.from_numpy(turned[:, r:r + 28, r:r + 28]), atol=1e-6)
    out = aug.apply(x, _draw("rotate", torch.tensor([90.0, -90.0]), 2))
    assert torch.allclose(out[0], torch.rot90(x[0], 1, dims=(1, 2)), atol=1e-4)
    assert torch.allclose(out[1], torch.rot90(x[1], -1, dims=(1, 2)), atol=1e-4)


def test_dc_rotate_and_scale_draws_in_range():
    """Official: angle np.random.randint(-rotate, rotate) = whole degrees in [-45, 44]; scale factors U(0.8, 1.2)."""
    d = DCAugment("scale_rotate").sample((2000, 1, 28, 28), gen(0))
    assert d["scale"].min() >= 0.8 - 1e-6 and d["scale"].max() <= 1.2 + 1e-6
    assert sorted(set(d["rotate"].tolist())) == [float(a) for a in range(-45, 45)]
    assert d["scale"].shape[0] + d["rotate"].shape[0] == 2000


def test_dc_deterministic_by_generator():
    aug = DCAugment("crop_scale_rotate_noise")
    x = mnist_like(8)
    a = aug(x, gen(0))
    assert torch.equal(a, aug(x, gen(0)))
    assert not torch.equal(a, aug(x, gen(1)))


def test_dc_augment_many_chunks_equal_separate_calls():
    aug = DCAugment("crop_scale_rotate_noise")
    x = mnist_like(10)
    sizes, seeds = [4, 1, 5], [7, 8, 9]
    out = aug.augment_many(x, sizes, [gen(s) for s in seeds])
    start = 0
    for size, seed in zip(sizes, seeds):
        sl = slice(start, start + size)
        assert torch.allclose(out[sl], aug(x[sl], gen(seed)), atol=1e-6, rtol=0)
        start += size
    with pytest.raises(DdflowError, match="sum"):
        aug.augment_many(x, [4, 4], [gen(0), gen(1)])


def test_dc_none_is_identity_and_no_grad():
    x = mnist_like().requires_grad_(True)
    assert torch.equal(DCAugment("none")(x, gen(0)), x.detach())
    assert not DCAugment("noise")(x, gen(0)).requires_grad


# ---------------------------------------------------------------------------------------------
# make_augment / common interface
# ---------------------------------------------------------------------------------------------


def test_make_augment_kinds_share_augment_many():
    dsa, dc, none = make_augment("dsa", FULL), make_augment("dc", "crop_noise"), make_augment("none", "x")
    assert isinstance(dsa, DSA) and isinstance(dc, DCAugment) and none is None
    x = mnist_like(6)
    for aug in (dsa, dc):
        out = aug.augment_many(x, [3, 3], [gen(0), gen(1)])
        assert out.shape == x.shape and not torch.equal(out, x)


def test_siamese_per_class_is_one_shared_draw_per_class_in_order():
    """DM, CAFE, DC/DSA and IDM augment a class's real and synthetic batches with one draw (the official per-class
    seed): siamese_per_class = for each class, siamese() then apply() to both, from one generator in class order."""
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    reals, syns = torch.rand(3, 5, 3, 16, 16), torch.rand(3, 2, 3, 16, 16)
    r, s = dsa.siamese_per_class(reals, syns, gen(4))
    g, want_r, want_s = gen(4), [], []
    for c in range(3):
        draw = dsa.siamese(g)
        want_r.append(dsa.apply(reals[c], draw))
        want_s.append(dsa.apply(syns[c], draw))
    assert all(torch.equal(a, b) for a, b in zip(r + s, want_r + want_s))
    assert not torch.equal(r[0], dsa.siamese_pair(reals[0], syns[0], gen(5))[0])
    with pytest.raises(ValueError):
        dsa.siamese_per_class(reals, syns[:2], gen(0))
