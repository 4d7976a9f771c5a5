"""Attack protocols: named, versioned specifications that reproduce a published noise evaluation.

A :class:`Protocol` is a list of levels eps and of :class:`Condition` s -- one attack curve each
(the row's ``attack``) -- made of :class:`Step` s: which attack, on which modalities, at which
attack level and on which share of the samples, as functions of eps. Each protocol documents
its own eps (``protocols.md`` §1.3: the numbers are not guessed). Every result row records the
protocol's name, its version (with the variant, e.g. ``2024-faithful``) and the attack seed.

Where in the pipeline: mmbench corrupts the prepared test tensors -- after the dataset's resize
and crop, before the model's own normalisation (pixels stored as ``uint8`` are on QMF's 0–255
scale). QMF adds its Gaussian noise after Resize(256) and before CenterCrop(224), so its faithful
noise map is drawn here at the stored image size: the same kind of map, not the same pixels.
Only the test split is corrupted.

Built-ins (registry ``PROTOCOLS``; ``--protocol NAME[@VERSION][:VARIANT]``):

- ``qmf`` -- QMF / PDF text–image protocol (``protocols.md`` §1.1): eps in {0, 5, 10}; conditions
  ``gaussian`` (image Gaussian sigma = 10 eps on the 0–255 scale, one map for all channels, on
  50 % of images) and ``salt_pepper`` (density 0.1 on 50 % x eps/10 of images; version ``2025``:
  eps/100, QMF after its 2025-06-28 refactor); both also blank text tokens with p = 0.1 eps on
  50 % of samples (QMF blanks text whatever the image noise type), image and text drawn
  independently. Variants: ``faithful`` (default; QMF's fixed noise pattern -- numpy seed 0 in
  every call -- and its one-sided clipping with uint8 wrap-around) and ``clean`` (fresh noise from
  the attack seed, clipping to [0, 255]). Not reproduced in either: QMF's coupling of the text
  draws to the image noise stream (§1.1 item 2: it depends on loader-worker order); mmbench draws
  every modality from its own generator derived from the attack seed, and corrupts the test split only.
- ``qmf_rgbd`` -- QMF RGB-D (§1.2): Gaussian sigma = eps pixel units (no x10), on every image
  modality independently with p = 0.5 (25 % both, 25 % each alone, 25 % clean); levels {0, 5}
  (5 is the script's default severity; other severities with ``--levels``). Variants as ``qmf``.
- ``multibench`` -- MultiBench sweeps (§1.4): levels 0.0 … 0.9 (variant ``affect``, default) or
  0.0 … 1.0 (``imdb``); one curve per modality with the perturbations of its kind -- images:
  MultiBench's visual chain (``multibench_visual``); audio (a modality named ``audio`` or
  ``audio_*``, whether stored as a spectrogram image or a sequence): with probability p per
  sample one of white noise sigma = p, random drop p, structured drop p over 10 steps
  (``multibench_audio``); other sequences (time series): white noise sigma = p (x training std),
  random drop p, structured drop p over 3 steps; vectors (tabular): drop p, swap p; text: tokens
  replaced by the unknown token with p (the token-level stand-in for its letter typos) -- plus
  the all-modalities curve ``all`` at level p/3 on every modality at once (MultiBench's
  ``i / (10 * 3)``). Version ``2`` (default) adds the audio curve; version ``1`` (the first
  release) gave audio spectrograms the visual chain.

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

    @property
    def version_label(self) -> str:
        """What rows record as ``protocol_version``: the version and the variant."""
        return f"{self.version}-{self.variant}" if self.variant else str(self.version)


# ---------------------------------------------------------------------------------------
# Built-in protocols
# ---------------------------------------------------------------------------------------

QMF_VERSIONS = {"2024": 0.1, "2025": 0.01}  # salt-and-pepper inner probability per eps
FIDELITY = ("faithful", "clean")


def _pick(name: str, value: str | None, allowed: tuple[str, ...] | list[str], what: str) -> str:
    value = allowed[0] if value is None else str(value)
    if value not in allowed:
        raise MMBenchError(unknown_name_message(f"{what} of protocol {name!r}", value, list(allowed)))
    return value


def _image_gaussian_options(variant: str) -> dict[str, Any]:
    opts = {"unit": "pixel", "channel_shared": True}
    if variant == "faithful":
        opts.update(fixed_pattern=True, clip="wrap")
    else:
        opts.update(clip="range")
    return opts


@PROTOCOLS.register("qmf")
def qmf(variant: str | None = None, version: str | None = None) -> Protocol:
    """QMF / PDF text–image protocol: eps in {0, 5, 10}; image noise on 50 % of samples plus text blanking."""
    variant = _pick("qmf", variant, FIDELITY, "variant")
    version = _pick("qmf", version, list(QMF_VERSIONS), "version")
    text = Step("token_blank", ("kind:text",), level_scale=0.1, fraction=0.5)
    gauss = Step("gaussian", ("kind:image", "kind:video"), level_scale=10.0, fraction=0.5, options=_image_gaussian_options(variant))
    salt = Step("salt_pepper", ("kind:image", "kind:video"), level=0.1, fraction=0.5, fraction_scale=QMF_VERSIONS[version],
                options={"pixel_max": 1.0})
    return Protocol(
        "qmf", version, (0.0, 5.0, 10.0),
        (Condition("gaussian", (gauss, text), independent=True),
         Condition("salt_pepper", (salt, text), independent=True)),
        variant=variant,
        description="QMF/PDF text-image: sigma=10 eps (0-255) on 50% of images; salt density 0.1 on "
                    f"50%*eps*{QMF_VERSIONS[version]:g} of images; text blanking p=0.1 eps on 50%",
        source="QMF github.com/QingyangZhang/QMF (90bf6b1 / fe6c4c6), PDF github.com/Yinan-Xia/PDF; protocols.md 1.1")


@PROTOCOLS.register("qmf_rgbd")
def qmf_rgbd(variant: str | None = None, version: str | None = None) -> Protocol:
    """QMF RGB-D protocol: Gaussian sigma = eps pixel units on each image modality independently, p = 0.5."""
    variant = _pick("qmf_rgbd", variant, FIDELITY, "variant")
    version = _pick("qmf_rgbd", version, ("2024",), "version")
    gauss = Step("gaussian", ("kind:image",), level_scale=1.0, fraction=0.5, options=_image_gaussian_options(variant))
    return Protocol("qmf_rgbd", version, (0.0, 5.0), (Condition("gaussian", (gauss,), independent=True),),
                    variant=variant,
                    description="QMF RGB-D: sigma=eps (0-255) on RGB and depth independently with p=0.5",
                    source="QMF RGBD-scene-recognition/test.py (2024-11-27); protocols.md 1.2")


MULTIBENCH_LEVELS = {"affect": tuple(i / 10 for i in range(10)), "imdb": tuple(i / 10 for i in range(11))}
MULTIBENCH_VERSIONS = ("2", "1")  # 2: audio gets MultiBench's audio noise; 1: the first release (visual chain)


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
    """MultiBench sweeps: levels 0 … 0.9 (affect) or 0 … 1 (imdb), per-modality perturbations and all at once."""
    variant = _pick("multibench", variant, list(MULTIBENCH_LEVELS), "variant")
    version = _pick("multibench", version, MULTIBENCH_VERSIONS, "version")
    per = [Condition(name, steps, independent=True, split="per_modality")
           for name, steps in _multibench_steps(1.0, version).items()]
    together = tuple(st for steps in _multibench_steps(1 / 3, version).values() for st in steps)
    return Protocol("multibench", version, MULTIBENCH_LEVELS[variant],
                    (*per, Condition("all", together, independent=True)), variant=variant,
                    description="MultiBench: per-modality perturbations at p = 0..0.9/1.0, plus all modalities at p/3",
                    source="github.com/pliang279/MultiBench robustness/; protocols.md 1.4")


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
_STEP_KEYS = {"attack", "target", "level_scale", "level", "fraction", "fraction_scale", "options"}


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
    )


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
        independent = cd.get("independent", False)
        if not isinstance(independent, bool):
            c.fail(f"{path}.independent", f"must be true or false, got {independent!r}")
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
