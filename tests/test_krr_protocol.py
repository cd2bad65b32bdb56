"""The krr protocol's support flips follow FRePo's / ISA's script/eval.py (`if dataset_name in ['mnist',
'fashion_mnist']: use_flip = False else: use_flip = True`, in main before load_proto), not the distillation's
use_flip (FRePo distils CIFAR-100 IPC 10/50 without flips, yet evaluates their KRR with them)."""
from ddflow import hparams
from ddflow.data import get_info
from ddflow.protocols import protocol_settings
from ddflow.protocols.kernel import _use_flip


def test_krr_support_flips_on_every_colour_dataset_whatever_the_distillation_used():
    assert hparams.resolve("frepo", "cifar100", 10, "paper")["use_flip"] is False  # distilled without flips
    settings = protocol_settings("frepo", "cifar100", 10, "paper", "krr")
    assert _use_flip(settings, get_info("cifar100")) is True
    assert _use_flip(protocol_settings("frepo", "mnist", 1, "paper", "krr"), get_info("mnist")) is False
    assert _use_flip({"use_flip": False}, get_info("cifar10")) is False  # an explicit setting still wins
