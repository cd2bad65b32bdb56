"""HaBa: dataset distillation via factorization (Liu et al., NeurIPS 2022; official Huage001/DatasetFactorization
distill_fac.py, utils.py StyleTranslator, contrastive_loss.py), on MTT's trajectory matching (methods/mtt.py).

The distilled data is factorised into bases (learnable images, bases_per_class per class, optionally one channel)
and n_hallucinators small networks; a training image is hallucinator_j(basis). A hallucinator (utils.py
StyleTranslator) is an encoder conv (kernel k, no padding, in -> C channels), a per-position affine map
scale * h + shift (scale 1, shift 0 at init, one value per channel and position of the (S-k+1)^2 map) and a
decoder transposed conv (C -> C channels, kernel k) back to S x S.

One iteration (distill_fac.py lines 262-417), on the chunks of one permutation of the bases (as MTT's batches):
1. MTT's student: syn_steps differentiable SGD steps from expert[start], each on DSA(H_j(bases[chunk])) with one
   hallucinator j drawn per step; param_loss = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2.
2. The adversarial term on the next chunk: two distinct hallucinators j0, j1 on the same bases, one DSA call on
   both views, embeddings e0, e1 of the feature extractor;
       club = lambda_club * mean((cos(e0, e1) + 1) / 2)        (hallucinators make the two views differ)
   param_loss + club updates bases, hallucinators and syn_lr (SGD; syn_lr then clipped at min_syn_lr).
3. The extractor (a ConvNet with its own classifier) on the next chunk, two fresh views of the updated factors:
       lambda_cls * CE(both views) + lambda_likeli * mean((1 - cos(e0, e1)) / 2)
       + lambda_contrast * SupCon(normalize(e0), normalize(e1); labels)
   updates the extractor only (it pulls the views of one basis together: the adversary of step 2).

The experts are HaBa's own when `expert_standardize` is `batch` (buffer.py trains through HaBa's utils.py epoch(),
which standardises every batch: ddflow.stages.experts, prep `<prep>-batchstd`); the distillation itself does not
standardise (lines 320-327), as the official loop.

The record holds the bases, the hallucinators' weights and the storage count in its extras (`haba_bases`,
`haba_hallucinators`, `haba`), which protocol `haba` (ddflow.protocols.haba, the official evaluation) trains on,
one random hallucinator per basis at every access; its images are every basis through every hallucinator
(n_hallucinators x classes x bases_per_class, hallucinator after hallucinator), which protocol `mtt` trains on as a
fixed set and `ddflow.ops.hallucinator.generate_from_record` rebuilds, with the learned lr.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment import DSA
from ..errors import DdflowError
from ..nets import build_net
from ..ops.hallucinator import build_hallucinators, generate, storage
from ..ops.losses import supervised_contrastive
from ..runtime import to_device
from .mtt import MTT, student_unroll, trajectory_loss
from .registry import register


@register("haba")
class HaBa(MTT):
    protocols = ("haba", "mtt")
    requires = ("trajectories",)
    state = ("bases", "hallucinators", "extractor", "syn_lr", "opt_img", "opt_hal", "opt_ext", "opt_lr", "order")

    @classmethod
    def init_pairing(cls, hp: dict, ipc: int) -> str:
        """Real bases are the first bases_per_class images of the paired order: Random's when that is the IPC."""
        if hp.get("init", "real") != "real":
            return "own"
        return "same" if int(hp.get("bases_per_class") or ipc) == int(ipc) else "nested"

    def init(self) -> None:
        self.init_trajectories()
        hp, info = self.hp, self.data.info
        n_hal = int(hp["n_hallucinators"])
        if n_hal < 2:
            raise DdflowError(f"haba: n_hallucinators {n_hal}; the contrastive terms pair two distinct hallucinators")
        self.bpc = int(hp.get("bases_per_class") or self.ipc)
        self.bases = self.initial_bases()
        self.labels = torch.arange(self.classes).repeat_interleave(self.bpc).to(self.device)
        in_ch = 1 if hp["single_channel"] else info.channels
        self.hallucinators = build_hallucinators(n_hal, in_ch, info.channels, info.size, int(hp["kernel"]),
                                                 self.generator).to(self.device)
        self.extractor = build_net(hp["extractor_net"], info.channels, info.classes, info.size,
                                   self.generator).to(self.device).train()
        self.syn_lr = torch.tensor(float(hp["lr_teacher"]), device=self.device).requires_grad_(True)
        self.opt_img = torch.optim.SGD([self.bases], lr=hp["lr_img"], momentum=hp["momentum"])
        self.opt_hal = torch.optim.SGD(self.hallucinators.parameters(), lr=hp["lr_hallucinator"],
                                       momentum=hp["momentum"])
        self.opt_ext = torch.optim.SGD(self.extractor.parameters(), lr=hp["lr_extractor"],
                                       momentum=hp["momentum_extractor"])
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=hp["lr_lr"], momentum=hp["momentum_lr"])
        self.dsa = DSA(self.dsa_strategy()) if hp.get("dsa", True) else None
        self.order = torch.randperm(len(self.manifest["experts"]), generator=self.generator).tolist()

    def initial_bases(self) -> torch.Tensor:
        """bases_per_class real images per class (init real; distill_fac.py lines 108-114, single-channel bases are
        the mean over channels) or N(0, 1) noise (line 102); a leaf on the device."""
        info = self.data.info
        if self.hp["init"] not in self.inits:
            raise DdflowError(f"haba: init {self.hp['init']!r} unknown; allowed: {', '.join(self.inits)}")
        if self.hp["init"] == "real":
            x = self.data.x_train[self.paired_real_indices(self.bpc)]
            if self.hp["single_channel"]:
                x = x.mean(dim=1, keepdim=True)
        else:
            c = 1 if self.hp["single_channel"] else info.channels
            x = torch.randn((self.classes * self.bpc, c, info.size, info.size), generator=self.generator)
        return x.detach().clone().to(self.device).requires_grad_(True)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.dsa(x, self.generator) if self.dsa is not None else x

    def two_views(self, idx: torch.Tensor) -> torch.Tensor:
        """The bases idx through two distinct random hallucinators, concatenated (lines 344-353; DSA then goes over
        both views in one call)."""
        j0, j1 = torch.randperm(len(self.hallucinators), generator=self.generator)[:2].tolist()
        base = self.bases[idx]
        return torch.cat([self.hallucinators[j0](base), self.hallucinators[j1](base)])

    def embed_pairs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The extractor's logits and the embeddings of the first and second view."""
        feats = self.extractor(x, embed=True)
        e0, e1 = feats.chunk(2)
        return self.extractor.classifier(feats), e0, e1

    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        k, start_epoch, start, target = self.window(it)
        start_leaf = {n: v.clone().requires_grad_(True) for n, v in start.items()}
        steps = int(hp["syn_steps"])
        batches = self.next_batches(steps + 2, n=len(self.bases))  # student steps, adversarial, extractor
        batches = to_device(torch.cat(batches), self.device).split([len(b) for b in batches])
        picks = iter(torch.randint(0, len(self.hallucinators), (steps,), generator=self.generator).tolist())

        def student_images(idx: torch.Tensor) -> torch.Tensor:  # one random hallucinator per step (line 320)
            return self.augment(self.hallucinators[next(picks)](self.bases[idx]))

        final = student_unroll(self.net, start_leaf, student_images, self.labels, self.syn_lr, batches[:steps])
        param_loss = trajectory_loss(final, start, target)
        _, e0, e1 = self.embed_pairs(self.augment(self.two_views(batches[steps])))
        club = float(hp["lambda_club"]) * ((F.cosine_similarity(e0, e1) + 1) / 2).mean()
        loss = param_loss + club
        if not torch.isfinite(loss):
            raise DdflowError(f"haba: non-finite loss at iteration {it} (expert {k}, start epoch {start_epoch}, "
                              f"syn_lr {self.syn_lr.item():.4g}); the resume file keeps the last good state: lower "
                              f"lr_img / lr_hallucinator / lr_lr and rerun")
        for opt in (self.opt_img, self.opt_hal, self.opt_lr):
            opt.zero_grad()
        loss.backward()
        for opt in (self.opt_img, self.opt_hal, self.opt_lr):
            opt.step()
        with torch.no_grad():
            self.syn_lr.clamp_(min=float(hp["min_syn_lr"]))  # line 386
        ext = self.extractor_step(batches[steps + 1])
        return {"loss": param_loss.detach(), "club": club.detach(), "extractor": ext,
                "syn_lr": self.syn_lr.detach().clone(), "start": start_epoch}

    def extractor_step(self, idx: torch.Tensor) -> torch.Tensor:
        """One SGD step of the extractor on two fresh views of the updated factors (lines 388-417); the views
        are constants here (the official graph reaches the factors, whose gradients are zeroed before use)."""
        hp = self.hp
        with torch.no_grad():
            x = self.two_views(idx)
        logits, e0, e1 = self.embed_pairs(self.augment(x))
        y = self.labels[idx]
        cls = float(hp["lambda_cls"]) * F.cross_entropy(logits, torch.cat([y, y]))
        likeli = float(hp["lambda_likeli"]) * ((1 - F.cosine_similarity(e0, e1)) / 2).mean()
        views = torch.stack([F.normalize(e0), F.normalize(e1)], dim=1)
        contrast = float(hp["lambda_contrast"]) * supervised_contrastive(views, y, float(hp["temperature"]),
                                                                        float(hp["temperature"]))
        loss = cls + likeli + contrast
        self.opt_ext.zero_grad()
        loss.backward()
        self.opt_ext.step()
        return loss.detach()

    def result(self) -> dict:
        info = self.data.info
        bases = self.bases.detach()
        images = generate(bases, self.hallucinators).cpu()
        labels = self.labels.cpu().repeat(len(self.hallucinators))
        cfg = {"n_hallucinators": len(self.hallucinators), "bases_per_class": self.bpc,
               "single_channel": bool(self.hp["single_channel"]), "kernel": int(self.hp["kernel"]),
               "channels": info.channels, "images": len(images),
               "storage": storage(bases, self.hallucinators, info.channels * info.size * info.size)}
        return {"images": images, "labels": labels, "lr": float(self.syn_lr.item()), "haba": cfg,
                "haba_bases": bases.cpu(),
                "haba_hallucinators": {k: v.detach().cpu() for k, v in self.hallucinators.state_dict().items()}}
