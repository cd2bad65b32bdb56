"""Label regimes and augmentation variants of the protocols (ddflow.protocols.regimes): teacher labels against a
direct computation, SRe2L's KL loss, the hard-label override of a learned-label set, a variant's settings, and the
robust scores read from real variant cells."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from ddflow import hparams
from ddflow.data import get_info
from ddflow.errors import DdflowError
from ddflow.nets import build_net
from ddflow.protocols import PROTOCOLS, evaluate_cell, protocol_settings, regimes
from ddflow.protocols.registry import needs_validation
from ddflow.records import DistilledSet
from ddflow.report.robust import build_robust
from ddflow.seeding import generator
from ddflow.train import NetStack, TrainSettings, train_stack

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
INFO = get_info("mnist5k")
TINY_DC = {"net": "ConvNetW32", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "batch": 256, "epochs": 1,
           "augment": "none", "strategy": "none", "batching": "loop", "models": 1}
TEACHER = {"net": "ConvNetW32", "temperature": 3.0, "per_batch": False}


def _set(x, labels, method="frepo", **kw) -> DistilledSet:
    return DistilledSet(images=x, labels=labels, method=method, dataset="mnist5k", ipc=len(x) // 10, seed=0,
                        mean=INFO.mean, std=INFO.std, **kw)


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net("ConvNetW32", INFO.channels, INFO.classes, INFO.size).eval()


def test_variants_are_protocols_of_the_bases_that_admit_them():
    assert {"soft-hard", "mtt-hard", "frepo-hard", "ld-hard", "dc-teacher", "soft-teacher", "dc-aug",
            "dc-noaug", "frepo-noaug"} <= set(PROTOCOLS)
    assert "dc-hard" not in PROTOCOLS and "idc-aug" not in PROTOCOLS and "rcig-aug" not in PROTOCOLS
    assert needs_validation("ld-hard") and needs_validation("rfad-nn-hard") and not needs_validation("dc-aug")
    assert regimes.display("frepo", True) == "frepo · learned" and regimes.display("dc", False) == "dc · hard"
    assert regimes.display("frepo-hard", True) == "frepo-hard · hard"
    assert regimes.display("dc-teacher", False) == "dc-teacher · teacher"


def test_teacher_labels_are_the_softmax_at_temperature_computed_once_and_stored(random_real):
    data = random_real(2)
    rec = _set(data.x_train[:20], data.y_train[:20], method="dm")
    net = _teacher()
    with torch.no_grad():
        direct = F.softmax(net(rec.images) / 3.0, -1)
    assert torch.allclose(regimes.teacher_probabilities(net, rec.images, 3.0, chunk=7), direct, atol=1e-6)
    settings = {**TINY_DC, "labels": "teacher", "teacher": TEACHER}
    cell = evaluate_cell(rec, "dc-teacher", settings, data, CPU, ("t", 0), teacher=net)
    used = cell["labels_used"]
    assert used["regime"] == "teacher" and used["temperature"] == 3.0 and used["per_batch"] is False
    assert torch.allclose(torch.tensor(used["labels"]), direct, atol=1e-5)
    assert cell["protocol"] == "dc-teacher" and len(cell["accuracies"]) == 1
    with pytest.raises(DdflowError, match="teacher"):
        evaluate_cell(rec, "dc-teacher", settings, data, CPU, ("t", 0))
    # per batch (SRe2L train_KD.py line 213): the teacher labels each DSA-augmented batch it trains on
    calls = []
    net.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    per_batch = {**settings, "augment": "dsa", "strategy": INFO.strategy("auto"),
                 "teacher": {**TEACHER, "per_batch": True}}
    cell = evaluate_cell(rec, "soft-teacher", per_batch, data, CPU, ("t", 0), teacher=net)
    assert cell["labels_used"]["per_batch"] is True and len(cell["accuracies"]) == 1
    assert calls == [(20, 1, 28, 28), (20, 1, 28, 28), (20, 1, 28, 28)]   # the stored labels, then 2 epochs' batches


def test_kl_loss_is_sre2l_batchmean_kl_per_model():
    # SRe2L validate/train_KD.py lines 200, 215-219: KLDivLoss('batchmean')(log_softmax(out / T), softmax(t / T))
    g = torch.Generator().manual_seed(0)
    logits, t = torch.randn(2, 5, 10, generator=g), torch.randn(2, 5, 10, generator=g)
    p = F.softmax(t / 3.0, -1)
    ours = regimes.kl_loss(3.0)(logits, p)
    ref = [torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(logits[k] / 3.0, -1), p[k]) for k in range(2)]
    assert torch.allclose(ours, torch.stack(ref), atol=1e-6)


def test_per_batch_teacher_labels_each_augmented_batch(random_real):
    data = random_real(1)
    seen = []

    def targets(xb):   # the teacher's view: the batch each model trains on, after augmentation
        seen.append(xb.clone())
        return torch.full((*xb.shape[:2], 10), 0.1)

    def loss(logits, y):
        assert torch.equal(y, torch.full((*logits.shape[:2], 10), 0.1))
        return logits.sum((-1, -2)) * 0

    template = build_net("ConvNetW32", 1, 10, 28)
    gens = [generator("pb", 0)]
    stack = NetStack(template, gens, CPU, "loop")
    train_stack(stack, data.x_train, data.y_train, gens, TrainSettings(epochs=2, batch=4), loss_fn=loss,
                targets=targets)
    assert len(seen) == 2 * 3 and seen[0].shape == (1, 4, 1, 28, 28)


def test_hard_override_of_a_learned_label_set(random_real, monkeypatch):
    data = random_real(1)
    learned = F.softmax(torch.randn(10, 10, generator=torch.Generator().manual_seed(1)) * 4, -1)
    rec = _set(data.x_train, learned)
    got = {}

    def spy(name):
        def fn(record, data, settings, generators, device):
            got[name] = record.labels.clone()
            return [50.0]
        return fn

    for base in ("soft", "frepo"):
        monkeypatch.setitem(PROTOCOLS, base, spy(base))
    accs, used = regimes.evaluate("frepo-hard", rec, data, {"models": 1}, [generator("h", 0)], CPU)
    assert accs == [50.0] and used == {"regime": "hard", "classes": learned.argmax(1).tolist()}
    assert torch.equal(got["frepo"], learned.argmax(1))            # class indices: frepo makes its one-hot targets
    regimes.evaluate("soft-hard", rec, data, {"models": 1}, [generator("h", 0)], CPU)
    assert torch.equal(got["soft"], F.one_hot(learned.argmax(1), 10).float())   # soft trains on (N, C) rows
    cell = evaluate_cell(rec, "frepo", {"models": 1}, data, CPU, ("h", 0))
    assert cell["labels_used"] == {"regime": "learned"}


def test_variant_settings_resolve_from_the_base_and_the_stage_file():
    dc = protocol_settings("dm", "mnist5k", 1, "quick", "dc")
    quick = regimes.load_settings("mnist5k", 1, "quick")
    noaug = protocol_settings("dm", "mnist5k", 1, "quick", "dc-noaug")
    assert noaug == {**dc, **quick["cell_settings"], "augment": "none"}
    aug = protocol_settings("random", "mnist5k", 1, "quick", "dc-aug")
    assert aug["augment"] == "dsa" and aug["strategy"] == INFO.strategy("auto")      # Random's own is DC's 'dc'
    assert protocol_settings("frepo", "mnist5k", 1, "quick", "frepo-noaug")["augment"] is False
    assert protocol_settings("frepo", "mnist5k", 1, "quick", "frepo-aug")["augment"] is True
    teacher = protocol_settings("ead", "mnist5k", 1, "paper", "soft-teacher")
    assert teacher["labels"] == "teacher" and teacher["teacher"] == {"net": "ConvNet", "temperature": 3.0,
                                                                     "per_batch": False}
    paper = protocol_settings("ead", "mnist5k", 1, "paper", "soft-hard")
    assert paper == {**protocol_settings("ead", "mnist5k", 1, "paper", "soft"), "labels": "hard"}


def test_bad_regimes_file_is_a_clear_error(tmp_path):
    import shutil
    shutil.copytree(hparams.hparams_dir(), tmp_path / "hp")
    path = tmp_path / "hp" / "stages" / "regimes.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["paper"]["teacher"]["temperature"] = 0
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(DdflowError, match="regimes.yaml.*teacher.temperature"):
        protocol_settings("ead", "mnist5k", 1, "paper", "soft-teacher", tmp_path / "hp")
    doc["paper"]["teacher"]["temperature"] = 3.0
    doc["paper"]["mixup"] = True
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(DdflowError, match="unknown key.*mixup"):
        protocol_settings("dm", "mnist5k", 1, "paper", "dc-aug", tmp_path / "hp")


def test_robust_scores_from_real_variant_cells(random_real, tmp_path):
    data = random_real(2)
    sets = {"dm": _set(data.x_train[:10] + 0.1, data.y_train[:10], method="dm"),
            "random": _set(data.x_train[10:20], data.y_train[10:20], method="random"),
            "whole": _set(data.x_train, data.y_train, method="whole")}
    sets["whole"].ipc = 0
    paths = []
    for protocol, methods in (("dc", ("dm", "random", "whole")), ("dc-aug", ("dm", "random")),
                              ("dc-noaug", ("dm", "random"))):
        for m in methods:
            settings = {**TINY_DC, "augment": "dsa", "strategy": INFO.strategy("auto")} if protocol == "dc-aug" \
                else TINY_DC
            cell = evaluate_cell(sets[m], protocol, settings, data, CPU, (protocol, m))
            paths.append(tmp_path / f"{protocol}-{m}.json")
            paths[-1].write_text(json.dumps(cell))
    df = build_robust(paths, {"dm": "dc", "random": "dc"}, {})
    dm = df[df.method == "dm"].iloc[0]
    acc = {(json.loads(p.read_text())["protocol"], json.loads(p.read_text())["method"]):
           json.loads(p.read_text())["mean"] / 100 for p in paths}
    assert dm.missing == "" and dm.lrs == dm.lrs and dm.ars == dm.ars
    assert dm.hlr == pytest.approx(acc[("dc", "whole")] - acc[("dc", "dm")])
    assert dm.syn_aug == pytest.approx(acc[("dc-aug", "dm")]) and dm.random_no_aug == pytest.approx(
        acc[("dc-noaug", "random")])   # both variant cells made: ARS reads them, not the plain dc cell
