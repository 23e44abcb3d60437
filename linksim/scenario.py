"""Scenario: a TOML file validated into nested dataclasses.

Every quantity carries its unit in its name (``carrier_hz``, ``speed_kmh``, ``tx_power_dbw``).

SNR convention (used everywhere, stated on plot axes): symbols have unit average energy, the channel
is normalised to unit average gain per entry (per user and drop), and the noise variance per receive
antenna is ``10**(-snr_db/10)``. For precoding the budget is ``p_tx = 10**(tx_power_dbw/10)`` W and
the noise ``sigma^2 = 10**(noise_power_dbw/10)`` W per user.
"""
from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LinksimError, read_text


def _pos(v):
    return v > 0


def _nonneg(v):
    return v >= 0


def _prob(v):
    return 0 <= v <= 1


def setting(default, check=None, why="", choices=None, hash_if=None):
    """A field of a scenario table: its default, a ``check(value) -> bool`` with the reason
    ``why`` shown when it fails, allowed ``choices``, and ``hash_if(table) -> bool``: whether the
    field enters the scenario hash (default: always)."""
    return field(default=default, metadata={"check": check, "why": why, "choices": choices, "hash_if": hash_if})


_f = setting


def _cdl(channel) -> bool:
    return channel.model == "cdl"


@dataclass
class Channel:
    """Propagation: 3GPP TR 38.901 UMa/UMi/RMa/CDL (Sionna) or i.i.d. Rayleigh (closed-form tests).

    ``cdl_profile`` and ``delay_spread_s`` apply to ``model = "cdl"`` only (and enter the hash only
    then); ``los`` and ``indoor_probability`` apply to the system-level models uma/umi/rma.
    """

    model: str = _f("uma", choices=("uma", "umi", "rma", "cdl", "rayleigh"))
    cdl_profile: str = _f("A", choices=("A", "B", "C", "D", "E"), hash_if=_cdl)
    delay_spread_s: float = _f(100e-9, lambda v: 0 < v <= 1e-5, "must be in (0, 1e-5] s (RMS delay spread)",
                               hash_if=_cdl)
    carrier_hz: float = _f(2.4e9, _pos, "must be > 0")
    num_subcarriers: int = _f(48, _pos, "must be > 0")
    subcarrier_spacing_hz: float = _f(180e3, _pos, "must be > 0")
    sample_spacing_s: float = _f(0.5e-3, _pos, "must be > 0")
    los: bool = _f(False)
    indoor_probability: float = _f(0.0, _prob, "must be in [0, 1]")
    bs_rows: int = _f(4, _pos, "must be > 0")
    bs_cols: int = _f(4, _pos, "must be > 0")
    bs_polarization: str = _f("single", choices=("single", "dual"))
    # a number, or [low, high]: each user's speed uniform in the range (e.g. averages over test speeds)
    speed_kmh: float = field(default=30.0, metadata={"check": _nonneg, "why": "must be >= 0", "pair": True})

    @property
    def num_bs_antennas(self) -> int:
        return self.bs_rows * self.bs_cols * (2 if self.bs_polarization == "dual" else 1)


@dataclass
class Run:
    seed: int = _f(0, _nonneg, "must be >= 0")
    batch_size: int = _f(32, _pos, "must be > 0")
    device: str = _f("cpu", why="torch device: cpu, cuda, cuda:1, ...")
    precision: str = _f("single", choices=("single", "double"))


#: table name -> its dataclass, in registration order (the order of a scenario's tables and of
#: its hash); task modules register theirs (:func:`register_section`)
SECTIONS: dict[str, type] = {}


def register_section(name: str, hash_defaults: bool = False):
    """Class decorator: the dataclass of a scenario table ``[name]`` owned by a task module.

    Each field is made with :func:`setting` (default, check, choices). The class may define
    ``validate(self, path, scenario)`` for cross-field checks (one ``LinksimError`` line).

    :param name: the table name
    :param hash_defaults: whether the table enters the scenario hash when it equals its defaults.
        ``False`` (the rule for new tables): adding a task does not change the hash, so no
        existing results folder is orphaned. The first three tables predate the rule.
    """
    def deco(cls):
        if name in SECTIONS or name in _CORE:
            raise ValueError(f"scenario table [{name}] registered twice")
        cls.table, cls.hash_defaults = name, hash_defaults
        SECTIONS[name] = cls
        return cls

    return deco


class Scenario:
    """A validated scenario: ``name``, ``channel``, ``run`` and one attribute per registered table
    (``prediction``, ``precoding``, ``detection``, ``coded``, ...). ``source`` is the TOML text it
    came from, ``path`` its file.
    """

    def __init__(self, name: str = "unnamed", channel: Channel | None = None, run: Run | None = None,
                 sections: dict | None = None, path: str = "<memory>", source: str = ""):
        self.name = name
        self.channel = channel or Channel()
        self.run = run or Run()
        given = dict(sections or {})
        self.sections = {k: given.pop(k, None) or cls() for k, cls in SECTIONS.items()}
        if given:
            raise LinksimError(f"{path}: unknown table [{sorted(given)[0]}]")
        self.path, self.source = str(path), source

    def __getattr__(self, key):
        if key.startswith("__") or key == "sections":   # (un)pickling looks these up first
            raise AttributeError(key)
        try:
            return self.sections[key]
        except KeyError:
            raise AttributeError(f"scenario has no table [{key}] (tables: channel, run, "
                                 f"{', '.join(self.sections)})") from None

    def __eq__(self, other):
        return isinstance(other, Scenario) and to_dict(self) == to_dict(other) and self.path == other.path

    def __repr__(self):
        return f"Scenario({self.name!r}, path={self.path!r}, hash={self.hash})"

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex) of the canonical content; equal content -> equal hash. Fields
        and tables declare what they leave out (``hash_if`` on a field, ``hash_defaults`` on a
        table), so that adding an option or a task keeps every existing hash."""
        d = to_dict(self)
        for key, f in ((f.name, f) for f in dataclasses.fields(Channel)):
            when = f.metadata.get("hash_if")
            if when and not when(self.channel):
                d["channel"].pop(key)
        for name, cls in SECTIONS.items():
            if not cls.hash_defaults and d[name] == dataclasses.asdict(cls()):
                d.pop(name)
        return hashlib.sha256(repr(d).encode()).hexdigest()[:16]

    def replace(self, **changes: dict[str, Any]) -> "Scenario":
        """A copy with tables updated, e.g. ``s.replace(detection={"snr_db": 5})``."""
        d = to_dict(self)
        for section, values in changes.items():
            d.setdefault(section, {}).update(values)
        return from_dict(d, self.path, self.source)

    def validate(self) -> None:
        """Cross-field checks (one clear line each): each table's own ``validate``, then the
        physical and numerical limits (:func:`linksim.limits.check_limits`: Doppler vs CSI
        sampling, powers vs precision). More users than BS antennas (K > M) is a valid, overloaded
        system: the blocks that cannot serve it refuse it (``serves_overloaded``)."""
        for table in self.sections.values():
            if hasattr(table, "validate"):
                table.validate(self.path, self)
        from .limits import check_limits
        reason = check_limits(self)
        if reason:
            raise LinksimError(f"{self.path}: {reason}")


_CORE = {"channel": Channel, "run": Run}


def _check_value(path: str, key: str, f: dataclasses.Field, value: Any) -> Any:
    if f.metadata.get("pair") and isinstance(value, (list, tuple)):   # [low, high]
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise LinksimError(f"{path}: {key}: expected a number or [low, high], got {value!r}")
        lo, hi = (_check_value(path, key, f, float(v)) for v in value)
        if lo > hi:
            raise LinksimError(f"{path}: {key} = {list(value)}: low > high")
        return (lo, hi)
    want = f.type if isinstance(f.type, type) else {"float": float, "int": int, "str": str,
                                                   "bool": bool}[f.type]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise LinksimError(f"{path}: {key}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise LinksimError(f"{path}: {key}: expected one of {list(choices)}, got {value!r}")
    check = f.metadata.get("check")
    if check and not check(value):
        raise LinksimError(f"{path}: {key} = {value!r} {f.metadata['why']}")
    return value


def _build(cls, data: dict, path: str, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise LinksimError(f"{path}: unknown key '{prefix}{key}' (known: {', '.join(sorted(fields))})")
        kwargs[key] = _check_value(path, prefix + key, fields[key], value)
    return cls(**kwargs)


def from_dict(data: dict, path: str = "<memory>", source: str = "") -> Scenario:
    """Validate a nested dict (TOML layout) into a Scenario."""
    top, sections = {}, {}
    for key, value in data.items():
        if key == "name":
            if not isinstance(value, str):
                raise LinksimError(f"{path}: name: expected str, got {type(value).__name__}")
            top["name"] = value
        elif key in _CORE or key in SECTIONS:
            if not isinstance(value, dict):
                raise LinksimError(f"{path}: [{key}] must be a table")
            table = _build(_CORE.get(key) or SECTIONS[key], value, path, key + ".")
            (top if key in _CORE else sections)[key] = table
        else:
            raise LinksimError(f"{path}: unknown key '{key}' (known: name, channel, "
                               f"{', '.join(SECTIONS)}, run)")
    sc = Scenario(**top, sections=sections, path=str(path), source=source)
    sc.validate()
    return sc


def to_dict(sc: Scenario) -> dict:
    """The scenario as a nested dict (without the internal path/source), tables in their order."""
    out = {"name": sc.name, "channel": dataclasses.asdict(sc.channel)}
    for key, table in sc.sections.items():
        out[key] = dataclasses.asdict(table)
    out["run"] = dataclasses.asdict(sc.run)
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file.

    :param path: the ``.toml`` file (tables ``[channel]``, ``[run]`` and those of the registered
        tasks: ``[prediction]``, ``[precoding]``, ``[detection]``, ``[coded]``, ...; every key
        optional, defaults as in the tables' dataclasses)
    :output scenario: :class:`Scenario`. A bad file, key or value raises ``LinksimError`` with one
        line naming the file and the key.

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        sc.channel.num_bs_antennas            # 16
        fast = sc.replace(channel={"speed_kmh": 90.0}, run={"precision": "double"})
    """
    p = Path(path)
    if not p.is_file():
        raise LinksimError(f"scenario file not found: {p}")
    text = read_text(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LinksimError(f"{p}: not valid TOML ({e})") from None
    if not data:
        raise LinksimError(f"{p}: empty scenario (no keys or tables); start from a copy of "
                           "scenarios/quick.toml")
    return from_dict(data, str(p), text)
