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

from .errors import LinksimError


def _pos(v):
    return v > 0


def _nonneg(v):
    return v >= 0


def _prob(v):
    return 0 <= v <= 1


def _f(default, check=None, why="", choices=None):
    return field(default=default, metadata={"check": check, "why": why, "choices": choices})


@dataclass
class Channel:
    """Propagation: 3GPP TR 38.901 UMa/UMi/RMa/CDL (Sionna) or i.i.d. Rayleigh (closed-form tests).

    ``cdl_profile`` and ``delay_spread_s`` apply to ``model = "cdl"`` only (and enter the hash only
    then); ``los`` and ``indoor_probability`` apply to the system-level models uma/umi/rma.
    """

    model: str = _f("uma", choices=("uma", "umi", "rma", "cdl", "rayleigh"))
    cdl_profile: str = _f("A", choices=("A", "B", "C", "D", "E"))
    delay_spread_s: float = _f(100e-9, lambda v: 0 < v <= 1e-5, "must be in (0, 1e-5] s (RMS delay spread)")
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
class Prediction:
    """Channel prediction: ``history`` past samples -> ``horizon`` future samples."""

    num_users: int = _f(4, _pos, "must be > 0")
    history: int = _f(16, _pos, "must be > 0")
    horizon: int = _f(4, _pos, "must be > 0")
    snr_db: float = _f(20.0, why="history noise SNR [dB]")
    num_samples: int = _f(256, _pos, "must be > 0")


@dataclass
class Precoding:
    """Downlink multi-user precoding at one subcarrier (or averaged over all)."""

    num_users: int = _f(4, _pos, "must be > 0")
    tx_power_dbw: float = _f(0.0)
    noise_power_dbw: float = _f(-10.0)
    subcarriers: str = _f("centre", choices=("centre", "all"))
    num_samples: int = _f(256, _pos, "must be > 0")


@dataclass
class Detection:
    """Uplink detection of QAM symbols on OFDM resource elements."""

    num_users: int = _f(4, _pos, "must be > 0")
    bits_per_symbol: int = _f(4, lambda v: v in (2, 4, 6, 8), "must be 2, 4, 6 or 8 (QPSK..256-QAM)")
    symbols_per_sample: int = _f(6, _pos, "must be > 0")
    snr_db: float = _f(10.0)
    target_errors: int = _f(200, _pos, "must be > 0")
    min_samples: int = _f(64, _pos, "must be > 0")
    max_samples: int = _f(2048, _pos, "must be > 0")


@dataclass
class Coded:
    """Coded uplink (task ``coded``): 5G LDPC codewords over the ``[detection]`` link (its users,
    QAM order, slots and SNR), LLRs from pilot-estimated noise; stops as ``[detection]`` does, in
    block errors. See :class:`linksim.chains.coded.CodedChain`."""

    code_rate: float = _f(0.5, lambda v: 0 < v < 1, "must be in (0, 1)")
    coded_block_bits: int = _f(480, _pos, "must be > 0")       # n (k = round(code_rate * n))
    bp_iterations: int = _f(20, _pos, "must be > 0")
    demapping: str = _f("app", choices=("app", "maxlog"))
    pilot_slots: int = _f(1, _pos, "must be > 0")              # leading slots of each subcarrier
    target_block_errors: int = _f(100, _pos, "must be > 0")
    min_samples: int = _f(32, _pos, "must be > 0")
    max_samples: int = _f(256, _pos, "must be > 0")


@dataclass
class Run:
    seed: int = _f(0, _nonneg, "must be >= 0")
    batch_size: int = _f(32, _pos, "must be > 0")
    device: str = _f("cpu", why="torch device: cpu, cuda, cuda:1, ...")
    precision: str = _f("single", choices=("single", "double"))


@dataclass
class Scenario:
    """A validated scenario. ``source`` is the TOML text it came from, ``path`` its file."""

    name: str = _f("unnamed")
    channel: Channel = field(default_factory=Channel)
    prediction: Prediction = field(default_factory=Prediction)
    precoding: Precoding = field(default_factory=Precoding)
    detection: Detection = field(default_factory=Detection)
    coded: Coded = field(default_factory=Coded)
    run: Run = field(default_factory=Run)
    path: str = field(default="<memory>", metadata={"internal": True})
    source: str = field(default="", metadata={"internal": True})

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex) of the canonical content; equal content -> equal hash."""
        d = to_dict(self)
        if self.channel.model != "cdl":   # CDL-only keys: other scenarios keep their former hash
            for key in _CDL_ONLY:
                d["channel"].pop(key)
        if d["coded"] == dataclasses.asdict(Coded()):   # likewise a default [coded] table
            d.pop("coded")
        text = repr(d)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: dict[str, Any]) -> "Scenario":
        """A copy with sections updated, e.g. ``s.replace(detection={"snr_db": 5})``."""
        d = to_dict(self)
        for section, values in changes.items():
            d.setdefault(section, {}).update(values)
        return from_dict(d, self.path, self.source)

    def validate(self) -> None:
        """Cross-field checks (one clear line each)."""
        m = self.channel.num_bs_antennas
        for sec in ("prediction", "precoding", "detection"):
            k = getattr(self, sec).num_users
            if k > m:
                raise LinksimError(f"{self.path}: {sec}.num_users = {k} exceeds the {m} BS antennas "
                                   "(zero-forcing needs num_users <= bs antennas)")
        d = self.detection
        if d.min_samples > d.max_samples:
            raise LinksimError(f"{self.path}: detection.min_samples ({d.min_samples}) > max_samples ({d.max_samples})")
        c = self.coded
        if c.min_samples > c.max_samples:
            raise LinksimError(f"{self.path}: coded.min_samples ({c.min_samples}) > max_samples ({c.max_samples})")


_CDL_ONLY = ("cdl_profile", "delay_spread_s")

_SECTIONS = {"channel": Channel, "prediction": Prediction, "precoding": Precoding,
             "detection": Detection, "coded": Coded, "run": Run}


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
    top = {}
    for key, value in data.items():
        if key == "name":
            if not isinstance(value, str):
                raise LinksimError(f"{path}: name: expected str, got {type(value).__name__}")
            top["name"] = value
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise LinksimError(f"{path}: [{key}] must be a table")
            top[key] = _build(_SECTIONS[key], value, path, key + ".")
        else:
            raise LinksimError(f"{path}: unknown key '{key}' (known: name, {', '.join(_SECTIONS)})")
    sc = Scenario(**top, path=str(path), source=source)
    sc.validate()
    return sc


def to_dict(sc: Scenario) -> dict:
    """The scenario as a nested dict (without the internal path/source)."""
    out = {"name": sc.name}
    for key in _SECTIONS:
        out[key] = dataclasses.asdict(getattr(sc, key))
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file.

    :param path: the ``.toml`` file (tables ``[channel]``, ``[prediction]``, ``[precoding]``,
        ``[detection]``, ``[coded]``, ``[run]``; every key optional, defaults as in the dataclasses here)
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
    text = p.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LinksimError(f"{p}: not valid TOML ({e})") from None
    return from_dict(data, str(p), text)
