"""A method defined outside mmbench, as a third-party plugin package would (used by the registry tests)."""

import torch.nn.functional as F

from mmbench.methods.base import Method
from mmbench.methods.joint import Joint


class PluginJoint(Method):
    """A plugin: plain fused cross-entropy."""

    registry_name = "plugin_joint"

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}


class JointChild(Joint):
    """A plugin that extends a built-in: it must not carry ``joint``'s registry name."""


def helper():
    """Not a method."""
