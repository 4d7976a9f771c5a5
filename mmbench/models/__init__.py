"""Encoders, fusions and the multimodal model."""

from mmbench.models.multimodal import ModelOutput, ModelSpec, MultimodalModel, build_model

__all__ = ["ModelOutput", "ModelSpec", "MultimodalModel", "build_model"]
