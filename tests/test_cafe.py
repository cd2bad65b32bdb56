"""CAFE (official kaiwang960112/CAFE distill.py, networks.py): its feature levels, its loss terms against loops
written out by hand, its dynamic bi-level schedule, and resume equality."""
import math
import shutil

import pytest
import torch
import yaml

from ddflow import hparams
from ddflow.methods import get_method
from ddflow.methods.cafe import AccuracyWatcher, block_outputs, cafe_terms
from ddflow.nets import build_net
from ddflow.settings import distill_cell as run
from test_distill import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def test_block_outputs_are_the_official_feature_slices():
    """networks.py ConvNet.forward: f1 = features[:-9], f2 = features[-9:-5], f3 = features[-5:-1], f4 =
    features[-1:] (depth 3: each block conv, norm, relu, pool)."""
    net = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(0))
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    f = net.features
    f1 = f[:-9](x)
    f2 = f[-9:-5](f1)
    f3 = f[-5:-1](f2)
    f4 = f[-1:](f3)
    ours = block_outputs(net, x)
    assert len(ours) == 4
    for a, b in zip(ours, (f1, f2, f3, f4)):
        assert torch.equal(a, b)
    assert torch.equal(ours[-1].flatten(1), net.embed(x))


def _class_mean_distance_by_hand(real, syn, classes):
    """distill.py criterion_middle with loops: per-class means, then the sum of squared differences."""
    total = 0.0
    nr, ns = len(real) // classes, len(syn) // classes
    for c in range(classes):
        for e in range(real[0].numel()):
            mr = sum(float(real[c * nr + i].flatten()[e]) for i in range(nr)) / nr
            ms = sum(float(syn[c * ns + k].flatten()[e]) for k in range(ns)) / ns
            total += (mr - ms) ** 2
    return total


def test_cafe_terms_equal_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    classes, nr, ns = 2, 3, 2
    shapes = [(2, 2, 2), (2, 1, 1)]  # two feature levels, the last one the trunk's output
    real = [torch.randn(classes * nr, *s, generator=g) for s in shapes]
    syn = [torch.randn(classes * ns, *s, generator=g) for s in shapes]
    weights, embed_w, inner_w, temp = [0.3, 2.0], 1.5, 0.01, 0.7
    terms = cafe_terms(real, syn, classes, weights, embed_w, inner_w, temp)

    layers = sum(w * _class_mean_distance_by_hand(r, s, classes) for w, r, s in zip(weights, real, syn))
    emb_r, emb_s = real[-1].flatten(1), syn[-1].flatten(1)
    embed = embed_w * _class_mean_distance_by_hand(emb_r, emb_s, classes)
    centres = [[sum(float(emb_s[c * ns + k, e]) for k in range(ns)) / ns for e in range(2)] for c in range(classes)]
    ce = 0.0  # distill.py line 289: CrossEntropyLoss(reduction='sum') of real embeddings . synthetic centres
    for i in range(classes * nr):
        logits = [sum(float(emb_r[i, e]) * centres[c][e] for e in range(2)) / temp for c in range(classes)]
        y = i // nr
        ce += -(logits[y] - math.log(sum(math.exp(v) for v in logits)))
    assert float(terms["layers"]) == pytest.approx(layers, rel=1e-5)
    assert float(terms["embed"]) == pytest.approx(embed, rel=1e-5)
    assert float(terms["discrimination"]) == pytest.approx(inner_w * ce, rel=1e-5)


def test_accuracy_watcher_folds_tests_as_the_official_running_value_and_spans_a_window():
    """distill.py lines 300-316: acc_test += sum_c acc_c; acc_test /= num_classes (never reset inside a loop)."""
    w = AccuracyWatcher(window=2)
    assert w.add(torch.tensor([1.0, 0.0])) is None          # (0 + 1) / 2 = 0.5
    assert w.add(torch.tensor([1.0, 1.0])) == pytest.approx(0.75)   # (0.5 + 2) / 2 = 1.25; span 0.75
    assert w.add(torch.tensor([0.0, 0.0])) == pytest.approx(0.625)  # 1.25 / 2 = 0.625; span over (1.25, 0.625)


def _cafe(mnist5k, **changes):
    hp = hparams.resolve("cafe", "mnist5k", 1, "quick")
    hp.update(batch_real=4, test_per_class=4, **changes)
    m = get_method("cafe")(hp, mnist5k, 1, torch.Generator().manual_seed(0), CPU)
    m.init()
    return m


def test_outer_loop_ends_after_a_full_window_of_stable_accuracy(mnist5k):
    """lambda_1 huge: the window's span is always below it, so the network is done after `window` image steps,
    each but the last followed by an inner loop; lambda_2 < 0: each inner loop ends after `window` epochs."""
    m = _cafe(mnist5k, window=3, lambda_1=1e9, lambda_2=-1.0, max_outer=None, max_inner=None)
    before = m.images.detach().clone()
    stats = m.step(0)
    assert stats["outer"] == 3 and stats["inner"] == 2 * 3
    assert not torch.equal(before, m.images.detach())


def test_loop_caps_and_the_image_lr_schedule(mnist5k):
    m = _cafe(mnist5k, window=10, max_outer=2, max_inner=1)
    stats = m.step(0)
    assert stats["outer"] == 2 and stats["inner"] == 1
    m.hp.update(lr_img=0.1, img_lr_milestones=[1200, 1600, 1800], img_lr_decay=0.5)  # distill.py lines 40-46
    assert [m.img_lr(it) for it in (0, 1199, 1200, 1600, 1999)] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.0125])


@pytest.mark.parametrize("method", ["cafe", "cafe-dream"])
def test_killed_cafe_run_resumes_to_the_same_images(mnist5k_path, tmp_path, method):
    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "cafe.yaml").read_text())
    doc["quick"].update(iterations=3, batch_real=4, test_per_class=4, window=2, max_outer=2, max_inner=1)
    (hp_dir / "methods" / "cafe.yaml").write_text(yaml.safe_dump(doc))
    doc = yaml.safe_load((hp_dir / "methods" / "cafe-dream.yaml").read_text())
    doc["quick"]["representative"].update(pool=8, every=1)  # re-clustered at every outer step
    (hp_dir / "methods" / "cafe-dream.yaml").write_text(yaml.safe_dump(doc))
    args = (method, "mnist5k", 1, 0, "quick", CPU, mnist5k_path)
    full = run(*args, tmp_path / "full.pt", hp_dir=hp_dir)
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=1, stop_after=2) is None
    resumed = run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=1)
    assert torch.equal(resumed.images, full.images)
