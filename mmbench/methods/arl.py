"""ARL: Asymmetric Representation Learning.

Wei, Luo, Luo. *Improving Multimodal Learning via Imbalanced Learning*. ICCV 2025, arXiv 2507.10203.
Official code: https://github.com/shicaiwei123/ICCV2025-ARL (commit 358af4f;
``main_arl_variance.py``, ``models/backbone.py``).

Idea: the model's dependence on each modality should be inversely proportional to its prediction
variance; unimodal regularisers share the fusion head, so there are no extra parameters.

From the official code (equality with the release measured in ``docs/methods/arl.md``):
- unimodal logits from the **shared** concat head with the other modality zeroed,
  ``a_out = fc([a, 0])``, ``v_out = fc([0, v])`` (the full bias, not half of it);
- per-batch weights (``main_arl_variance.py`` l.116-153):
  1. ``s_m = sum_k mean_batch |out_m|_k``, normalised to sum 1;
  2. ``H_m`` = mean entropy of ``softmax(out_m)``, normalised to sum 1, clamped below at 0.3;
  3. ``w_m = 1 / H_m``, normalised to sum 1;
  4. ``weight = softmax([s_v w_a T, s_a w_v T])`` (crossed: audio uses the visual magnitude);
- after epoch ``start`` (``epoch > start``, epochs from 0): the gradient of each encoder's output
  is scaled by ``1 + weight_m`` (``GradScale``, ``backbone.py`` l.71-86, l.325-347) and the loss is
  ``CE(out) + gamma (CE(out_a) + CE(out_v))``; before, the unimodal weight is 1 and no scaling;
- gradient-norm clip 40 after the scaling (l.171): ``optim.grad_clip: 40`` in the recipes.

Quirks of the release, and what mmbench does:
- At 358af4f the computed ``weight`` is never written back, so both gradients get the fallback
  0.5, a constant 1.5x. The default ``weight_mode="intended"`` applies the weights;
  ``"released"`` reproduces the constant 1.5x. (No revision of the repository that writes the
  weights back was available; the intended mode is mmbench's reading of the paper.)
- ``GradScale.backward`` uses ``ctx.saved_tensors`` (a tuple) as the weight, a ``TypeError`` on
  torch 2.13; both modes use the fixed rule (the saved tensor itself).
- Were the weights written back, the forward pass would read them before the step computes its
  own, so each step would be scaled by the previous step's weights. mmbench scales each step by its own
  weights: the encoders' parameter gradients are multiplied by ``1 + weight_m`` after backward,
  which equals scaling the encoder output's gradient (``J^T ((1 + w) g) = (1 + w) J^T g``).
- The release also requires the previous epoch's **test** accuracies to be non-zero; mmbench drops
  that condition (it only matters before the first evaluation, inside the first ``start`` epochs).
- Test loader with ``drop_last=True`` and best-on-test checkpoints: mmbench evaluates every sample
  and selects on the validation split.
- The release steps its scheduler at the start of each epoch, so its decay comes one epoch early;
  mmbench's trainer steps it after each epoch.

mmbench choices, documented:
- *Unimodal logits* are the model's fusion head on one modality's features with the others zero
  (``MultimodalModel.fuse``), for any fusion; they are the per-modality predictions reported
  (``acc_<m>``), as in the release's evaluation.
- *More than two modalities.* ``weight = softmax_m(T (1 - s_m) w_m)``: ``1 - s_m`` is the others'
  share of the magnitude, ``s_v`` for audio with two modalities; ``released`` uses 0.5 for each.
- Logged per step: ``magnitude_<m>`` (step 1), ``entropy_<m>`` (step 2), ``weight_<m>`` (step 4),
  ``scale_<m>`` (the factor applied), ``loss_<m>``.

Defaults = the release's argument defaults: gamma 1.0, T 8.0, start 5, floor 0.3. Per-dataset
gamma and T are in the shell scripts (CREMA-D 4.0/8.0, KS 3.0/4.0, AVE 5.0/4.0; recipes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE, POSITIVE
from mmbench.methods.base import Method, check_choices
from mmbench.methods.modulation import encoder_parameters, scale_gradients
from mmbench.models.multimodal import ModelOutput
from mmbench.registry import METHODS

WEIGHT_MODES = ("intended", "released")
RELEASED_WEIGHT = 0.5


def arl_weights(unimodal_logits: dict[str, torch.Tensor], temperature: float, entropy_floor: float
                ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Steps 1-4: normalised logit magnitudes, clamped normalised entropies and the softmax weights."""
    mods = list(unimodal_logits)
    z = {m: unimodal_logits[m].detach().double() for m in mods}  # float64 statistics, whatever the model dtype
    mag = torch.stack([z[m].abs().mean(0).sum() for m in mods])
    mag = mag / mag.sum()
    probs = {m: torch.softmax(z[m], 1) for m in mods}
    ent = torch.stack([-(probs[m] * torch.log(probs[m] + 1e-16)).sum(1).mean() for m in mods])
    ent = (ent / ent.sum()).clamp_min(entropy_floor)
    inv = 1.0 / ent
    inv = inv / inv.sum()
    weight = torch.softmax((1.0 - mag) * inv * temperature, dim=0)
    return ({m: mag[i].item() for i, m in enumerate(mods)}, {m: ent[i].item() for i, m in enumerate(mods)},
            {m: weight[i].item() for i, m in enumerate(mods)})


@METHODS.register("arl")
class ARL(Method):
    """ARL (ICCV 2025): shared-head unimodal losses, encoder gradients scaled by inverse-variance weights."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        gamma: Annotated[float, NON_NEGATIVE] = 1.0  # unimodal-loss weight after ``start``
        temperature: Annotated[float, POSITIVE] = 8.0  # T
        start: Annotated[int, NON_NEGATIVE] = 5  # modulation from epoch start + 1 (epochs from 0)
        entropy_floor: Annotated[float, NON_NEGATIVE] = 0.3
        weight_mode: str = "intended"  # intended | released (constant 0.5: 1.5x)

        def __post_init__(self):
            check_choices(self, weight_mode=WEIGHT_MODES)

    def forward(self, model, batch, state):
        return self.predict(model, batch)

    def predict(self, model, batch):
        out = model(batch)
        shared = {m: model.fuse({m: f})[0] for m, f in out.features.items()}  # fc([f_m, 0])
        return ModelOutput(out.logits, out.features, shared)

    def loss(self, model, batch, out, state):
        fused = F.cross_entropy(out.logits, batch.labels)
        unimodal = {m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()}
        gamma = self.params.gamma if state.epoch > self.params.start else 1.0
        loss = fused + gamma * sum(unimodal.values())
        return loss, {"loss_fused": fused.item(), **{f"loss_{m}": v.item() for m, v in unimodal.items()}}

    def after_backward(self, model, batch, out, state):
        p = self.params
        mag, ent, weight = arl_weights(out.unimodal_logits, p.temperature, p.entropy_floor)
        scale = {m: 1.0 for m in weight}
        if state.epoch > p.start:
            applied = weight if p.weight_mode == "intended" else {m: RELEASED_WEIGHT for m in weight}
            for m, w in applied.items():
                scale[m] = 1.0 + w
                scale_gradients(encoder_parameters(model, m, scope="all"), scale[m])
        logs = {}
        for m in weight:
            logs.update({f"magnitude_{m}": mag[m], f"entropy_{m}": ent[m], f"weight_{m}": weight[m],
                         f"scale_{m}": scale[m]})
        return logs
