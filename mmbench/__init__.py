"""mmbench: benchmarking multimodal learning under modality imbalance and data noise."""

__version__ = "0.1.0"
