"""Attack protocols: named, versioned specifications that reproduce a published noise evaluation.

A :class:`Protocol` is a list of levels eps and of :class:`Condition` s -- one attack curve each
(the row's ``attack``) -- made of :class:`Step` s: which attack, on which modalities, at which
attack level and on which share of the samples, as functions of eps. Each protocol documents
its own eps, taken from the peer's code. Every result row records the protocol's name, its
version (with the variant, e.g. ``2024.1-faithful``) and the attack seed. A change to what a
protocol does is a new version; the old versions stay available (``NAME@VERSION``).
``docs/protocols.md`` gives each protocol, version and the measured match with the peer's code.

Where in the pipeline: mmbench corrupts the prepared test tensors -- after the dataset's resize
and crop, before the model's own normalisation (pixels stored as ``uint8`` are on QMF's 0–255
scale). QMF adds its Gaussian noise after Resize(256) and before CenterCrop(224), so its faithful
noise map is drawn here at the stored image size: the same kind of map, not the same pixels.
Only the test split is corrupted.

Built-ins (registry ``PROTOCOLS``; ``--protocol NAME[@VERSION][:VARIANT]``):

- ``qmf`` -- QMF / PDF text–image protocol: eps in {0, 5, 10}; conditions ``gaussian`` (image
  Gaussian sigma = 10 eps on the 0–255 scale, one map for all channels, on 50 % of images) and
  ``salt_pepper`` (density 0.1 on 50 % x eps/10 of images; versions ``2025*``: eps/100, QMF after
  its 2025-06-28 refactor); both also blank text tokens with p = 0.1 eps on 50 % of samples, image
  and text drawn independently (versions ``*.1``: each whitespace field of the raw text becomes
  one ``_``, QMF's rule, and the text is tokenized again; versions ``2024``/``2025``: tokens
  blanked in place). Variants: ``faithful`` (default; QMF's fixed noise pattern --
  numpy seed 0 in every call -- and its one-sided clipping with uint8 wrap-around) and ``clean``
  (fresh noise from the attack seed, clipping to [0, 255]); on ``*.1``, ``coupled``: ``faithful``
  plus QMF's coupling of the text draws to its Gaussian image noise (``qmf_coupled_blank``: the
  text share then depends on the image sizes, as in QMF's runs). Versions ``2024.1`` (default) and
  ``2025.1``: the faithful sum in float64 as QMF's numpy, and the image steps reach uint8 image
  modalities only (an error on float images; ``audio`` spectrograms are left out); ``2024`` and
  ``2025`` as first released. The realised text share is in each row (``hit_text``).
- ``qmf_rgbd`` -- QMF RGB-D: Gaussian sigma = eps pixel units (no x10), on every image modality
  independently with p = 0.5 (25 % both, 25 % each alone, 25 % clean); levels {0, 5} (5 is the
  script's default severity; other severities with ``--levels``). Variants as ``qmf``; versions
  ``2024.1`` (default; as ``qmf``'s ``.1``) and ``2024``.
- ``multibench`` -- MultiBench sweeps: one curve per modality with the perturbations of its kind
  plus ``all`` (every modality at p/3, MultiBench's ``i / (10 * 3)``). Version ``3`` (default):
  the variant is the MultiBench loader family -- ``affect`` (levels 0 … 0.9), ``mimic`` (0 … 1.0),
  ``stocks`` (0 … 0.8), ``imdb`` (0 … 1.0) -- and time series and audio get
  ``add_timeseries_noise`` as that loader calls it (affect: one white-noise offset per sample and
  whole samples zeroed with probability p; mimic: the same plus entries dropped; stocks and imdb:
  one offset per time step, entries dropped, single steps zeroed); images get MultiBench's visual
  chain (one-channel images through the colour steps, as there); vectors: drop p, swap p; text:
  MultiBench's letter typos on words of five or more characters with probability p (the typed
  word looked up in the vocabulary again);
  ``all``: one offset per (modality, sample) on time series and audio and whole (modality, sample)
  pairs zeroed with probability p/3. Version ``2``: variants ``affect`` / ``imdb`` (levels only),
  per-step white noise, random drop and span-3 structured drop on every time series, mmbench's
  ``multibench_audio`` on audio, text tokens replaced by the unknown token with p (a token-level
  stand-in), and ``all`` = every per-modality step at p/3; version ``1``: as
  ``2`` with the visual chain on audio spectrograms.

User protocols: a YAML file (``--protocol my.yaml``), validated by :func:`load_protocol_file`::

    name: my_protocol
    version: "1"
    levels: [0, 0.5, 1]
    conditions:
      - name: noisy_image
        independent: true          # each (step, modality) draws its own samples
        split: together            # or per_modality: one curve per modality
        steps:
          - attack: gaussian
            target: kind:image     # all | kind:KIND | kind:audio | a modality name | !TARGET (leave out) | a list
            level_scale: 1.0       # attack level = level_scale x eps (or fixed: level: 0.1)
            fraction: 0.5          # share of samples corrupted (x min(1, fraction_scale x eps))
            options: {unit: std}
            uint8_only: false      # true: an error when a reached modality is not stored as uint8
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.config import load_yaml_file
from mmbench.errors import MMBenchError
from mmbench.registry import ATTACKS, PROTOCOLS, unknown_name_message

SPLITS = ("together", "per_modality")
#: target kinds that are not storage kinds: ``kind:audio`` = the modalities named ``audio`` or
#: ``audio_*`` (design.md names modalities by what they are), whatever their stored kind
ROLE_KINDS = ("audio",)


def is_role(name: str, role: str) -> bool:
    """Whether a modality named ``name`` plays ``role`` (see :data:`ROLE_KINDS`)."""
    return name == role or name.startswith(f"{role}_")


@dataclass(frozen=True)
class Step:
    """One attack on some modalities; its level and sample share are functions of the protocol level eps."""

    attack: str
    target: tuple[str, ...] = ("all",)
    level_scale: float = 1.0
    level: float | None = None  # a fixed attack level: eps then only scales the fraction
    fraction: float = 1.0
    fraction_scale: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    uint8_only: bool = False  # the step works in 0-255 pixel units: an error on modalities not stored as uint8

    def attack_level(self, eps: float) -> float:
        return float(self.level) if self.level is not None else self.level_scale * float(eps)

    def sample_fraction(self, eps: float) -> float:
        if self.fraction_scale is None:
            return self.fraction
        return self.fraction * min(1.0, self.fraction_scale * float(eps))

    def describe(self) -> str:
        lv = f"{self.level:g}" if self.level is not None else f"{self.level_scale:g}eps"
        fr = f"{self.fraction:g}" + (f"*min(1,{self.fraction_scale:g}eps)" if self.fraction_scale is not None else "")
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.attack}[{'|'.join(self.target)}](level={lv},fraction={fr}{',' + opts if opts else ''})"


@dataclass(frozen=True)
class Condition:
    """One attack curve: its steps run in order on the same data."""

    name: str
    steps: tuple[Step, ...]
    independent: bool = False  # each (step, modality) draws its own samples, else all share one draw
    split: str = "together"  # or per_modality: one curve per modality the steps reach


@dataclass(frozen=True)
class Protocol:
    name: str
    version: str
    levels: tuple[float, ...]
    conditions: tuple[Condition, ...]
    variant: str = ""
    description: str = ""
    source: str = ""
    image_size: int | None = None  # the side of the images the peer added its noise to (rows record both)

    @property
    def version_label(self) -> str:
        """What rows record as ``protocol_version``: the version and the variant."""
        return f"{self.version}-{self.variant}" if self.variant else str(self.version)


# ---------------------------------------------------------------------------------------
# Built-in protocols
# ---------------------------------------------------------------------------------------

#: salt-and-pepper inner probability per eps, by version: ``2024`` / ``2025`` are QMF's code before
#: and after its 2025-06-28 refactor; ``.1`` is mmbench's revision 1 of each (docs/protocols.md):
#: the faithful Gaussian in float64, and pixel-unit steps on uint8 images only
QMF_VERSIONS = {"2024.1": 0.1, "2025.1": 0.01, "2024": 0.1, "2025": 0.01}
FIDELITY = ("faithful", "clean", "coupled")  # coupled: faithful, and text drawn as QMF's Gaussian runs did
#: uint8 images only: a float spectrogram (``audio``) is no image in pixel units
PIXEL_TARGETS = ("kind:image", "kind:video", "!kind:audio")


def _pick(name: str, value: str | None, allowed: tuple[str, ...] | list[str], what: str) -> str:
    value = allowed[0] if value is None else str(value)
    if value not in allowed:
        raise MMBenchError(unknown_name_message(f"{what} of protocol {name!r}", value, list(allowed)))
    return value


def _image_gaussian_options(variant: str, revision: bool = False) -> dict[str, Any]:
    opts: dict[str, Any] = {"unit": "pixel", "channel_shared": True}
    if variant in ("faithful", "coupled"):
        opts.update(fixed_pattern=True, clip="wrap")
        if revision:
            opts["float64"] = True
    else:
        opts.update(clip="range")
    return opts


def _pixel_step(attack: str, targets: tuple[str, ...], revision: bool, **kw: Any) -> Step:
    return Step(attack, PIXEL_TARGETS if revision else targets, uint8_only=revision, **kw)


@PROTOCOLS.register("qmf")
def qmf(variant: str | None = None, version: str | None = None) -> Protocol:
    """QMF / PDF text–image protocol: eps in {0, 5, 10}; image noise on 50 % of samples plus text blanking."""
    variant = _pick("qmf", variant, FIDELITY, "variant")
    version = _pick("qmf", version, list(QMF_VERSIONS), "version")
    rev = "." in version
    if variant == "coupled" and not rev:
        raise MMBenchError(f"variant 'coupled' of protocol 'qmf' needs the raw text: use qmf@{version}.1:coupled")
    text = Step("field_blank" if rev else "token_blank", ("kind:text",), level_scale=0.1, fraction=0.5)
    gauss = _pixel_step("gaussian", ("kind:image", "kind:video"), rev, level_scale=10.0, fraction=0.5,
                        options=_image_gaussian_options(variant, rev))
    gauss_text = Step("qmf_coupled_blank", ("kind:text",), level_scale=0.1) if variant == "coupled" else text
    salt = _pixel_step("salt_pepper", ("kind:image", "kind:video"), rev, level=0.1, fraction=0.5,
                       fraction_scale=QMF_VERSIONS[version], options={"pixel_max": 1.0})
    return Protocol(
        "qmf", version, (0.0, 5.0, 10.0),
        (Condition("gaussian", (gauss, gauss_text), independent=True),
         Condition("salt_pepper", (salt, text), independent=True)),
        variant=variant,
        description="QMF/PDF text-image: sigma=10 eps (0-255) on 50% of images; salt density 0.1 on "
                    f"50%*eps*{QMF_VERSIONS[version]:g} of images; text blanking p=0.1 eps on 50%",
        source="QMF github.com/QingyangZhang/QMF (90bf6b1 / fe6c4c6), PDF github.com/Yinan-Xia/PDF; docs/protocols.md",
        image_size=224)


@PROTOCOLS.register("qmf_rgbd")
def qmf_rgbd(variant: str | None = None, version: str | None = None) -> Protocol:
    """QMF RGB-D protocol: Gaussian sigma = eps pixel units on each image modality independently, p = 0.5."""
    variant = _pick("qmf_rgbd", variant, FIDELITY[:2], "variant")
    version = _pick("qmf_rgbd", version, ("2024.1", "2024"), "version")
    rev = "." in version
    gauss = _pixel_step("gaussian", ("kind:image",), rev, level_scale=1.0, fraction=0.5,
                        options=_image_gaussian_options(variant, rev))
    return Protocol("qmf_rgbd", version, (0.0, 5.0), (Condition("gaussian", (gauss,), independent=True),),
                    variant=variant,
                    description="QMF RGB-D: sigma=eps (0-255) on RGB and depth independently with p=0.5",
                    source="QMF RGBD-scene-recognition/test.py (2024-11-27); docs/protocols.md", image_size=224)


MULTIBENCH_LEVELS = {"affect": tuple(i / 10 for i in range(10)), "imdb": tuple(i / 10 for i in range(11)),
                     "mimic": tuple(i / 10 for i in range(11)), "stocks": tuple(i / 10 for i in range(9))}
#: 3: each loader's time-series semantics, single-step structured drop, whole-pair "all" curve,
#: grey images through the colour steps; 2: audio gets mmbench's multibench_audio; 1: the first release
MULTIBENCH_VERSIONS = ("3", "2", "1")
MULTIBENCH_V2_VARIANTS = ("affect", "imdb")


def _timeseries_steps(family: str, s: float, target: tuple[str, ...]) -> tuple[Step, ...]:
    """MultiBench's ``add_timeseries_noise`` as each loader calls it (docs/protocols.md).

    affect (``[X]`` wrapped in a list, ``rand_drop=False``): one white-noise offset per sample and
    whole samples zeroed; mimic (wrapped, random drop on): the same plus entries dropped; stocks and
    imdb (the bare array): one offset per time step, entries dropped, single time steps zeroed.
    """
    if family in ("affect", "mimic"):
        steps = [Step("white_noise", target, level_scale=s, options={"per": "sample"})]
        if family == "mimic":
            steps.append(Step("dropout", target, level_scale=s))
        return (*steps, Step("blank", target, level_scale=s))
    return (Step("white_noise", target, level_scale=s, options={"per": "step"}),
            Step("dropout", target, level_scale=s),
            Step("structured_dropout", target, level_scale=s, options={"span": 1}))


def _multibench_v3(family: str) -> tuple[Condition, ...]:
    per = {
        "visual": (Step("multibench_visual", ("kind:image", "kind:video", "!kind:audio"),
                        options={"grey_as_rgb": True}),),
        "audio": _timeseries_steps(family, 1.0, ("kind:audio",)),
        "timeseries": _timeseries_steps(family, 1.0, ("kind:sequence", "!kind:audio")),
        "tabular": (Step("dropout", ("kind:vector",)), Step("entry_swap", ("kind:vector",))),
        "text": (Step("letter_typo", ("kind:text",)),),
    }
    third = 1 / 3  # the affect loader's i / (10 * 3): a list of modalities, one offset and one drop per pair
    together = (Step("white_noise", ("kind:sequence", "kind:audio"), level_scale=third, options={"per": "sample"}),
                Step("blank", ("all",), level_scale=third))
    return (*(Condition(name, steps, independent=True, split="per_modality") for name, steps in per.items()),
            Condition("all", together, independent=True))


def _multibench_steps(level_scale: float, version: str = "2") -> dict[str, tuple[Step, ...]]:
    s = level_scale
    audio = version != "1"
    no_audio = ("!kind:audio",) if audio else ()
    steps = {
        "visual": (Step("multibench_visual", ("kind:image", "kind:video", *no_audio), level_scale=s),),
        "audio": (Step("multibench_audio", ("kind:audio",), level_scale=s, options={"span": 10}),),
        "timeseries": (Step("white_noise", ("kind:sequence", *no_audio), level_scale=s),
                       Step("dropout", ("kind:sequence", *no_audio), level_scale=s),
                       Step("structured_dropout", ("kind:sequence", *no_audio), level_scale=s, options={"span": 3})),
        "tabular": (Step("dropout", ("kind:vector",), level_scale=s),
                    Step("entry_swap", ("kind:vector",), level_scale=s)),
        "text": (Step("token_blank", ("kind:text",), level_scale=s, options={"token": "unk"}),),
    }
    if not audio:
        del steps["audio"]
    return steps


@PROTOCOLS.register("multibench")
def multibench(variant: str | None = None, version: str | None = None) -> Protocol:
    """MultiBench sweeps: one curve per modality and all modalities at p/3; the variant is the loader family."""
    version = _pick("multibench", version, MULTIBENCH_VERSIONS, "version")
    families = list(MULTIBENCH_LEVELS) if version == "3" else list(MULTIBENCH_V2_VARIANTS)
    variant = _pick(f"multibench@{version}", variant, families, "variant")
    if version == "3":
        conditions = _multibench_v3(variant)
    else:
        per = [Condition(name, steps, independent=True, split="per_modality")
               for name, steps in _multibench_steps(1.0, version).items()]
        together = tuple(st for steps in _multibench_steps(1 / 3, version).values() for st in steps)
        conditions = (*per, Condition("all", together, independent=True))
    return Protocol("multibench", version, MULTIBENCH_LEVELS[variant], conditions, variant=variant,
                    description="MultiBench: per-modality perturbations at p = 0..0.9/1.0, plus all modalities at p/3",
                    source="github.com/pliang279/MultiBench@49f9be2 robustness/, datasets/*/get_data.py; "
                           "docs/protocols.md")


# ---------------------------------------------------------------------------------------
# Resolution and validation
# ---------------------------------------------------------------------------------------


def resolve_protocol(spec: str) -> Protocol:
    """``NAME[@VERSION][:VARIANT]`` of a registered protocol, or the path of a YAML file."""
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return load_protocol_file(spec)
    name, _, variant = spec.partition(":")
    name, _, version = name.partition("@")
    builder = PROTOCOLS.get(name)
    protocol = builder(variant=variant or None, version=version or None)
    validate(protocol, where=f"protocol {name!r}")
    return protocol


_PROTOCOL_KEYS = {"name", "version", "levels", "conditions", "variant", "description", "source"}
_CONDITION_KEYS = {"name", "steps", "independent", "split"}
_STEP_KEYS = {"attack", "target", "level_scale", "level", "fraction", "fraction_scale", "options", "uint8_only"}


class _Checker:
    def __init__(self, where: str):
        self.where = where

    def fail(self, path: str, message: str) -> None:
        raise MMBenchError(f"{self.where}: {path}: {message}" if path else f"{self.where}: {message}")

    def keys(self, d: Any, allowed: set[str], path: str, required: tuple[str, ...] = ()) -> dict:
        if not isinstance(d, dict):
            self.fail(path, f"must be a mapping with keys {', '.join(sorted(allowed))}")
        for k in d:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(path, f"unknown key {k!r}; {hint}allowed: {', '.join(sorted(allowed))}")
        for k in required:
            if k not in d:
                self.fail(path, f"missing required key {k!r}")
        return d

    def number(self, value: Any, path: str, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, got {value!r}")
        value = float(value)
        if value != value or (low is not None and (value <= low if low_open else value < low)) or (
                high is not None and value > high):
            bounds = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            self.fail(path, f"must be in {bounds}, got {value:g}")
        return value


def _target(value: Any, c: _Checker, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) and t.lstrip("!") for t in items):
        c.fail(path, "must be 'all', 'kind:KIND', a modality name, '!' before one of those to leave it out, "
                     "or a list of those")
    if all(t.startswith("!") for t in items):
        c.fail(path, "only exclusions ('!...'): name what to attack first, e.g. [all, '!audio']")
    for t in items:
        t = t.lstrip("!")
        if t.startswith("kind:"):
            from mmbench.data.types import MODALITY_KINDS

            if t[5:] not in MODALITY_KINDS + ROLE_KINDS:
                c.fail(path, unknown_name_message("modality kind", t[5:], list(MODALITY_KINDS + ROLE_KINDS)))
    return tuple(items)


def _step(d: Any, c: _Checker, path: str) -> Step:
    d = c.keys(d, _STEP_KEYS, path, ("attack",))
    if d["attack"] not in ATTACKS:
        c.fail(f"{path}.attack", unknown_name_message("attack", str(d["attack"]), ATTACKS.names()))
    options = d.get("options") or {}
    if not isinstance(options, dict):
        c.fail(f"{path}.options", "must be a mapping of option: value")
    level = d.get("level")
    return Step(
        attack=d["attack"],
        target=_target(d.get("target", "all"), c, f"{path}.target"),
        level_scale=c.number(d.get("level_scale", 1.0), f"{path}.level_scale", 0.0),
        level=None if level is None else c.number(level, f"{path}.level", 0.0),
        fraction=c.number(d.get("fraction", 1.0), f"{path}.fraction", 0.0, 1.0, low_open=True),
        fraction_scale=(None if d.get("fraction_scale") is None
                        else c.number(d["fraction_scale"], f"{path}.fraction_scale", 0.0)),
        options=dict(options),
        uint8_only=_flag(d.get("uint8_only", False), c, f"{path}.uint8_only"),
    )


def _flag(value: Any, c: _Checker, path: str) -> bool:
    if not isinstance(value, bool):
        c.fail(path, f"must be true or false, got {value!r}")
    return value


def protocol_from_dict(d: Any, where: str = "protocol") -> Protocol:
    """Build and validate a protocol from a mapping (the YAML format in the module doc)."""
    c = _Checker(where)
    d = c.keys(d, _PROTOCOL_KEYS, "", ("name", "version", "levels", "conditions"))
    if not isinstance(d["name"], str) or not d["name"].strip():
        c.fail("name", "must be a non-empty string")
    if not isinstance(d["version"], (str, int, float)) or isinstance(d["version"], bool) or str(d["version"]) == "":
        c.fail("version", "must be a string or number (record a new version whenever the numbers change)")
    levels = d["levels"]
    if not isinstance(levels, list) or not levels:
        c.fail("levels", "must be a non-empty list of numbers >= 0")
    levels = tuple(c.number(v, f"levels[{i}]", 0.0) for i, v in enumerate(levels))
    conditions = d["conditions"]
    if not isinstance(conditions, list) or not conditions:
        c.fail("conditions", "must be a non-empty list")
    conds = []
    for i, cd in enumerate(conditions):
        path = f"conditions[{i}]"
        if isinstance(cd, dict) and "steps" not in cd and "attack" in cd:  # shorthand: one step
            cd = {**{k: v for k, v in cd.items() if k in _CONDITION_KEYS},
                  "steps": [{k: v for k, v in cd.items() if k not in _CONDITION_KEYS}]}
        cd = c.keys(cd, _CONDITION_KEYS, path, ("steps",))
        steps = cd["steps"]
        if not isinstance(steps, list) or not steps:
            c.fail(f"{path}.steps", "must be a non-empty list of steps")
        parsed = tuple(_step(s, c, f"{path}.steps[{j}]") for j, s in enumerate(steps))
        name = cd.get("name", parsed[0].attack if len(parsed) == 1 else None)
        if not isinstance(name, str) or not name:
            c.fail(f"{path}.name", "a condition with several steps needs a name")
        split = cd.get("split", "together")
        if split not in SPLITS:
            c.fail(f"{path}.split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
        independent = _flag(cd.get("independent", False), c, f"{path}.independent")
        conds.append(Condition(name, parsed, independent, split))
    names = [(cd.name) for cd in conds]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        c.fail("conditions", f"two conditions are named {dup!r}; each curve needs its own name")
    for k in ("variant", "description", "source"):
        if k in d and not isinstance(d[k], str):
            c.fail(k, "must be a string")
    protocol = Protocol(d["name"].strip(), str(d["version"]), levels, tuple(conds), d.get("variant", ""),
                        d.get("description", ""), d.get("source", ""))
    validate(protocol, where)
    return protocol


def validate(protocol: Protocol, where: str = "protocol") -> None:
    """Attack names, their options, and that every step stays inside its attack's range at every level."""
    from mmbench.attacks.base import check_options

    c = _Checker(where)
    for i, cond in enumerate(protocol.conditions):
        for j, st in enumerate(cond.steps):
            path = f"conditions[{i}].steps[{j}]"
            if st.attack not in ATTACKS:
                c.fail(f"{path}.attack", unknown_name_message("attack", st.attack, ATTACKS.names()))
            fn = ATTACKS.get(st.attack)
            try:
                check_options(st.attack, fn, dict(st.options))
            except MMBenchError as e:
                c.fail(f"{path}.options", str(e))
            for eps in protocol.levels:
                frac = st.sample_fraction(eps)
                if not 0.0 <= frac <= 1.0:
                    c.fail(path, f"the sample fraction at level {eps:g} is {frac:g}, outside [0, 1]")


def load_protocol_file(path: str | Path) -> Protocol:
    d = load_yaml_file(path, "protocol file", f"give a file or one of: {', '.join(PROTOCOLS.names())}")
    return protocol_from_dict(d, where=f"protocol file {path}")
