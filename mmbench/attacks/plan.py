"""The attack request: what to evaluate a trained run under, checked once wherever it comes from.

``mmbench attack`` (its options), the attack runner (its arguments) and a sweep grid (its
``attack:`` entries) all build an :class:`AttackPlan`. Its checks run when it is made, before any
run is loaded or any file written, so a bad request stops with one line saying what to fix. What
depends on a run's data (its modalities and their kinds, an attack's options) is checked by the
runner when it builds the curves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mmbench.attacks.protocols import Protocol, resolve_protocol
from mmbench.config import short_repr
from mmbench.errors import MMBenchError
from mmbench.registry import ATTACKS, unknown_name_message

#: the largest attack level: far beyond every attack's scale, and safely inside float32
MAX_LEVEL = 1e6
#: the levels of ad hoc noise when none are given
DEFAULT_LEVELS = (0.0, 0.5, 1.0, 2.0)
#: the keys of a sweep grid's ``attack:`` entry
GRID_KEYS = ("noise", "levels", "seeds", "modalities", "fraction", "protocol", "protocol_version")
#: how ``mmbench attack`` spells each field; a grid spells them as the fields' names
FLAGS = {"noise": "--noise", "protocol": "--protocol", "levels": "--levels", "seeds": "--attack-seeds",
         "modalities": "--modalities", "fraction": "--fraction"}


@dataclass(frozen=True)
class AttackPlan:
    """Ad hoc ``noise`` at ``levels`` (rows labelled ``label`` version ``version``), or a ``protocol``:
    its conditions at its levels (``levels`` overrides them, ``modalities`` restricts them).

    ``seeds``: the attack seeds; ``fraction``: the share of samples corrupted (ad hoc, default 1);
    ``independent``: each modality its own samples (default: the same samples, or the protocol's
    choice); ``options``: keyword options of the ad hoc attacks. ``flags``: error messages name the
    command-line options (``--levels``) instead of the fields (``levels``).
    """

    noise: tuple[str, ...] = ()
    protocol: Protocol | None = None
    label: str = "custom"
    version: str = "1"
    levels: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    modalities: tuple[str, ...] | None = None
    fraction: float | None = None
    independent: bool | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    flags: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self):
        name = (lambda key: FLAGS[key]) if self.flags else (lambda key: key)
        noise = _names(self.noise, name("noise"))
        if not noise and self.protocol is None:
            raise MMBenchError(f"name the noise to apply ({name('noise')} gaussian; see mmbench list attacks) "
                               f"or a protocol ({name('protocol')} qmf; see mmbench list protocols)")
        if noise and self.protocol is not None:
            raise MMBenchError(f"give {name('noise')} or {name('protocol')}, not both")
        for n in noise:
            if n not in ATTACKS:
                raise MMBenchError(unknown_name_message("attack", n, ATTACKS.names()))
        if self.protocol is not None and (self.fraction is not None or self.options):
            raise MMBenchError(f"protocol {self.protocol.name!r} fixes the fraction and the attack options; "
                               f"drop {name('fraction')}, or write your own protocol file")
        levels = self.levels
        if levels is not None:
            levels = tuple(levels) if isinstance(levels, (list, tuple)) else (levels,)
            bad = [v for v in levels if not _number(v) or not 0 <= v <= MAX_LEVEL]  # NaN fails too
            if not levels or bad:
                raise MMBenchError(f"{name('levels')} must be one or more numbers in [0, {MAX_LEVEL:g}], "
                                   f"got {short_repr(bad[0]) if bad else 'none'}")
            levels = tuple(float(v) for v in levels)
        seeds = tuple(self.seeds) if isinstance(self.seeds, Iterable) and not isinstance(self.seeds, str) else ()
        if not seeds or len(set(seeds)) < len(seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise MMBenchError(f"attack seeds must be one or more distinct integers >= 0, got {short_repr(self.seeds)}"
                               + ("; give --attack-seeds N >= 1" if self.flags else ""))
        fraction = self.fraction
        if fraction is not None and (not _number(fraction) or not 0 < fraction <= 1):
            raise MMBenchError(f"{name('fraction')} must be in (0, 1], got {short_repr(fraction)}")
        modalities = None if self.modalities is None else _names(self.modalities, name("modalities"))
        if modalities == ():
            raise MMBenchError(f"{name('modalities')} is empty; name at least one modality, or leave it out for all")
        if self.independent not in (None, True, False):
            raise MMBenchError(f"independent must be true or false, got {short_repr(self.independent)}")
        for key, value in (("noise", noise), ("levels", levels), ("seeds", seeds), ("modalities", modalities),
                           ("fraction", None if fraction is None else float(fraction)),
                           ("label", str(self.label)), ("version", str(self.version)), ("options", dict(self.options))):
            object.__setattr__(self, key, value)

    @classmethod
    def request(cls, noise: Iterable[str] | None = None, protocol: str | Protocol | None = None, *,
                flags: bool = True, **fields: Any) -> AttackPlan:
        """A plan whose ``protocol`` may still be a name (``NAME[@VERSION][:VARIANT]``) or a YAML path."""
        if isinstance(protocol, str):
            protocol = resolve_protocol(protocol)
        return cls(tuple(noise or ()), protocol, flags=flags, **fields)

    @classmethod
    def from_grid(cls, entry: Any, where: str) -> AttackPlan:
        """A sweep grid's ``attack:`` entry: ``seeds`` a count or a list; ``protocol`` with ``noise`` (and
        ``protocol_version``) only labels the rows."""
        if not isinstance(entry, dict):
            raise MMBenchError(f"{where} must be a mapping with noise, levels and seeds")
        unknown = set(entry) - set(GRID_KEYS)
        if unknown:
            raise MMBenchError(f"{where}: unknown key {short_repr(sorted(unknown, key=str)[0])}; "
                               f"valid: {', '.join(GRID_KEYS)}")
        noise, seeds, modalities = entry.get("noise"), entry.get("seeds", 1), entry.get("modalities")
        protocol = entry.get("protocol")
        label = {}
        if noise is not None and protocol is not None:
            label = {"label": str(protocol), "version": str(entry.get("protocol_version", "1"))}
            protocol = None
        try:
            return cls.request([noise] if isinstance(noise, str) else noise, None if protocol is None else str(protocol),
                               flags=False, levels=entry.get("levels"), modalities=[modalities]
                               if isinstance(modalities, str) else modalities, fraction=entry.get("fraction"),
                               seeds=range(seeds) if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds,
                               **label)
        except MMBenchError as e:
            raise MMBenchError(f"{where}: {e}") from None

    @property
    def rows_protocol(self) -> str:
        """What the rows' ``protocol`` column says: the protocol's name, or the ad hoc label."""
        return self.protocol.name if self.protocol is not None else self.label

    @property
    def rows_version(self) -> str:
        return self.protocol.version_label if self.protocol is not None else self.version

    def levels_to_run(self) -> tuple[float, ...]:
        """The given levels, else the protocol's, else :data:`DEFAULT_LEVELS`."""
        if self.levels is not None:
            return self.levels
        return tuple(self.protocol.levels) if self.protocol is not None else DEFAULT_LEVELS

    def describe(self) -> str:
        """What the plan runs, for listings: ``qmf(gaussian,salt_pepper)@0,5,10 x5`` (x attack seeds)."""
        what = ",".join(self.noise) if self.noise else \
            f"{self.protocol.name}({','.join(c.name for c in self.protocol.conditions)})"
        return f"{what}@{','.join(f'{lv:g}' for lv in self.levels_to_run())} x{len(self.seeds)}"

    def covered_by(self, have: set[tuple[str, str, str, float, int]]) -> bool:
        """Whether rows ``(protocol, attack, modalities, level, attack seed)`` hold this plan's results: every
        attack x level x seed on the plan's modalities (ad hoc), or the protocol's rows for every seed (and
        level, when the plan names them), on the plan's modalities when it restricts them. A row on other
        modalities covers nothing: an attack on all modalities is not one on ``image`` alone."""
        label = self.rows_protocol
        if self.noise:
            on = "+".join(self.modalities) if self.modalities else "all"
            return {(label, a, on, lv, s) for a in self.noise for lv in self.levels_to_run() for s in self.seeds} <= have
        mine = [h for h in have if h[0] == label and self._within(h[2])]
        return set(self.seeds) <= {h[4] for h in mine} and (self.levels is None or set(self.levels) <= {h[3] for h in mine})

    def _within(self, rows_modalities: str) -> bool:
        """Whether rows labelled ``rows_modalities`` ("all" or names joined by "+") attack only this plan's modalities."""
        if self.modalities is None:
            return True
        return rows_modalities != "all" and set(rows_modalities.split("+")) <= set(self.modalities)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value: Any, name: str) -> tuple[str, ...]:
    """A sequence of distinct names as a tuple, or an error naming the field."""
    if value is None:
        return ()
    items = tuple(value) if isinstance(value, (list, tuple)) else None
    if items is None or not all(isinstance(v, str) and v for v in items):
        raise MMBenchError(f"{name} must be a list of names, got {short_repr(value)}")
    if len(set(items)) < len(items):
        raise MMBenchError(f"{name} names {next(v for v in items if items.count(v) > 1)!r} twice; give each once")
    return items
