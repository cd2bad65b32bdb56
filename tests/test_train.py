"""The batched trainer: K models trained together follow exactly the K separate runs."""
import pytest
import torch

from ddflow.augment import DSA
from ddflow.nets import build_net
from ddflow.train import NetStack, StackedSGD, TrainSettings, accuracy, train_stack


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _gens(k, offset=0):
    return [torch.Generator().manual_seed(100 + offset + i) for i in range(k)]


def _train(k, batching, epochs=3, offset=0, augment=None):
    x, y = _data()
    gens = _gens(k, offset)
    stack = NetStack(build_net("ConvNet", 1, 10, 28), gens, "cpu", batching)
    settings = TrainSettings(epochs=epochs, batch=10, decay_epochs=(1,))
    train_stack(stack, x, y, gens, settings, augment)
    return stack


def test_batched_models_match_separate_models_step_for_step():
    aug = DSA("color_crop_cutout_scale_rotate")
    for batching in ("vmap", "loop"):
        together = _train(3, batching, augment=aug)
        for i in range(3):
            alone = _train(1, "loop", offset=i, augment=aug)
            for name, p in together.params.items():
                torch.testing.assert_close(p[i], alone.params[name][0], rtol=1e-4, atol=1e-5)


def test_models_of_one_stack_differ():
    stack = _train(2, "loop", epochs=1)
    w = stack.params["classifier.weight"]
    assert not torch.allclose(w[0], w[1])


def test_stacked_sgd_equals_torch_sgd_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    p_ref = torch.randn(5, requires_grad=True)
    p_ours = p_ref.detach().clone().requires_grad_(True)
    ref = torch.optim.SGD([p_ref], lr=0.1, momentum=0.9, weight_decay=5e-4)
    ours = StackedSGD([p_ours], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(4):
        for p, opt in ((p_ref, ref), (p_ours, ours)):
            loss = ((p - step) ** 2).sum()
            loss.backward()
            opt.step()
            if opt is ref:
                opt.zero_grad()
    torch.testing.assert_close(p_ours, p_ref)


def test_training_fits_a_small_set_and_accuracy_is_per_model():
    x, y = _data(20)
    gens = _gens(2)
    stack = NetStack(build_net("ConvNet", 1, 10, 28), gens, "cpu")
    train_stack(stack, x, y, gens, TrainSettings(epochs=30, batch=20))
    accs = accuracy(stack, x, y)
    assert len(accs) == 2 and all(a >= 90.0 for a in accs)


def test_a_repeated_decay_epoch_applies_the_factor_once_per_occurrence_as_multisteplr(monkeypatch):
    """MultiStepLR counts its milestones: [2, 2] multiplies the lr by gamma^2 at epoch 2 (IDC's train.py with
    E = 3: milestones 2E//3 = 5E//6 = 2)."""
    import ddflow.train as train_mod

    lrs = []

    class Spy(StackedSGD):
        def step(self):
            lrs.append(self.lr)
            super().step()

    monkeypatch.setattr(train_mod, "StackedSGD", Spy)
    x, y = _data(10)
    gens = _gens(1)
    stack = NetStack(build_net("ConvNet", 1, 10, 28), gens, "cpu", "loop")
    train_stack(stack, x, y, gens, TrainSettings(epochs=4, lr=0.01, batch=10, decay_epochs=(1, 1), decay_factor=0.2))
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.01)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 2], gamma=0.2)
    ref = []
    for _ in range(4):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == ref and ref[2] == pytest.approx(0.01 * 0.04)


@pytest.mark.parametrize("name", ["ConvNet", "ConvNetW32", "ConvNetBN", "ResNet18BN"])
def test_cpu_test_chunks_give_the_logits_and_accuracy_of_one_pass(name):
    """accuracy() runs the CPU test split in chunks of CPU_TEST_CHUNK images (speed: the activations stay in cache);
    the logits are the same bits as one pass over all images, so no cell depends on the chunk size."""
    from ddflow.train import CPU_TEST_CHUNK
    x, y = _data(n=3 * CPU_TEST_CHUNK + 5, seed=1)
    stack = NetStack(build_net(name, 1, 10, 28), _gens(2), "cpu", "loop").train(False)
    with torch.no_grad():
        whole = stack.forward(x.unsqueeze(0).expand(2, *x.shape))
        chunks = torch.cat([stack.forward(x[i:i + CPU_TEST_CHUNK].unsqueeze(0).expand(2, -1, -1, -1, -1))
                            for i in range(0, len(x), CPU_TEST_CHUNK)], dim=1)
    assert torch.equal(whole, chunks)
    expected = (100.0 * (whole.argmax(-1) == y).double().sum(1) / len(x)).tolist()
    assert accuracy(stack, x, y) == expected
