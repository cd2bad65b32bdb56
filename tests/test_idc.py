"""IDC / DREAM: multi-formation, IDC's DiffAug, CutMix, conv-weight matching, lr_img scaling, DREAM's representative
batches and k-means initialisation, the idc protocol over K stacked models, the timing table."""
import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ddflow import hparams
from ddflow.augment import IDCAugment
from ddflow.augment.cutmix import cutmix_apply, cutmix_draw
from ddflow.data import RealData, get_info
from ddflow.data.zca import fit_zca
from ddflow.errors import DdflowError
from ddflow.methods import get_method
from ddflow.methods.idc import lr_img
from ddflow.nets import build_net
from ddflow.ops.gradient_distance import conv_grad_distance, conv_weights
from ddflow.ops.kmeans import representative_indices
from ddflow.ops.losses import cutmix_loss
from ddflow.ops.multiformation import decode, tile
from ddflow.protocols.idc import evaluate_idc
from ddflow.records import DistilledSet

CPU = torch.device("cpu")
ROOT_PAPERS = Path(__file__).resolve().parents[1] / "workflow" / "papers"


def _quadrants(n=2, size=28, c=1):
    """n images whose four quadrants hold the constants 10*i + q (q = 0..3 row-major)."""
    x = torch.zeros(n, c, size, size)
    h = size // 2
    for i in range(n):
        for q, (r, s) in enumerate(((0, 0), (0, h), (h, 0), (h, h))):
            x[i, :, r:r + h, s:s + h] = 10 * i + q
    return x


# ---- multi-formation ---------------------------------------------------------------------------------------
def test_decode_splits_each_image_into_factor_squared_upsampled_crops_with_its_label():
    x, y = _quadrants(2), torch.tensor([3, 7])
    out, labels = decode(x, y, 2)
    assert out.shape == (8, 1, 28, 28) and labels.tolist() == [3, 7] * 4  # crop-major order
    for q in range(4):
        for i in range(2):
            assert torch.allclose(out[q * 2 + i], torch.full((1, 28, 28), 10.0 * i + q))
    same, same_y = decode(x, y, 1)
    assert same is x and same_y is y


def test_decode_pads_a_size_not_divisible_by_the_factor_with_half_grey():
    x = torch.zeros(1, 1, 5, 5)
    out, _ = decode(x, torch.tensor([0]), 2)  # padded to 6x6 with 0.5; crops of 3x3
    assert out.shape == (4, 1, 5, 5)
    assert out[0].max() == 0  # top-left crop lies inside the image
    assert out[3].max() > 0.2  # bottom-right crop includes the padding


def test_tile_places_factor_squared_images_into_patches_that_decode_recovers():
    n, f = 3, 2
    parts = torch.stack([torch.full((1, 28, 28), float(v)) for v in range(n * f * f)])
    stored = tile(parts, f)
    assert stored.shape == (n, 1, 28, 28)
    decoded, _ = decode(stored, torch.zeros(n, dtype=torch.long), f)
    for k in range(f * f):  # patch k of stored image i came from parts[k * n + i]
        for i in range(n):
            assert torch.allclose(decoded[k * n + i], parts[k * n + i])
    with pytest.raises(DdflowError, match="multiple of factor"):
        tile(parts[:5], 2)


# ---- IDC's DiffAug ----------------------------------------------------------------------------------------
def test_idc_diffaug_always_applies_flip_color_cutout_and_draws_one_geometric_family():
    aug = IDCAugment("color_crop_cutout_flip_scale_rotate")
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        draws = aug.sample(4, g)
        fams = [d["chunks"][0][0] for d in draws]
        assert fams[:2] == ["flip", "color"] and fams[-1] == "cutout" and len(fams) == 4
        assert fams[2] in ("crop", "scale", "rotate")
        assert all(d["n"] == 4 for d in draws)
        seen.add(fams[2])
    assert seen == {"crop", "scale", "rotate"}
    assert [d["chunks"][0][0] for d in IDCAugment("color_crop").sample(3, g)] == ["color", "crop"]


def test_idc_diffaug_shared_draw_gives_the_real_and_synthetic_batch_one_transform():
    aug = IDCAugment("color_crop_cutout")
    img = torch.rand(1, 1, 28, 28)
    batch = img.expand(6, 1, 28, 28).clone()
    out = aug(batch, torch.Generator().manual_seed(1), shared=True)
    assert torch.allclose(out, out[:1].expand_as(out))
    per_sample = aug(batch, torch.Generator().manual_seed(1))
    assert not torch.allclose(per_sample, per_sample[:1].expand_as(per_sample))
    # deterministic from the generator; augment_many = chunk by chunk with each chunk's generator
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    many = aug.augment_many(batch, [3, 3], [copy.deepcopy(g) for g in gens])
    assert torch.equal(many[:3], aug(batch[:3], gens[0])) and torch.equal(many[3:], aug(batch[3:], gens[1]))


# ---- CutMix -----------------------------------------------------------------------------------------------
def test_cutmix_mixes_labels_in_proportion_to_the_pasted_area():
    g = torch.Generator().manual_seed(0)
    n = 8
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 28, 28).clone()
    y = torch.arange(n) % 10
    for _ in range(10):
        d = cutmix_draw(n, 28, 28, g)
        mixed = cutmix_apply(x, d)
        own = (mixed == x).float().mean(dim=(1, 2, 3))  # fraction of each image that stayed its own
        moved = d["perm"] != torch.arange(n)
        assert torch.allclose(own[moved], torch.full_like(own[moved], d["keep"]))
        logits = torch.randn(n, 10)
        expected = d["keep"] * F.cross_entropy(logits, y) + (1 - d["keep"]) * F.cross_entropy(logits, y[d["perm"]])
        assert torch.allclose(cutmix_loss(logits, y, d), expected)
        assert 0.0 <= d["keep"] <= 1.0


# ---- matching distance and lr_img -------------------------------------------------------------------------
def test_matching_uses_conv_weights_only_with_sum_mse_or_l1():
    net = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(0))
    w = conv_weights(net)
    assert len(w) == 3 and all(p.dim() == 4 for p in w)  # no conv bias, no norm, no classifier
    a = [torch.ones(2, 2), torch.zeros(3)]
    b = [torch.zeros(2, 2), torch.full((3,), 2.0)]
    assert conv_grad_distance(a, b, "mse").item() == pytest.approx(4 * 1 + 3 * 4)
    assert conv_grad_distance(a, b, "l1").item() == pytest.approx(4 * 1 + 3 * 2)
    with pytest.raises(DdflowError, match="metric"):
        conv_grad_distance(a, b, "ours")


def test_lr_img_scaling_follows_tune_lr_img_including_mnists_base_size():
    assert lr_img(1e-4, 10, 28, 28) == pytest.approx(1e-4)
    assert lr_img(5e-3, 50, 32, 32) == pytest.approx(2.5e-2)
    assert lr_img(5e-3, 1, 32, 32) == pytest.approx(5e-4)
    mnist = hparams.resolve("idc", "mnist", 10, "paper")
    fmnist = hparams.resolve("idc", "fmnist", 10, "paper")
    cifar = hparams.resolve("idc", "cifar10", 10, "paper")
    assert (mnist["lr_img_base"], mnist["lr_img_base_size"], mnist["match_metric"]) == (1e-4, 28, "l1")
    assert (fmnist["lr_img_base"], fmnist["lr_img_base_size"]) == (1e-4, 32)  # FMNIST: 28 px against base 32
    assert lr_img(fmnist["lr_img_base"], 10, 28, fmnist["lr_img_base_size"]) == pytest.approx(1e-4 * (28 / 32) ** 2)
    assert (cifar["match_metric"], cifar["n_data"], cifar["lr_img_base"]) == ("mse", 2000, 5e-3)
    assert mnist["mixup_net"] == "vanilla" and mnist["aug_match"] == "color_crop"  # reproduce.py mnist, factor 2
    assert hparams.resolve("dream", "cifar10", 10, "paper")["batch_real"] == 128


# ---- the methods ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """200 random 'images' (20 per class) in the mnist5k format."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(20)
    x = torch.randn(200, 1, 28, 28, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.1
    return RealData(x, y, x[:50].clone(), y[:50].clone(), get_info("mnist5k"))


def _method(name, data, ipc=1, **hp_over):
    hp = hparams.resolve(name, "mnist5k", ipc, "quick")
    hp.update({"inner_loops": 3, "n_data": 16, "batch_real": 4, "batch_syn_max": 8, **hp_over})
    if name == "dream":
        hp["representative"] = {"every": 2, "pool": None, "kmeans_iters": 5}
    m = get_method(name)(hp, data, ipc, torch.Generator().manual_seed(5), CPU)
    return m


def test_idc_step_keeps_pixels_in_unit_range_and_records_timing(small):
    m = _method("idc", small)
    m.init()
    before = m.images.detach().clone()
    assert 0 <= before.min() and before.max() <= 1
    m.step(0)
    res = m.result()
    assert m.result_space == "pixels" and res["factor"] == 2 and res["images"].shape == (10, 1, 28, 28)
    assert not torch.equal(res["images"], before)
    t = res["timing"]
    assert t["inner_loops"] == 3 and t["clustering_s"] is None and t["inner_loop_s"] >= t["update_images_s"] > 0
    assert res["lr_img"] == pytest.approx(1e-4 * 0.1)


def test_dream_uses_centroid_nearest_images_and_reclusters_on_schedule(small, monkeypatch):
    m = _method("dream", small)
    m.init()
    calls, used = [], []
    orig_recluster = m.sampler.recluster

    def recluster(net):
        g_state = m.generator.get_state()
        picks = orig_recluster(net)
        # the picks are, per class, the images nearest to the k-means centroids of the net's features
        g = torch.Generator()
        g.set_state(g_state)
        with torch.no_grad():
            for c, idx in enumerate(small.indices_per_class()):
                chosen = representative_indices(net.embed(small.x_train[idx]), 4, g, 5)
                assert torch.equal(picks[c], idx[chosen])
        calls.append(len(used))
        return picks

    orig_match = m._match_class

    def match(net, c, real_idx):
        used.append(real_idx.clone())
        return orig_match(net, c, real_idx)

    monkeypatch.setattr(m.sampler, "recluster", recluster)
    monkeypatch.setattr(m, "_match_class", match)
    m.step(0)
    # 3 inner loops x 10 classes; re-clustered at inner loops 0 and 2 (every 2), not at 1
    assert calls == [0, 20] and len(used) == 30
    assert torch.equal(used[0], used[10]) and not torch.equal(used[10], used[20])
    assert m.result()["timing"]["clustering_s"] > 0


def test_dream_kmeans_initialisation_tiles_factor_squared_selected_images(small):
    m = _method("dream", small)
    m.init()
    twin = _method("dream", small)
    twin.factor = 2
    idx = twin._kmeans_indices(4)  # ipc 1 x factor^2, drawn from the same generator state as m.init()
    pixels = twin._pixels(small.x_train[idx]).view(10, 4, 1, 28, 28)
    expected = torch.cat([tile(pixels[c], 2) for c in range(10)])
    assert torch.allclose(m.images.detach(), expected)
    assert all(int(small.y_train[i]) == k // 4 for k, i in enumerate(idx.tolist()))


@pytest.mark.parametrize("method", ["idc", "dream"])
def test_resume_continues_exactly(small, method):
    a = _method(method, small, inner_loops=1)
    a.init()
    a.step(0)
    state, gen = copy.deepcopy(a.state_dict()), a.generator.get_state()
    a.step(1)
    b = _method(method, small, inner_loops=1)
    b.init()  # dream builds (and would reuse) the k-means network here: a resumed run must not
    b.load_state_dict(state)
    b.generator.set_state(gen)
    b.step(1)
    assert torch.equal(a.images, b.images)


# ---- the idc protocol -------------------------------------------------------------------------------------
def _record(x, y, data, **kw):
    info = data.info
    return DistilledSet(images=x, labels=y, method="idc", dataset=info.name, ipc=1, seed=0, mean=info.mean,
                        std=info.std, **kw)


def test_protocol_decodes_and_normalises_pixel_images(small):
    x = torch.rand(10, 1, 28, 28)
    y = torch.arange(10)
    dx, dy = _record(x, y, small, space="pixels", factor=2).decoded()
    ref, ref_y = decode(x, y, 2)
    assert dx.shape == (40, 1, 28, 28) and torch.equal(dy, ref_y)
    assert torch.allclose(dx, (ref - 0.1307) / 0.3081)
    zca = fit_zca(x, "kornia").state_dict()
    with pytest.raises(DdflowError, match="space"):
        _record(x, y, small, space="zca", zca=zca, factor=2).decoded()


def test_protocol_trains_k_stacked_models_as_k_separate_runs(small):
    settings = {"net": "ConvNet", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch": 8, "epochs": 3,
                "decay_factor": 0.2, "mixup": "cut", "cutmix_p": 0.5, "cutmix_beta": 1.0,
                "strategy": "color_crop_scale_rotate", "batching": "loop"}
    x, y = torch.rand(20, 1, 28, 28), torch.arange(10).repeat(2)
    rec = _record(x, y, small, space="pixels", factor=1)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    together = evaluate_idc(rec, small, settings, [copy.deepcopy(g) for g in gens], CPU)
    alone = [evaluate_idc(rec, small, settings, [copy.deepcopy(g)], CPU)[0] for g in gens]
    assert together == pytest.approx(alone)


def test_timing_table_puts_each_runs_seconds_per_inner_loop_beside_the_paper(tmp_path):
    from ddflow.report.timing import build_timing_table, write_timing_table

    info = get_info("cifar10")
    paths = []
    for method, clus in (("idc", None), ("dream", 0.1)):
        for seed, loop in ((0, 0.3), (1, 0.5)):
            rec = DistilledSet(images=torch.zeros(100, 3, 32, 32), labels=torch.arange(10).repeat_interleave(10),
                               method=method, dataset="cifar10", ipc=10,
                               seed=seed, mean=info.mean, std=info.std, preset="paper",
                               extra={"timing": {"clustering_s": clus, "update_images_s": 0.2, "inner_loop_s": loop,
                                                 "inner_loops": 100, "device": "H100"}})
            paths.append(tmp_path / f"{method}{seed}.pt")
            rec.save(paths[-1])
    table = build_timing_table(ROOT_PAPERS / "dream_t2.yaml", paths)
    df = table["df"].set_index("method")
    assert df.loc["idc", "ours_inner_loop_s"] == pytest.approx(0.4) and pd.isna(df.loc["idc", "ours_clustering_s"])
    assert df.loc["dream", "ours_clustering_s"] == pytest.approx(0.1) and df.loc["dream", "paper_inner_loop_s"] == 0.3
    assert df.loc["dream", "n_runs"] == 2 and df.loc["dream", "inner_loops"] == 200
    write_timing_table(table, tmp_path / "t2")
    md = (tmp_path / "t2.md").read_text()
    assert "| CIFAR10 " in md and "H100" in md and (tmp_path / "t2.tex").exists()


@pytest.mark.parametrize("mixup", ["cut", "vanilla"])
def test_protocol_follows_idcs_cutout_removal_and_counts_coinciding_milestones_twice(small, mixup, monkeypatch):
    """snu-mllab/Efficient-Dataset-Condensation (commit ceac95a) argument.py lines 451-452: `if args.mixup == 'cut':
    args.dsa_strategy = remove_aug(args.dsa_strategy, 'cutout')`; train.py lines 109-110: MultiStepLR(milestones=
    [2E//3, 5E//6], gamma=0.2), which applies gamma once per listed milestone: at E = 3 both are 2, gamma^2 after
    epoch 2 (epoch index 1)."""
    import ddflow.protocols.idc as idc_protocol

    seen = {}

    class SpyAugment(IDCAugment):
        def __init__(self, strategy, *args, **kwargs):
            seen["strategy"] = strategy
            super().__init__(strategy, *args, **kwargs)

    real_train = idc_protocol.train_stack

    def spy_train(stack, x, y, generators, ts, *args, **kwargs):
        seen["decay_epochs"] = ts.decay_epochs
        return real_train(stack, x, y, generators, ts, *args, **kwargs)

    monkeypatch.setattr(idc_protocol, "IDCAugment", SpyAugment)
    monkeypatch.setattr(idc_protocol, "train_stack", spy_train)
    settings = {"net": "ConvNet", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch": 8, "epochs": 3,
                "decay_factor": 0.2, "mixup": mixup, "cutmix_p": 0.5, "cutmix_beta": 1.0,
                "strategy": "color_crop_cutout_flip_scale_rotate", "batching": "loop"}
    rec = _record(torch.rand(20, 1, 28, 28), torch.arange(10).repeat(2), small, space="pixels", factor=1)
    evaluate_idc(rec, small, settings, [torch.Generator().manual_seed(1)], CPU)
    expected = "color_crop_flip_scale_rotate" if mixup == "cut" else "color_crop_cutout_flip_scale_rotate"
    assert seen == {"strategy": expected, "decay_epochs": (1, 1)}
    assert [idc_protocol.decay_epochs(e) for e in (1, 2, 3, 6, 1000)] == [(), (0, 0), (1, 1), (3, 4), (665, 832)]


def test_repository_idc_settings_state_the_official_strategy_and_the_protocol_removes_cutout():
    from ddflow.protocols import protocol_settings
    from ddflow.protocols.idc import eval_strategy

    for dataset, official, used in (("cifar10", "color_crop_cutout_flip_scale_rotate", "color_crop_flip_scale_rotate"),
                                    ("svhn", "color_crop_cutout_scale_rotate", "color_crop_scale_rotate"),
                                    ("mnist", "color_crop_scale_rotate", "color_crop_scale_rotate")):
        s = protocol_settings("idc", dataset, 10, "paper", "idc")
        assert s["strategy"] == official and eval_strategy(s["strategy"], s["mixup"]) == used, dataset


def test_timing_table_prints_the_preset_of_the_runs_in_markdown_and_latex(tmp_path):
    from ddflow.report.timing import build_timing_table, write_timing_table

    info = get_info("cifar10")
    paths = []
    for seed, preset in ((0, "quick"), (1, "paper")):
        rec = DistilledSet(images=torch.zeros(100, 3, 32, 32), labels=torch.arange(10).repeat_interleave(10),
                           method="dream", dataset="cifar10", ipc=10,
                           seed=seed, mean=info.mean, std=info.std, preset=preset,
                           extra={"timing": {"clustering_s": 0.1, "update_images_s": 0.2, "inner_loop_s": 0.3,
                                             "inner_loops": 4, "device": "cpu"}})
        paths.append(tmp_path / f"dream{seed}.pt")
        rec.save(paths[-1])
    write_timing_table(build_timing_table(ROOT_PAPERS / "dream_t2.yaml", paths), tmp_path / "t2")
    md = (tmp_path / "t2.md").read_text().splitlines()
    header = next(line for line in md if line.startswith("| Dataset"))
    row = next(line for line in md if line.startswith("| CIFAR10"))
    assert header.rstrip(" |").endswith("preset") and row.rstrip(" |").endswith("paper, quick")
    tex = (tmp_path / "t2.tex").read_text()
    assert "preset" in tex and "paper, quick" in tex
