"""Import and export of distilled sets (ddflow.interop): each outside format, made here by our own code in that
format, round-trips into a ddflow record; bad input is an error naming the file or the config key."""
import numpy as np
import pytest
import torch

from ddflow.cli import main
from ddflow.data import get_info
from ddflow.data.zca import fit_zca
from ddflow.errors import DdflowError
from ddflow.interop.export import export_record
from ddflow.interop.imports import build_records, check_entry, settings_method
from ddflow.records import DistilledSet, load_distilled

INFO = get_info("mnist5k")
IPC = 2


def _pixels(seed=0, n=IPC):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(10 * n, 1, 28, 28, generator=g)
    y = torch.arange(10).repeat(n)              # class-interleaved, as some tools save them
    return x, y


def _normalized(x):
    return (x - INFO.mean[0]) / INFO.std[0]


def _class_order(x, y):
    order = torch.argsort(y, stable=True)
    return x[order], y[order]


def _import(tmp_path, *args):
    out = tmp_path / "rec" / "s{seed}.pt"
    assert main(["import", "--name", "outside", "--dataset", "mnist5k", "--ipc", str(IPC), "--out", str(out),
                 *args]) == 0
    return out


def test_plain_pt_and_npz_round_trip_through_export(tmp_path):
    x, y = _pixels()
    torch.save({"images": x, "labels": y, "lr": 0.02}, tmp_path / "set.pt")
    rec = load_distilled(str(_import(tmp_path, "--path", str(tmp_path / "set.pt"), "--format", "plain",
                                     "--space", "pixels", "--seed", "3")).replace("{seed}", "3"))
    xs, ys = _class_order(x, y)
    assert rec.method == "outside" and rec.seed == 3 and rec.space == "pixels" and rec.lr == 0.02
    assert torch.equal(rec.images, xs) and torch.equal(rec.labels, ys) and rec.labels.dtype == torch.int64
    assert settings_method(rec) == "dm"  # protocols default to dc unless the config gives an lr (or format mtt)

    for suffix in (".npz", ".pt"):
        plain = tmp_path / f"back{suffix}"
        assert main(["export", "--distilled", str(tmp_path / "rec" / "s3.pt"), "--out", str(plain)]) == 0
        entry = check_entry("back", {"path": str(plain), "format": "plain", "dataset": "mnist5k", "ipc": IPC,
                                     "space": "pixels"}, "quick")
        (again,) = build_records(entry, "quick")
        assert torch.equal(again.images, xs) and torch.equal(again.labels, ys) and again.lr == pytest.approx(0.02)


def test_mtt_images_best_labels_best_with_lr_file(tmp_path):
    x, y = _pixels(1)
    run = tmp_path / "logged_files" / "MNIST" / "run"
    run.mkdir(parents=True)
    torch.save(_normalized(x), run / "images_best.pt")     # distill.py line 242: image_syn, normalised space
    torch.save(y, run / "labels_best.pt")
    torch.save(torch.tensor(0.0123), tmp_path / "syn_lr.pt")
    out = _import(tmp_path, "--path", str(run), "--format", "mtt", "--space", "normalized",
                  "--lr", str(tmp_path / "syn_lr.pt"))
    rec = load_distilled(str(out).replace("{seed}", "0"))
    xs, ys = _class_order(x, y)
    assert rec.lr == pytest.approx(0.0123) and rec.space == "normalized" and settings_method(rec) == "mtt"
    assert torch.allclose(rec.to_pixels(), xs, atol=1e-6) and torch.equal(rec.labels, ys)
    with pytest.raises(DdflowError, match="learned lr"):   # protocol mtt without an lr
        build_records(check_entry("x", {"path": str(run), "format": "mtt", "dataset": "mnist5k", "ipc": IPC,
                                        "space": "normalized"}, "quick"), "quick")


def test_dc_result_file_gives_one_record_per_experiment(tmp_path):
    sets = [_pixels(s) for s in (2, 3)]
    # DC main.py line 225 / main_DM.py line 204: data = [[image_syn, label_syn], ...], accs as numpy floats
    path = tmp_path / "res_DM_MNIST_ConvNet_2ipc.pt"
    torch.save({"data": [[_normalized(x), y] for x, y in sets],
                "accs_all_exps": {"ConvNet": [np.float64(0.9), np.float64(0.91)]}}, path)
    out = _import(tmp_path, "--path", str(path), "--format", "dc", "--space", "normalized")
    for seed, (x, y) in enumerate(sets):
        rec = load_distilled(str(out).replace("{seed}", str(seed)))
        xs, ys = _class_order(x, y)
        assert rec.seed == seed and torch.allclose(rec.to_pixels(), xs, atol=1e-6) and torch.equal(rec.labels, ys)
        assert settings_method(rec) == "dm" and rec.extra["imported"]["experiment"] == seed
    with pytest.raises(DdflowError, match="names IPC 2"):
        check_entry("x", {"path": str(path), "format": "dc", "dataset": "mnist5k", "ipc": 3, "space": "normalized"},
                    "quick")


def test_png_folder_round_trip_and_soft_labels(tmp_path):
    x, y = _pixels(4)
    soft = torch.nn.functional.one_hot(y, 10).float() * 0.8 + 0.02
    rec = DistilledSet(images=_normalized(x), labels=soft, method="ead", dataset="mnist5k", ipc=IPC, seed=0,
                       mean=INFO.mean, std=INFO.std)
    export_record(rec, png_dir=tmp_path / "pngs")
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [str(c) for c in range(10)]
    entry = check_entry("pngs", {"path": str(tmp_path / "pngs"), "format": "png", "dataset": "mnist5k",
                                 "ipc": IPC, "space": "pixels"}, "quick")
    (back,) = build_records(entry, "quick")
    xs, ys = _class_order(x, y)
    assert (back.images - xs).abs().max() <= 0.5 / 255 + 1e-6 and torch.equal(back.labels, ys)
    export_record(rec, out=tmp_path / "soft.pt")     # exact: in the record's own (normalised) space
    soft_entry = check_entry("soft", {"path": str(tmp_path / "soft.pt"), "format": "plain", "dataset": "mnist5k",
                                      "ipc": IPC, "space": "normalized", "protocols": ["soft"]}, "quick")
    (again,) = build_records(soft_entry, "quick")
    assert again.soft_labels and settings_method(again) == "ead"
    assert torch.allclose(again.labels, soft[torch.argsort(y, stable=True)])


def _wide_record(seed=6):
    """A normalised DM-like set whose values lie well outside [0, 1] pixels (as real distilled sets do)."""
    x, y = _class_order(*_pixels(seed))
    x = _normalized(x * 3.0 - 1.0)                 # pixels in [-1, 2]: about 2/3 of them outside [0, 1]
    return DistilledSet(images=x, labels=y, method="dm", dataset="mnist5k", ipc=IPC, seed=0, mean=INFO.mean,
                        std=INFO.std, lr=0.05)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_export_is_exact_by_default_and_round_trips_to_identical_tensors(tmp_path, suffix, caplog):
    rec = _wide_record()
    path = tmp_path / "rec.pt"
    rec.save(path)
    out = tmp_path / f"set{suffix}"
    with caplog.at_level("WARNING", logger="ddflow"):
        assert main(["export", "--distilled", str(path), "--out", str(out)]) == 0
    assert "clipped" not in caplog.text                 # nothing is clipped, so nothing to warn about
    back = load_distilled(str(_import(tmp_path, "--path", str(out), "--format", "plain", "--space", "normalized",
                                      "--seed", "0")).replace("{seed}", "0"))
    assert torch.equal(back.images, rec.images) and torch.equal(back.labels, rec.labels) and back.lr == rec.lr
    with pytest.raises(DdflowError, match="states space 'normalized'"):   # the file says which space it is in
        build_records(check_entry("x", {"path": str(out), "format": "plain", "dataset": "mnist5k", "ipc": IPC,
                                        "space": "pixels"}, "quick"), "quick")


def test_zca_set_exports_exactly_with_its_whitening_beside(tmp_path):
    x, y = _class_order(*_pixels(7))
    zca = fit_zca(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(9)), "kornia")
    rec = DistilledSet(images=zca.apply(x), labels=y, method="mtt", dataset="mnist5k", ipc=IPC, seed=0,
                       mean=INFO.mean, std=INFO.std, space="zca", zca=zca.state_dict())
    export_record(rec, out=tmp_path / "z.npz")
    entry = check_entry("z", {"path": str(tmp_path / "z.npz"), "format": "plain", "dataset": "mnist5k", "ipc": IPC,
                              "space": "zca", "zca": str(tmp_path / "z.zca.pt")}, "quick")
    (back,) = build_records(entry, "quick")
    assert torch.equal(back.images, rec.images) and torch.equal(back.zca["transform"], rec.zca["transform"])


def test_lossy_exports_warn_with_the_fraction_clipped(tmp_path, caplog):
    rec = _wide_record()
    pixels = rec.to_normalized() * INFO.std[0] + INFO.mean[0]
    fraction = float(((pixels < 0) | (pixels > 1)).float().mean())
    assert 0.5 < fraction < 0.8
    with caplog.at_level("WARNING", logger="ddflow"):
        export_record(rec, png_dir=tmp_path / "pngs")
    assert f"{100 * fraction:.1f} % of the values" in caplog.text and "clipped" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ddflow"):
        export_record(rec, out=tmp_path / "px.pt", space="pixels")
    assert f"{100 * fraction:.1f} % of the values" in caplog.text
    saved = torch.load(tmp_path / "px.pt")
    assert saved["space"] == "pixels" and saved["images"].min() >= 0 and saved["images"].max() <= 1
    with pytest.raises(DdflowError, match="allowed: native, pixels"):
        export_record(rec, out=tmp_path / "bad.pt", space="bytes")


def test_zca_space_with_a_state_file(tmp_path):
    x, y = _pixels(5)
    zca = fit_zca(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(9)), "kornia")
    torch.save(zca.state_dict(), tmp_path / "zca.pt")
    torch.save({"images": zca.apply(x), "labels": y}, tmp_path / "z.pt")
    entry = check_entry("z", {"path": str(tmp_path / "z.pt"), "format": "plain", "dataset": "mnist5k", "ipc": IPC,
                              "space": "zca", "zca": str(tmp_path / "zca.pt")}, "quick")
    (rec,) = build_records(entry, "quick")
    assert rec.space == "zca" and torch.allclose(rec.to_pixels(), _class_order(x, y)[0], atol=1e-4)


@pytest.mark.parametrize("images, labels, space, message", [
    (torch.rand(20, 3, 28, 28), None, "pixels", "images of shape"),
    (torch.rand(20, 1, 28, 28), torch.arange(10).repeat(2) % 9, "pixels", "per class"),
    (torch.rand(30, 1, 28, 28), torch.arange(10).repeat(3), "pixels", "need 2 per class"),
    (torch.full((20, 1, 28, 28), float("nan")), None, "pixels", "NaN"),
    (torch.rand(20, 1, 28, 28) * 255, None, "pixels", "not \\[0, 1\\] pixels"),
    (torch.rand(20, 1, 28, 28), None, "normalized", "look like pixels"),
    (torch.rand(20, 1, 28, 28), torch.arange(10).repeat(2) + 1, "pixels", "classes 0..9"),
])
def test_bad_sets_are_errors_naming_the_file(tmp_path, images, labels, space, message):
    path = tmp_path / "bad.pt"
    torch.save({"images": images, "labels": torch.arange(10).repeat(2) if labels is None else labels}, path)
    entry = check_entry("bad", {"path": str(path), "format": "plain", "dataset": "mnist5k", "ipc": IPC,
                                "space": space}, "quick")
    with pytest.raises(DdflowError, match=message) as e:
        build_records(entry, "quick")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("change, message", [
    ({"format": "tfrecord"}, "imports.bad.format"),
    ({"colour": 1}, "unknown keys"),
    ({"path": "/nonexistent.pt"}, "imports.bad.path"),
    ({"space": "zca"}, "imports.bad.zca"),
    ({"protocols": ["nope"]}, "imports.bad.protocols"),
    ({"eval_as": "nope"}, "imports.bad.eval_as"),
    ({"ipc": 0}, "imports.bad.ipc"),
])
def test_config_entry_errors_name_the_key(tmp_path, change, message):
    (tmp_path / "set.pt").write_bytes(b"")
    entry = {"path": str(tmp_path / "set.pt"), "format": "plain", "dataset": "mnist5k", "ipc": IPC,
             "space": "pixels", **change}
    with pytest.raises(DdflowError, match=message):
        check_entry("bad", entry, "quick")
    with pytest.raises(DdflowError, match="registered method"):
        check_entry("dm", {k: v for k, v in entry.items() if k != "colour"}, "quick")


def test_normalized_sets_use_the_statistics_eval_as_normalises_with(tmp_path):
    (tmp_path / "images_best.pt").write_bytes(b"")
    base = {"path": str(tmp_path), "format": "mtt", "ipc": 1, "space": "normalized", "lr": 0.01}
    # MTT utils.py get_dataset: CIFAR-100 normalised with CIFAR-10's mean/std (workflow/hparams/methods/mtt.yaml)
    assert check_entry("m", {**base, "dataset": "cifar100"}, "paper").normalize_as == "cifar10"
    assert check_entry("m", {**base, "dataset": "cifar10"}, "paper").normalize_as is None
    assert check_entry("m", {**base, "dataset": "cifar100", "normalize_as": None}, "paper").normalize_as is None
    with pytest.raises(DdflowError, match="imports.m.normalize_as"):
        check_entry("m", {**base, "dataset": "cifar100", "normalize_as": "mnist"}, "paper")


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _png_folders(root, names, extra=None):
    from PIL import Image

    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(IPC):
            Image.fromarray(np.full((28, 28), 10 * WORDS.index(name) if name in WORDS else int(name), np.uint8)).save(
                root / name / f"{i}.png")
    for rel, text in (extra or {}).items():
        (root / rel).write_text(text)


def _png_entry(root, **more):
    return {"path": str(root), "format": "png", "dataset": "mnist5k", "ipc": IPC, "space": "pixels", **more}


def test_png_word_folders_are_an_error_unless_their_classes_are_given(tmp_path):
    _png_folders(tmp_path / "words", WORDS)
    # sorted order would make 'eight' class 0: refused, naming the folder and what is allowed
    with pytest.raises(DdflowError, match=r"class folder 'eight' is not a class index; name the folders 0, 1, 2.*"
                                          r"classes"):
        build_records(check_entry("w", _png_entry(tmp_path / "words"), "quick"), "quick")
    (rec,) = build_records(check_entry("w", _png_entry(tmp_path / "words", classes=WORDS), "quick"), "quick")
    assert torch.equal(rec.labels, torch.arange(10).repeat_interleave(IPC))
    assert torch.allclose(rec.images[rec.labels == 8], torch.full((IPC, 1, 28, 28), 80 / 255))   # 'eight' = 8
    out = tmp_path / "rec" / "s{seed}.pt"                  # the same from the command line
    assert main(["import", "--name", "w", "--dataset", "mnist5k", "--ipc", str(IPC), "--out", str(out), "--path",
                 str(tmp_path / "words"), "--format", "png", "--space", "pixels", "--classes", *WORDS]) == 0
    with pytest.raises(DdflowError, match="the 10 class folder names of mnist5k"):
        check_entry("w", _png_entry(tmp_path / "words", classes=WORDS[:9]), "quick")
    with pytest.raises(DdflowError, match="only format png"):
        check_entry("w", {**_png_entry(tmp_path / "words", classes=WORDS), "format": "plain"}, "quick")


@pytest.mark.parametrize("extra, message", [
    ({"3/notes.txt": "x"}, r"notes.txt: not PNG files; a class folder holds only"),
    ({"3/fake.png": "not an image"}, r"fake.png: not a readable PNG"),
    ({"README.md": "x"}, r"README.md: not a class folder"),
])
def test_png_folder_with_files_that_are_not_images_is_an_error(tmp_path, extra, message):
    _png_folders(tmp_path / "set", [str(c) for c in range(10)], extra)
    with pytest.raises(DdflowError, match=message):
        build_records(check_entry("p", _png_entry(tmp_path / "set"), "quick"), "quick")


def test_an_import_joins_the_accuracy_tables_of_its_dataset_by_default(tmp_path):
    from pathlib import Path

    from ddflow.config import check_imports

    papers = Path(__file__).resolve().parents[1] / "workflow" / "papers"
    x, y = _pixels()
    torch.save({"images": x, "labels": y}, tmp_path / "set.pt")
    entry = {"path": str(tmp_path / "set.pt"), "format": "plain", "dataset": "mnist5k", "ipc": IPC, "space": "pixels"}
    tables = ["dream_t1", "dream_t2", "ead_claims", "isa_t6", "ead_baselines", "isa_t8"]
    grid = {"datasets": ["mnist5k"], "ipcs": [1, IPC], "tables": tables}

    def joined(imports, grid=grid):
        checked = check_imports({"preset": "quick", "imports": imports}, grid, None, papers)
        return {n: e.tables for n, e in checked.items()}

    # not ISA's Table 6 (FRePo/ISA under ori and KRR) nor EAD's claims: one paper's own tables
    assert joined({"a": entry}) == {"a": ["dream_t1", "ead_baselines"]}
    # another dataset than the configured columns: no table by default (its row would be empty)
    assert joined({"a": entry}, {**grid, "datasets": ["cifar10"]}) == {"a": []}
    assert joined({"a": {**entry, "tables": ["isa_t6"]}}) == {"a": ["isa_t6"]}      # named: joins exactly those
    with pytest.raises(DdflowError, match="imports.a.tables: 'dream_t2' is not a configured table of kind cells"):
        joined({"a": {**entry, "tables": ["dream_t2"]}})
    bad = tmp_path / "papers"
    bad.mkdir()
    (bad / "dream_t1.yaml").write_text((papers / "dream_t1.yaml").read_text().replace("imports: true", "imports: yes!"))
    with pytest.raises(DdflowError, match=r"dream_t1.yaml: imports = 'yes!'; true or false"):
        check_imports({"preset": "quick", "imports": {"a": entry}}, {**grid, "tables": ["dream_t1"]}, None, bad)


def test_export_states_its_normalisation_and_import_checks_it(tmp_path):
    """A CIFAR-100 set normalised with CIFAR-10's statistics (as MTT makes them) round-trips only when the import
    normalises as CIFAR-10 too; otherwise the stated mean/std stop it."""
    c10, c100 = get_info("cifar10"), get_info("cifar100")
    x = torch.randn(100, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    rec = DistilledSet(images=x, labels=torch.arange(100), method="mtt", dataset="cifar100", ipc=1, seed=0,
                       mean=c10.mean, std=c10.std, lr=0.01)
    export_record(rec, out=tmp_path / "c100.npz")
    entry = {"path": str(tmp_path / "c100.npz"), "format": "plain", "dataset": "cifar100", "ipc": 1,
             "space": "normalized", "eval_as": "dm"}
    assert c10.mean != c100.mean
    with pytest.raises(DdflowError, match="normalised with mean .*give the dataset whose statistics it used"):
        build_records(check_entry("c", entry, "quick"), "quick")
    (back,) = build_records(check_entry("c", {**entry, "normalize_as": "cifar10"}, "quick"), "quick")
    assert torch.equal(back.images, rec.images) and tuple(back.mean) == tuple(c10.mean)


def test_the_config_schema_states_the_import_entry_that_check_entry_checks(tmp_path):
    """Snakemake validates config.yaml's imports against workflow/schemas/config.schema.yaml, `ddflow import` and
    `ddflow evaluate` go through check_entry only: both state the same keys, required keys, formats and spaces, and
    an entry made from command-line options (options_entry) is one check_entry accepts."""
    from pathlib import Path

    import yaml

    from ddflow.interop.imports import KEYS, REQUIRED, options_entry
    from ddflow.interop.readers import FORMATS
    from ddflow.records import SPACES

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    item = schema["properties"]["imports"]["additionalProperties"]
    assert set(item["properties"]) == set(KEYS) and set(item["required"]) == set(REQUIRED)
    assert set(item["properties"]["format"]["enum"]) == set(FORMATS)
    assert set(item["properties"]["space"]["enum"]) == set(SPACES)
    x, y = _pixels()
    torch.save({"images": x, "labels": y}, tmp_path / "set.pt")
    entry = options_entry(str(tmp_path / "set.pt"), "plain", "mnist5k", IPC, "pixels", lr=None, eval_as="dm")
    assert entry == {"path": str(tmp_path / "set.pt"), "format": "plain", "dataset": "mnist5k", "ipc": IPC,
                     "space": "pixels", "eval_as": "dm", "seed": 0}
    assert check_entry("mine", entry, "quick").seeds == [0]
    assert "seed" not in options_entry("run.pkl", "dc", "mnist5k", IPC, "normalized", seed=3)
