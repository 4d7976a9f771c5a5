"""Evaluate a trained run on corrupted test data, for every attack curve, level and attack seed.

One trained model is loaded once; each (curve, level, attack seed) costs one corruption of the
test tensors (vectorised, only the selected samples are touched) and one test-set forward pass.
Levels at which every step is the identity reuse the clean evaluation.

Randomness: every draw comes from a generator derived from the attack seed and a key naming
the curve, the step and the modality (:func:`derived_generator`), never from the level. So
the same samples are hit and the same standard-normal noise is scaled at every level of a
curve (smooth curves), and each modality's corruption depends only on the attack seed -- not
on which other modalities are attacked (``docs/protocols.md``, randomness).

Cost: the runner goes through a curve's levels for one attack seed at a time and records the
random draws at the first level (:class:`Replay`); later levels get the same values without
generating them again, so one evaluation costs about one corruption's arithmetic plus one
forward pass (``benchmarks/attack_throughput.py``).

Sample selection: a step corrupts the samples whose uniform draw ``u < fraction``. Without
``independent`` all steps and modalities of a curve share one draw per sample (the same
samples; with different fractions the smaller set is inside the larger); with ``independent``
each (step, modality) draws its own (QMF RGB-D: 25 % both, 25 % each alone, 25 % clean).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mmbench.attacks.base import ACTIVE_LOGS, AttackContext, DrawLog, ReplayMiss, check_options, kinds_of
from mmbench.attacks.plan import AttackPlan
from mmbench.attacks.protocols import ROLE_KINDS, Condition, Protocol, Step, is_role
from mmbench.data.types import MultimodalData
from mmbench.errors import MMBenchError
from mmbench.evaluation import evaluate, fused_metrics, predict
from mmbench.registry import ATTACKS, unknown_name_message
from mmbench.results import RunFolder
from mmbench.run import load_trained

ROW_KEY = ["run_id", "protocol", "protocol_version", "attack", "modalities", "level", "fraction", "attack_seed"]


def derive_seed(seed: int, key: str) -> int:
    """A stable 63-bit seed from an attack seed and a key (same on every platform and run)."""
    digest = hashlib.blake2b(f"{int(seed)}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def derived_generator(seed: int, key: str, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, key))


@dataclass
class Curve:
    """One attack curve on a run's data: named steps, each on its resolved modalities."""

    name: str
    steps: list[tuple[Step, list[str]]]
    independent: bool
    modalities: list[str]
    fraction: float  # the nominal share of samples, recorded in the rows
    label: str = ""  # the rows' ``modalities``: "all" or the corrupted modalities joined by "+"

    def describe(self) -> str:
        return " + ".join(f"{st.attack}[{'+'.join(ms)}]" for st, ms in self.steps)


@dataclass
class Corruption:
    """A corrupted copy of the data plus the samples that lose a modality (``missing``)."""

    data: MultimodalData
    missing: dict[str, torch.Tensor] = field(default_factory=dict)  # modality -> bool [N]
    shares: dict[str, float] = field(default_factory=dict)  # modality -> share of samples changed


def _uniform(n: int, seed: int, key: str, device) -> torch.Tensor:
    g = derived_generator(seed, key, device)
    return torch.rand(n, generator=g, device=g.device).to(device)


def _with_log(g: torch.Generator, log: DrawLog, run: Callable[[torch.Generator], Any]) -> Any:
    ACTIVE_LOGS[id(g)] = log
    try:
        return run(g)
    finally:
        ACTIVE_LOGS.pop(id(g), None)


@dataclass
class Replay:
    """The draws of one (curve, attack seed), kept across the curve's levels.

    Every generator the runner uses is derived from the attack seed and a key, not from the
    level, so each level would draw the same values again; a Replay draws them once. Attack
    calls go through :meth:`call`: the first records the draws (:class:`~mmbench.attacks.base.DrawLog`),
    the next ones are served copies. A call whose draws differ in kind or shape draws afresh and
    records again; an attack that uses its generator directly (its state moves during a
    replayed call) is run with a fresh generator at every level from then on. Either way each
    value is the one a fresh generator gives.
    """

    select: dict[str, torch.Tensor] = field(default_factory=dict)
    logs: dict[str, DrawLog] = field(default_factory=dict)
    direct: set[str] = field(default_factory=set)

    def uniform(self, n: int, seed: int, key: str, device) -> torch.Tensor:
        u = self.select.get(key)
        if u is None or u.shape[0] != n:
            u = self.select[key] = _uniform(n, seed, key, device)
        return u

    def call(self, key: str, seed: int, device, run: Callable[[torch.Generator], Any]) -> Any:
        if key in self.direct:
            return run(derived_generator(seed, key, device))
        log = self.logs.get(key)
        if log is not None:
            g = derived_generator(seed, key, device)
            state = g.get_state()
            log.pos, log.recording = 0, False
            try:
                out = _with_log(g, log, run)
            except ReplayMiss:
                pass
            else:
                if torch.equal(g.get_state(), state):
                    return out
                self.direct.add(key)
                return run(derived_generator(seed, key, device))
        log = self.logs[key] = DrawLog()
        return _with_log(derived_generator(seed, key, device), log, run)


def apply_steps(data: MultimodalData, steps: list[tuple[Step, list[str]]], eps: float, seed: int,
                independent: bool = False, key: str = "", model: torch.nn.Module | None = None,
                method: Any = None, batch_size: int = 512, replay: Replay | None = None,
                texts: dict[str, Any] | None = None) -> Corruption:
    """Run ``steps`` (in order) at protocol level ``eps``; see the module doc for the sampling rules.

    ``replay``: draws kept across the levels of one curve and attack seed (:class:`Replay`); the
    result is the same with or without it. ``texts``: text modality -> its
    :class:`~mmbench.data.textimage.TextSource`, for attacks that need words (``needs_text``).
    """
    n, device = len(data), data.labels.device
    inputs = dict(data.inputs)
    lost: dict[str, torch.Tensor] = {}
    hits: dict[str, torch.Tensor] = {}  # modality -> samples selected by the steps so far
    shared: torch.Tensor | None = None
    draw_select = replay.uniform if replay is not None else _uniform
    for i, (st, mods) in enumerate(steps):
        fn = ATTACKS.get(st.attack)
        level, fraction = st.attack_level(eps), st.sample_fraction(eps)
        if level == 0 or fraction <= 0:
            continue  # level 0 is the identity by the attack contract
        for m in mods:
            if fraction >= 1:
                idx = None
            else:
                if independent:
                    u = draw_select(n, seed, f"{key}/select/{i}/{m}", device)
                else:
                    shared = draw_select(n, seed, f"{key}/select", device) if shared is None else shared
                    u = shared
                idx = torch.nonzero(u < fraction).squeeze(1)
                if idx.numel() == 0:
                    continue
            gkey = f"{key}/attack/{i}/{m}"
            picked = torch.ones(n, dtype=torch.bool, device=device) if idx is None else \
                torch.zeros(n, dtype=torch.bool, device=device).index_fill(0, idx, True)
            x = inputs[m]
            sub = x if idx is None else x[idx]
            kwargs = dict(st.options)
            if getattr(fn, "needs_text", False):
                source = (texts or {}).get(m)
                kwargs["source"] = None if source is None else source.take(idx)
            if getattr(fn, "needs_hits", False):
                kwargs["hits"] = {k: (v if idx is None else v[idx]) for k, v in hits.items()}
            if getattr(fn, "needs_model", False):
                if model is None:
                    raise MMBenchError(f"attack {st.attack!r} needs the trained model")
                kwargs["ctx"] = AttackContext(model, method, {k: (v if idx is None else v[idx]) for k, v in inputs.items()},
                                              data.labels if idx is None else data.labels[idx], m, data.meta, batch_size)

            def run(g: torch.Generator, fn=fn, sub=sub, level=level, spec=data.meta.modalities[m], kwargs=kwargs):
                return fn(sub, level, g, spec, **kwargs)

            out = replay.call(gkey, seed, device, run) if replay is not None else run(derived_generator(seed, gkey, device))
            hits[m] = hits[m] | picked if m in hits else picked
            if getattr(fn, "output", "tensor") == "mask":
                gone = out.to(device).bool() if idx is None else torch.zeros(n, dtype=torch.bool, device=device).index_fill(
                    0, idx[out.to(device).bool()], True)
                lost[m] = lost[m] | gone if m in lost else gone
            elif idx is None:
                inputs[m] = out
            else:
                new = x.clone()
                new[idx] = out
                inputs[m] = new
    shares = {}
    for m in data.inputs:
        changed = None
        if inputs[m] is not data.inputs[m]:  # count_nonzero: a faster row reduction than any()
            changed = torch.count_nonzero((inputs[m] != data.inputs[m]).reshape(n, -1), dim=1) > 0
        if m in lost:
            changed = lost[m] if changed is None else changed | lost[m]
        shares[m] = changed.float().mean().item() if changed is not None and n else 0.0
    return Corruption(data.with_inputs(inputs), lost, shares)


def corrupt(data: MultimodalData, attack: Callable | str, level: float, modalities: list[str], fraction: float,
            generator: torch.Generator, independent: bool = False, **options) -> MultimodalData:
    """Apply one attack to the chosen modalities of a ``fraction`` of the samples.

    Without ``independent`` the same samples in every modality. Seeded by one draw from
    ``generator``. (Attacks that mask or need the model go through :func:`attack_run`.)
    """
    name = attack if isinstance(attack, str) else attack.registry_name
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device).item())
    return apply_steps(data, [(Step(name, fraction=fraction, options=options), list(modalities))], level, seed,
                       independent, key=name).data


def evaluate_corruption(model: torch.nn.Module, method: Any, c: Corruption, batch_size: int = 512,
                        cache: dict | None = None) -> dict[str, float]:
    """Metrics on corrupted data; samples that lost modalities are predicted with those modalities masked.

    The per-modality head of a missing modality makes no prediction on those samples: it counts as wrong.
    ``cache`` (mask -> predictions of every sample): only when ``c.data`` holds the same input
    tensors at every call, e.g. the clean test data of a ``missing`` sweep; then each mask is
    predicted once for all samples and each call only picks rows, instead of a forward pass per call.
    """
    data = c.data
    lost = {m: v for m, v in c.missing.items() if bool(v.any())}
    if not lost:
        return evaluate(model, method, data, batch_size)
    if "mask" not in inspect.signature(model.forward).parameters:
        raise MMBenchError(f"attack 'missing' needs a model that masks modalities (forward(batch, mask=...)); "
                           f"{type(model).__name__} does not")
    names = list(lost)
    code = sum(lost[m].long() << j for j, m in enumerate(names))
    n, y = len(data), data.labels
    logits: torch.Tensor | None = None
    unimodal: dict[str, torch.Tensor] = {}
    for value in torch.unique(code).tolist():
        idx = torch.nonzero(code == value).squeeze(1)
        mask = [m for j, m in enumerate(names) if value >> j & 1]
        if cache is None:
            fused, heads = predict(model, method, data.index(idx), batch_size, mask=mask)
        else:
            if tuple(mask) not in cache:
                cache[tuple(mask)] = predict(model, method, data, batch_size, mask=mask)
            every, every_head = cache[tuple(mask)]
            fused, heads = every[idx], {m: z[idx] for m, z in every_head.items()}
        if logits is None:
            logits = torch.zeros(n, fused.shape[1], device=fused.device)
        logits[idx] = fused
        for m, z in heads.items():
            unimodal.setdefault(m, torch.full((n, z.shape[1]), float("nan"), device=z.device))[idx] = z
    metrics = fused_metrics(logits, y, data.meta.num_classes)
    for m, z in unimodal.items():
        present = ~torch.isnan(z).any(1)
        metrics[f"acc_{m}"] = ((z.nan_to_num(0).argmax(1) == y) & present).float().mean().item()
    for m in names:  # a head whose modality is missing on every sample
        metrics.setdefault(f"acc_{m}", 0.0)
    return metrics


def _resolve_target(target: tuple[str, ...], data: MultimodalData, where: str) -> list[str]:
    """The modalities a step's target names: ``all``, ``kind:KIND`` (``kind:audio``: by name, see
    :data:`~mmbench.attacks.protocols.ROLE_KINDS`), names; ``!X`` leaves out what ``X`` names."""
    out: list[str] = []
    left_out: set[str] = set()
    for t in target:
        exclude, t = t.startswith("!"), t.lstrip("!")
        if t == "all":
            mods = list(data.modalities)
        elif t.startswith("kind:") and t[5:] in ROLE_KINDS:
            mods = [m for m in data.modalities if is_role(m, t[5:])]
        elif t.startswith("kind:"):
            mods = [m for m in data.modalities if data.meta.modalities[m].kind == t[5:]]
        elif t in data.modalities:
            mods = [t]
        elif exclude:
            mods = []  # leaving out a modality the data does not have
        else:
            raise MMBenchError(f"{where}: " + unknown_name_message("modality", t, data.modalities))
        if exclude:
            left_out.update(mods)
        else:
            out += mods
    return [m for m in dict.fromkeys(out) if m not in left_out]


def _nominal_fraction(steps: list[tuple[Step, list[str]]]) -> float:
    return max(st.fraction for st, _ in steps)


def build_curves(data: MultimodalData, *, attacks: list[str] | None = None, protocol: Protocol | None = None,
                 modalities: list[str] | None = None, fraction: float | None = None,
                 independent: bool | None = None, options: dict[str, Any] | None = None) -> list[Curve]:
    """The attack curves to evaluate on ``data``: one per attack (ad hoc) or per protocol condition/modality."""
    for m in modalities or []:
        if m not in data.modalities:
            raise MMBenchError(unknown_name_message("modality of the run", m, data.modalities))
    curves: list[Curve] = []
    if protocol is None:
        fraction = 1.0 if fraction is None else float(fraction)
        chosen = list(modalities or data.modalities)
        for name in attacks or []:
            fn = ATTACKS.get(name)
            check_options(name, fn, options or {})
            st = Step(name, tuple(chosen), fraction=fraction, options=dict(options or {}))
            label = "+".join(chosen) if modalities else "all"
            curves.append(Curve(name, [(st, chosen)], bool(independent), chosen, fraction, label))
    else:
        for cond in protocol.conditions:
            curves += _condition_curves(cond, data, modalities, independent, protocol.name)
        if not curves:
            kinds = sorted({s.kind for s in data.meta.modalities.values()})
            raise MMBenchError(f"protocol {protocol.name!r} applies to none of the run's modalities "
                               f"({', '.join(data.modalities)}; kinds {', '.join(kinds)})")
    for cv in curves:
        for st, mods in cv.steps:
            fn = ATTACKS.get(st.attack)
            bad = [m for m in mods if data.meta.modalities[m].kind not in kinds_of(fn)]
            if bad:
                raise MMBenchError(f"attack {st.attack!r} applies to {', '.join(kinds_of(fn))} modalities, "
                                   f"not {bad[0]!r} ({data.meta.modalities[bad[0]].kind}); choose --modalities")
            floats = [m for m in mods if st.uint8_only and data.inputs[m].dtype != torch.uint8]
            if floats:
                raise MMBenchError(f"attack {st.attack!r} of this protocol works in 0-255 pixel units on uint8 images; "
                                   f"{floats[0]!r} is stored as {str(data.inputs[floats[0]].dtype).removeprefix('torch.')}: "
                                   "leave it out with --modalities, or use a protocol version for it")
            if getattr(fn, "needs_model", False) and len(mods) != 1:
                raise MMBenchError(f"attack {st.attack!r} perturbs one modality; choose it with --modalities "
                                   f"(one of {', '.join(mods)})")
    return curves


def _condition_curves(cond: Condition, data: MultimodalData, only: list[str] | None, independent: bool | None,
                      protocol: str) -> list[Curve]:
    steps = []
    for j, st in enumerate(cond.steps):
        mods = _resolve_target(st.target, data, f"protocol {protocol!r}, condition {cond.name!r}, step {j}")
        mods = [m for m in mods if only is None or m in only]
        if mods:
            steps.append((st, mods))
    if not steps:
        return []
    indep = cond.independent if independent is None else independent
    reached = [m for m in data.modalities if any(m in ms for _, ms in steps)]

    def label(mods: list[str]) -> str:
        return "all" if set(mods) == set(data.modalities) else "+".join(mods)

    if cond.split == "per_modality":
        out = []
        for m in reached:
            mine = [(st, [m]) for st, ms in steps if m in ms]
            out.append(Curve(cond.name, mine, indep, [m], _nominal_fraction(mine), label([m])))
        return out
    return [Curve(cond.name, steps, indep, reached, _nominal_fraction(steps), label(reached))]


def _is_identity(curve: Curve, eps: float) -> bool:
    return all(st.attack_level(eps) == 0 or st.sample_fraction(eps) <= 0 for st, _ in curve.steps)


def attack_run(folder: RunFolder, attacks: list[str] | None = None, levels: list[float] | None = None,
               attack_seeds: list[int] | tuple[int, ...] = (0,), modalities: list[str] | None = None,
               fraction: float | None = None, protocol: str | Protocol | None = None,
               protocol_version: str = "1", device: str = "cpu", data_dir: str | None = None,
               progress: Callable | None = None, independent: bool | None = None,
               options: dict[str, Any] | None = None) -> list[dict]:
    """:func:`run_plan` with the plan given as arguments (see :class:`~mmbench.attacks.plan.AttackPlan`).

    With ``attacks``, a string ``protocol`` (and ``protocol_version``) only labels the rows;
    without, ``protocol`` is a :class:`Protocol`, a registered ``NAME[@VERSION][:VARIANT]`` or a YAML path.
    """
    label = {}
    if attacks and not isinstance(protocol, Protocol):
        label, protocol = {"label": protocol or "custom", "version": protocol_version}, None
    elif protocol in ("", "custom"):
        protocol = None
    plan = AttackPlan.request(attacks, protocol, levels=levels, seeds=attack_seeds, modalities=modalities,
                              fraction=fraction, independent=independent, options=options or {}, **label)
    return run_plan(folder, plan, device, data_dir, progress)


def run_plan(folder: RunFolder, plan: AttackPlan, device: str = "cpu", data_dir: str | None = None,
             progress: Callable | None = None) -> list[dict]:
    """Rows of corrupted-test metrics for ``plan`` on a trained run; also merged into its ``attack.csv``.

    Each row: run id, protocol, version, attack (curve), modalities, level, fraction, attack seed,
    the steps, the realised share of samples changed per modality (``hit_<m>``), the side of the
    images attacked and the one the protocol's peer used (``image_size``, ``protocol_image_size``)
    and the metrics.
    """
    protocol = plan.protocol
    cfg, method, model, test = load_trained(folder, device, data_dir)
    curves = build_curves(test, attacks=list(plan.noise), protocol=protocol, modalities=plan.modalities,
                          fraction=plan.fraction, independent=plan.independent, options=dict(plan.options))
    batch_size = cfg.optim.batch_size * 4
    base = {"run_id": folder.run_id, "dataset": cfg.data.dataset, "method": cfg.method.name, "seed": cfg.seed,
            "protocol": plan.rows_protocol, "protocol_version": plan.rows_version,
            "variant": protocol.variant if protocol else "",
            "image_size": image_size(test), "protocol_image_size": f"{protocol.image_size}x{protocol.image_size}" if protocol and protocol.image_size else ""}
    texts = None
    if any(getattr(ATTACKS.get(st.attack), "needs_text", False) for cv in curves for st, _ in cv.steps):
        from mmbench.data.textimage import load_text_source

        source = load_text_source(cfg.data.dataset, "test", data_dir or cfg.output.data_dir)
        texts = {"text": source} if source is not None else None
    rows = run_curves(model, method, test, curves, list(plan.levels_to_run()), plan.seeds, batch_size, base,
                      progress, texts)
    folder.write_attack_rows(rows, ROW_KEY)
    return rows


def image_size(data: MultimodalData) -> str:
    """``HxW`` of the data's images (the first image or video modality that is no spectrogram), or ""."""
    m = next((m for m in data.modalities if data.meta.modalities[m].kind in ("image", "video")
              and not is_role(m, "audio")), None)
    return "" if m is None else "x".join(map(str, data.meta.modalities[m].shape[-2:]))


def run_curves(model: torch.nn.Module, method: Any, test: MultimodalData, curves: list[Curve], levels: list[float],
               attack_seeds: list[int] | tuple[int, ...], batch_size: int = 512, base: dict | None = None,
               progress: Callable | None = None, texts: dict[str, Any] | None = None) -> list[dict]:
    """One row per curve × level × attack seed (in that order) on a loaded model; no file is read or written.

    Levels at which every step is the identity share one clean evaluation; within a curve and
    attack seed the draws are made once (:class:`Replay`); corruptions that only mask modalities
    (``missing``) pick rows from one masked prediction per mask.
    """
    clean: dict[str, float] | None = None
    masked: dict = {}  # predictions under each mask, for corruptions that only mask modalities
    rows: dict[tuple[int, int, int], dict] = {}
    total, done = len(curves) * len(levels) * len(attack_seeds), 0
    for ci, curve in enumerate(curves):
        key = f"{curve.name}:{curve.label}"
        for si, seed in enumerate(attack_seeds):
            replay = Replay()
            for li, level in enumerate(levels):
                if _is_identity(curve, level):
                    if clean is None:
                        clean = evaluate(model, method, test, batch_size)
                    metrics, shares = clean, {m: 0.0 for m in test.modalities}
                else:
                    c = apply_steps(test, curve.steps, level, seed, curve.independent, key, model, method, batch_size,
                                    replay, texts)
                    only_masks = bool(c.missing) and all(c.data.inputs[m] is test.inputs[m] for m in test.modalities)
                    metrics = evaluate_corruption(model, method, c, batch_size, masked if only_masks else None)
                    shares = c.shares
                rows[ci, li, si] = {**(base or {}), "attack": curve.name, "modalities": curve.label,
                                    "level": float(level), "fraction": curve.fraction, "attack_seed": int(seed),
                                    "independent": curve.independent, "steps": curve.describe(),
                                    **{f"hit_{m}": v for m, v in shares.items()}, **metrics}
                done += 1
                if progress:
                    progress(done, total)
    return [rows[k] for k in sorted(rows)]
