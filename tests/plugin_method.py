"""A method defined outside mmbench, as a third-party plugin package would (used by the registry tests)."""

import torch.nn.functional as F

from mmbench.methods.base import Method


class PluginJoint(Method):
    """A plugin: plain fused cross-entropy."""

    registry_name = "plugin_joint"

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}
