"""Readers of distilled sets made by other code, each returning the raw sets it holds: a list (one per experiment,
i.e. seed) of `RawSet` (images, labels, learned lr or None), unchecked; ddflow.interop.imports checks and converts.

Formats:
- `plain`: a `.pt` (a dict) or `.npz` holding `images` (N, C, H, W) and `labels` ((N,) classes or (N, classes)
  soft labels), optionally `lr` (a learned evaluation lr); `x` / `y` are accepted for images / labels.
- `mtt`: what GeorgeCazenavette/mtt-distillation distill.py saves (lines 238-243 at commit 50dccea):
  `images_best.pt` and `labels_best.pt` in its run folder (`path` = the folder or the images file), the images in the
  space it distilled in (the dataset's normalisation, or ZCA with --zca). The learned lr is only logged to wandb
  ('Synthetic_LR', line 292), so it comes from the config (`lr`: a number or a .pt file holding one).
- `dc`: what VICO-UoE/DatasetCondensation main.py (line 225) and main_DM.py (line 204) save:
  `res_{method}_{dataset}_{model}_{ipc}ipc.pt` = {'data': [[image_syn, label_syn], ...] one pair per experiment,
  'accs_all_exps': {...}}, images in the dataset's normalisation (utils.py get_dataset's mean/std).
- `rfad`: what yolky/RFAD distillation.py saves as best.npz (line 146; the released
  distilled_images_final/cifar10/{1,10,50}/best.npz): `images` (N, C, H, W) in the space it distilled in (the
  dataset standardised per channel, then RFAD's ZCA on CIFAR/SVHN), `labels` (N, classes) regression targets (one_hot -
  1/C, or learned), the Platt log-temperature `k` and the regulariser `jit` (kept in the record's extras).
- `png`: a folder with one subfolder per class, each holding only that class's images as PNG files (pixels). The
  subfolders are named by class index (0, 1, ...), or by any names given in class order (`classes`); any other
  name, file or non-PNG file is an error (names are never taken in sorted order: 'eight' is not class 0).
- `kip`: KIP's released sets (google-research kip/dataset.ipynb: "Datasets are stored as .npz files. They have keys
  'images' and 'labels'"; nn_training.ipynb load_kip_data reads them): `images` (N, H, W, C) channels last, in KIP's
  ZCA space for the 'zca' files (import with space zca, zca kip) or the channel standardisation for 'nozca' files
  (space normalized); `labels` (N, classes): one_hot - 1/C, or learned ('l' files), kept as regression targets.
- `rtp`: RTP's saved memories (`saves/imgs_embedding_basis_minibatch_{dataset}_compressor.pt`, read_rtp), decoded
  into one image per addressing row, labelled by class; the import's IPC is RTP's float budget.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DdflowError

FORMATS = ("plain", "mtt", "dc", "png", "rfad", "kip", "rtp")
DC_NAME = re.compile(r"^res_(?P<method>[A-Za-z0-9]+)_(?P<dataset>[A-Za-z0-9]+)_(?P<model>[A-Za-z0-9]+)_(?P<ipc>\d+)ipc"
                     r"\.pt$")
MTT_IMAGES, MTT_LABELS = "images_best.pt", "labels_best.pt"


@dataclass
class RawSet:
    images: torch.Tensor
    labels: torch.Tensor
    lr: float | None = None
    space: str | None = None    # the space the file states (a ddflow export writes it), checked against the import's
    mean: tuple[float, ...] | None = None   # the normalisation the file states it was made with (a ddflow export)
    std: tuple[float, ...] | None = None
    extra: dict = field(default_factory=dict)   # what the file holds beyond the set (RFAD's k and jit)


def load_foreign_pt(path: str | Path) -> object:
    """torch.load(weights_only=True) of another code's file. DC's `accs_all_exps` holds numpy float64 scalars,
    which the safe loader refuses; those (and only those numpy types) are allowed on a second try."""
    path = Path(path)
    if not path.is_file():
        raise DdflowError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:
        numpy_types = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32))]
        core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
        scalar = core.multiarray.scalar
        try:
            with torch.serialization.safe_globals([scalar, *numpy_types]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise DdflowError(f"{path}: cannot read it as a PyTorch file ({type(first).__name__}: {first})") from None


def _tensor(v, path: Path, key: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    raise DdflowError(f"{path}: {key!r} is a {type(v).__name__}, not a tensor or array")


def read_lr(value, where: str) -> float | None:
    """A learned lr given as a number, or as a .pt file holding a scalar tensor or number."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    obj = load_foreign_pt(value)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return float(obj.reshape(()))
    if isinstance(obj, (int, float)):
        return float(obj)
    raise DdflowError(f"{where}: {value} holds a {type(obj).__name__}, not a single learned lr")


def read_plain(path: Path) -> list[RawSet]:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DdflowError(f"{path}: cannot read it as an .npz ({e})") from None
    elif path.suffix == ".pt":
        obj = load_foreign_pt(path)
    else:
        raise DdflowError(f"{path}: format 'plain' reads a .pt or .npz file")
    if not isinstance(obj, dict):
        raise DdflowError(f"{path}: a plain distilled set is a dict with 'images' and 'labels', "
                          f"got {type(obj).__name__}")
    keys = {}
    for key, alias in (("images", "x"), ("labels", "y")):
        k = key if key in obj else alias if alias in obj else None
        if k is None:
            raise DdflowError(f"{path}: lacks {key!r} (or {alias!r}); keys: {', '.join(map(str, obj))}")
        keys[key] = _tensor(obj[k], path, k)
    lr = obj.get("lr")
    if isinstance(lr, (torch.Tensor, np.ndarray)):
        lr = float(np.asarray(lr).reshape(())) if np.asarray(lr).size == 1 else lr
    if lr is not None and not isinstance(lr, (int, float)):
        raise DdflowError(f"{path}: 'lr' must be one number")
    space = obj.get("space")
    space = str(np.asarray(space).reshape(())) if isinstance(space, (str, np.ndarray)) else None
    stats = [obj.get(k) for k in ("mean", "std")]
    try:
        mean, std = [None if v is None else tuple(float(f) for f in np.asarray(v).reshape(-1)) for v in stats]
    except (TypeError, ValueError):
        raise DdflowError(f"{path}: 'mean' / 'std' must be numbers (one per channel)") from None
    return [RawSet(keys["images"], keys["labels"], None if lr is None else float(lr), space, mean, std)]


def read_mtt(path: Path) -> list[RawSet]:
    folder = path if path.is_dir() else path.parent
    images, labels = folder / MTT_IMAGES, folder / MTT_LABELS
    if path.is_file() and path.name != MTT_IMAGES:
        raise DdflowError(f"{path}: format 'mtt' reads {MTT_IMAGES} and {MTT_LABELS} (give their folder)")
    x, y = load_foreign_pt(images), load_foreign_pt(labels)
    return [RawSet(_tensor(x, images, "images"), _tensor(y, labels, "labels"))]


def read_dc(path: Path) -> list[RawSet]:
    obj = load_foreign_pt(path)
    if not isinstance(obj, dict) or "data" not in obj:
        raise DdflowError(f"{path}: not a DC/DSA/DM result file (a dict with 'data': [[images, labels], ...])")
    data = obj["data"]
    if not isinstance(data, (list, tuple)) or not data:
        raise DdflowError(f"{path}: 'data' must be a non-empty list of [images, labels] pairs")
    out = []
    for i, pair in enumerate(data):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DdflowError(f"{path}: data[{i}] is not an [images, labels] pair")
        out.append(RawSet(_tensor(pair[0], path, f"data[{i}][0]"), _tensor(pair[1], path, f"data[{i}][1]")))
    return out


def read_rfad(path: Path) -> list[RawSet]:
    try:
        with np.load(path, allow_pickle=False) as z:
            obj = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DdflowError(f"{path}: cannot read it as RFAD's best.npz ({e})") from None
    missing = [k for k in ("images", "labels") if k not in obj]
    if missing:
        raise DdflowError(f"{path}: RFAD's best.npz holds images and labels; {missing} missing (keys: "
                          f"{', '.join(obj)})")
    labels = obj["labels"]
    if labels.ndim != 2:
        raise DdflowError(f"{path}: RFAD's labels are (N, classes) targets, got shape {labels.shape}")
    extra = {f"rfad_{k}": float(np.asarray(obj[k]).reshape(())) for k in ("k", "jit", "valid_loss") if k in obj}
    if "rfad_k" in extra:
        extra["rfad_log_temp"] = extra.pop("rfad_k")
    return [RawSet(_tensor(obj["images"], path, "images"), _tensor(labels, path, "labels").float(), extra=extra)]


def dc_file_fields(path: str | Path) -> dict[str, str] | None:
    """method, dataset, model, ipc from a DC result file's name (None when the name is not DC's pattern)."""
    m = DC_NAME.match(Path(path).name)
    return m.groupdict() if m else None


def _class_folders(path: Path, classes: list[str] | None) -> list[tuple[int, Path]]:
    """(class, folder) of a PNG set: folders named by class index, or named in `classes` (folder classes[i] holds
    class i). Hidden entries (a leading '.') are skipped; any other file or folder is an error."""
    entries = sorted((e for e in path.iterdir() if not e.name.startswith(".")), key=lambda e: e.name)
    stray = [e.name for e in entries if not e.is_dir()]
    if stray:
        raise DdflowError(f"{path}: {', '.join(stray[:5])}: not a class folder; a PNG set holds only one folder of "
                          "PNG files per class")
    if classes is not None:
        names = {e.name: e for e in entries}
        unmapped = sorted(set(names) - set(classes))
        missing = [c for c in classes if c not in names]
        if unmapped or missing:
            raise DdflowError(f"{path}: class folders {unmapped or ''} are not in the given classes, "
                              f"classes {missing or ''} have no folder (classes: {', '.join(classes)})")
        return [(i, names[c]) for i, c in enumerate(classes)]
    named = [e.name for e in entries if not (e.name.isascii() and e.name.isdigit())]
    if named:
        raise DdflowError(f"{path}: class folder {named[0]!r} is not a class index; name the folders 0, 1, 2, ... "
                          f"by class, or give the folder names in class order (import key `classes`, option "
                          f"--classes){'' if len(named) == 1 else f' ({len(named)} such folders)'}")
    return sorted(((int(e.name), e) for e in entries), key=lambda ce: ce[0])


def read_png(path: Path, channels: int, classes: list[str] | None = None) -> list[RawSet]:
    from PIL import Image

    if not path.is_dir():
        raise DdflowError(f"{path}: format 'png' reads a folder with one subfolder of PNGs per class")
    xs, ys = [], []
    for c, d in _class_folders(path, classes):
        files = sorted(f for f in d.iterdir() if not f.name.startswith("."))
        others = [f.name for f in files if f.suffix.lower() != ".png" or not f.is_file()]
        if others:
            raise DdflowError(f"{d}: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}: not PNG files; a "
                              "class folder holds only that class's images as .png files")
        for f in files:
            try:
                with Image.open(f) as im:
                    if im.format != "PNG":
                        raise OSError(f"a {im.format} image named .png")
                    a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
            except OSError as e:
                raise DdflowError(f"{f}: not a readable PNG ({e})") from None
            xs.append(torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy()))
            ys.append(c)
    if not xs:
        raise DdflowError(f"{path}: no PNG files in class subfolders")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise DdflowError(f"{path}: PNGs of different sizes {sorted(shapes)}")
    return [RawSet(torch.stack(xs), torch.tensor(ys, dtype=torch.int64))]


def read_kip(path: Path) -> list[RawSet]:
    if path.suffix != ".npz":
        raise DdflowError(f"{path}: format 'kip' reads KIP's .npz files (keys 'images', 'labels')")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise DdflowError(f"{path}: a KIP set lacks {missing}; keys: {', '.join(z.files)}")
            images, labels = np.asarray(z["images"]), np.asarray(z["labels"])
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DdflowError(f"{path}: cannot read it as an .npz ({e})") from None
    if images.ndim != 4:
        raise DdflowError(f"{path}: KIP images are (N, H, W, C); got shape {images.shape}")
    if labels.ndim != 2 or len(labels) != len(images):
        raise DdflowError(f"{path}: KIP labels are (N, classes) for N = {len(images)}; got shape {labels.shape}")
    x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    return [RawSet(x, torch.from_numpy(labels.astype(np.float32)))]


def read_rtp(path: Path, channels: int, size: int | None, n_classes: int | None) -> list[RawSet]:
    """RTP's saved memories (princetonvisualai/RememberThePast-DatasetDistillation runners/sgld_runner_standard.py
    lines 245-248: {'compressor': state_dict} of compressors/imgs_embedding_basis_minibatch.py, whose `basis` and
    `imgs` nn.Embedding tables (lines 34-35) are the bases (n_basis, C * h * w) and the addressing rows (rows * classes,
    n_basis), class after class (labs, lines 36-40)), decoded as ddflow.ops.rtp.decode: rows @ bases, bilinear
    upsampling by size / h. The memories go into the record's extras (rtp, rtp_basis, rtp_coeffs)."""
    from ..ops.rtp import decode
    obj = load_foreign_pt(path)
    state = obj.get("compressor") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not {"basis.weight", "imgs.weight"} <= set(state):
        raise DdflowError(f"{path}: an RTP checkpoint is {{'compressor': state_dict}} with 'basis.weight' and "
                          "'imgs.weight' (imgs_embedding_basis_minibatch); this is not one")
    basis, coeffs = _tensor(state["basis.weight"], path, "basis.weight"), _tensor(state["imgs.weight"], path,
                                                                                  "imgs.weight")
    side = round((basis.shape[1] / channels) ** 0.5) if basis.dim() == 2 else 0
    if basis.dim() != 2 or coeffs.dim() != 2 or coeffs.shape[1] != basis.shape[0] or side < 1 \
            or channels * side * side != basis.shape[1] or size is None or size % side or not n_classes \
            or len(coeffs) % n_classes:
        raise DdflowError(f"{path}: bases {tuple(basis.shape)} and rows {tuple(coeffs.shape)} do not decode into "
                          f"{channels}-channel {size} px images of {n_classes} classes (bases n_basis x C*h*w, h = w "
                          "dividing the size; rows a multiple of the classes)")
    ds = size // side
    rows = len(coeffs) // n_classes
    images = decode(basis.float(), coeffs.float(), channels, ds)
    labels = torch.arange(n_classes).repeat_interleave(rows)
    return [RawSet(images, labels, extra={"rtp_basis": basis.float(), "rtp_coeffs": coeffs.float(),
                                          "rtp": {"n_basis": int(basis.shape[0]), "downsample": float(ds),
                                                  "rows_per_class": rows}})]


def read_sets(fmt: str, path: str | Path, channels: int, classes: list[str] | None = None,
              size: int | None = None, n_classes: int | None = None) -> list[RawSet]:
    path = Path(path)
    if not path.exists():
        raise DdflowError(f"{path}: no such file or folder")
    if fmt == "plain":
        return read_plain(path)
    if fmt == "mtt":
        return read_mtt(path)
    if fmt == "dc":
        return read_dc(path)
    if fmt == "png":
        return read_png(path, channels, classes)
    if fmt == "rfad":
        return read_rfad(path)
    if fmt == "kip":
        return read_kip(path)
    if fmt == "rtp":
        return read_rtp(path, channels, size, n_classes)
    raise DdflowError(f"unknown import format {fmt!r}; known: {', '.join(FORMATS)}")
