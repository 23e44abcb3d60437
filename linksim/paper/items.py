"""What ``linksim paper`` makes: data folders (sweeps into ``OUT/<data>/results.csv``), the figures
drawn from them and the tables read from them.

A block is a registered name (``wmmse``), ``@role`` (the budget's agent of that role, e.g. ``@gru``),
or a loop pair (``ar+wmmse``, ``@llm_multi+wmmse``). ``@backbone`` is the agent trained on the user's
``--backbone`` (left out without it). Every number of a figure or table is a row of a data folder's
``results.csv``: figures and tables only select and lay them out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CP_BLOCKS = ("outdated", "ar", "pad", "wiener", "@rnn", "@lstm", "@gru", "@transformer",
             "@llm_prediction", "@llm_multi")
ABLATION = ("@ablation", "@loftq", "@nf4", "@random_init", "@no_backbone", "@backbone")
GEN_CP = ("outdated", "ar", "@gru", "@llm_prediction", "@llm_multi")
GEN_PRE = ("zf", "wmmse", "@cnn", "@llm_precoding", "@llm_multi")
GENERALISATION = ("umi", "rma", "cdl")        # budget [scenarios] keys: the agents are not retrained
GEN_NAMES = {"umi": "UMi", "rma": "RMa", "cdl": "CDL"}
# the ablations' single operating points: CP over speeds 10..100 km/h (uniform per user) at 20 dB
ABLATION_CHANGES = {"channel": {"speed_kmh": [10.0, 100.0]}}


@dataclass(frozen=True)
class Sweep:
    """One ``linksim sweep`` into the data folder: ``over`` is a grid of the budget (``grid:fig5``)
    or a literal ``NAME=V``."""

    task: str
    blocks: tuple[str, ...]
    over: str
    seeds: bool = False      # every training seed's agent of each @role (tables: mean and spread)


@dataclass(frozen=True)
class Data:
    """A data folder: sweeps over one scenario (the budget's, with ``changes`` and the budget's
    ``[changes].<name>`` applied), or validation curves (``logs``: roles whose train_log.csv is
    read, every seed's agent with ``seeds``), or training memory (``memory``: roles probed in a
    fresh process each)."""

    name: str
    sweeps: tuple[Sweep, ...] = ()
    changes: dict = field(default_factory=dict)
    scenario: str = ""       # a budget [scenarios] key instead of the budget's scenario
    logs: tuple[str, ...] = ()
    log_task: str = ""
    seeds: bool = False
    memory: tuple[str, ...] = ()

    def __hash__(self):
        return hash(self.name)


@dataclass(frozen=True)
class Figure:
    """Curves of ``metric`` vs ``x_name`` of ``task`` from data folder ``data``."""

    name: str
    data: str
    task: str
    metric: str
    x_name: str
    title: str
    paper: str = ""          # what the paper shows there (README)
    log_y: bool = False
    labels: tuple = ()       # (role, legend label) pairs that override the usual names
    group: str = "paper"     # `--only GROUP` runs a group; no --only: the "paper" group


@dataclass(frozen=True)
class Column:
    header: str
    task: str
    metric: str
    x_name: str
    x: float
    digits: int = 2
    data: str = ""           # another data folder than the table's


@dataclass(frozen=True)
class Table:
    """Rows = blocks (as in sweeps; ``@llm_single`` is the single-task LLM agent of each column's
    task), columns = (task, metric, point) cells of data folder ``data`` (or the column's own).
    A role with several training seeds shows their mean ± half their range, and every later row's
    difference to the first is printed beside the seed-to-seed spread (decided only outside it)."""

    name: str
    data: str
    title: str
    rows: tuple[str, ...]
    columns: tuple[Column, ...]
    paper: str = ""
    group: str = "paper"


DATA = (
    Data("fig5", (Sweep("prediction", CP_BLOCKS, "grid:fig5"),)),
    Data("fig6", (Sweep("prediction", CP_BLOCKS, "grid:fig6"),), changes={"channel": {"speed_kmh": [10.0, 100.0]}}),
    Data("fig7", (Sweep("precoding", ("zf", "wmmse", "wmmse_best", "@cnn", "@llm_precoding", "@llm_multi",
                                      "dpc_bound"), "grid:fig7"),)),
    Data("fig8", (Sweep("precoding", ("zf", "wmmse", "wmmse_best", "@cnn_padded", "@llm_precoding", "@llm_multi",
                                      "dpc_bound"),
                        "grid:fig8"),)),
    Data("detection", (Sweep("detection", ("mf", "lmmse", "@dnn", "@detnet", "@oampnet", "@llm_detection",
                                           "@llm_multi", "kbest"), "grid:fig9"),)),
    Data("training", logs=("@ablation", "@single_prompt", "@single_noprompt"), log_task="detection", seeds=True),
    Data("ablation", (Sweep("prediction", ABLATION, "snr_db=20", seeds=True),
                      Sweep("precoding", ABLATION, "tx_power_dbw=0", seeds=True),
                      Sweep("detection", ABLATION, "snr_db=10", seeds=True)),
         changes=ABLATION_CHANGES, memory=("@ablation", "@loftq", "@nf4")),
    Data("multitask", (Sweep("prediction", ("@llm_multi", "@llm_prediction"), "speed_kmh=10,50,100", seeds=True),
                       Sweep("precoding", ("@llm_multi", "@llm_precoding"), "tx_power_dbw=0", seeds=True),
                       Sweep("precoding", ("@llm_multi", "@llm_precoding"), "grid:multitask_k", seeds=True),
                       Sweep("detection", ("@llm_multi", "@llm_detection"), "snr_db=12", seeds=True))),
    Data("coded", (Sweep("coded", ("lmmse", "@oampnet", "@llm_multi", "kbest"), "grid:coded"),)),
    *(Data(f"gen_{s}", (Sweep("prediction", GEN_CP, "grid:gen"), Sweep("precoding", GEN_PRE, "tx_power_dbw=0")),
           scenario=s) for s in GENERALISATION),
    Data("loop", (Sweep("loop", ("outdated+wmmse", "ar+wmmse", "@best_predictor+wmmse", "@llm_prediction+wmmse",
                                 "@llm_multi+wmmse", "genie+wmmse", "outdated+zf", "ar+zf", "@llm_multi+zf",
                                 "genie+zf"), "grid:loop"),)),
)

FIGURES = (
    Figure("fig5", "fig5", "prediction", "nmse_db", "speed_kmh", "CP NMSE vs user speed (history SNR 20 dB)",
           "Fig. 5: NMSE vs speed, LLaMA-2 7B agent about -16 dB averaged"),
    Figure("fig6", "fig6", "prediction", "nmse_db", "snr_db", "CP NMSE vs history SNR (speeds 10-100 km/h)",
           "Fig. 6: NMSE vs SNR"),
    Figure("fig7", "fig7", "precoding", "sum_rate", "tx_power_dbw", "Sum-rate vs transmit power (K = 4)",
           "Fig. 7: sum-rate vs power, 128 antennas"),
    Figure("fig8", "fig8", "precoding", "sum_rate", "num_users", "Sum-rate vs number of users (P = 0 dBW)",
           "Fig. 8: sum-rate vs K, one model for K = 3..8"),
    Figure("fig9", "detection", "detection", "nmse_db", "snr_db", "DET NMSE vs SNR", "Fig. 9: DET NMSE vs SNR"),
    Figure("fig10", "detection", "detection", "ser", "snr_db", "DET SER vs SNR", "Fig. 10: SER vs SNR",
           log_y=True),
    Figure("fig11", "training", "training", "val_ser", "samples",
           "Detection: validation SER vs training samples (every seed)",
           "Fig. 11: loss vs step with and without prompt", log_y=True,
           labels=(("ablation", "multi-task, prompt"), ("llm_multi", "multi-task, prompt"))),
    Figure("coded", "coded", "coded", "bler", "snr_db", "Coded uplink: 5G LDPC block error rate vs SNR",
           log_y=True),
    Figure("loop", "loop", "loop", "sum_rate", "speed_kmh", "In the loop: sum-rate on the true future channel"),
    Figure("loop_ber", "loop", "loop", "ber", "speed_kmh",
           "In the loop: uncoded 16-QAM BER at the users", log_y=True),
)

_CP = Column("CP NMSE [dB]", "prediction", "nmse_db", "snr_db", 20.0)
_DET = Column("DET NMSE [dB]", "detection", "nmse_db", "snr_db", 10.0)
_PRE = Column("PRE sum-rate [bit/s/Hz]", "precoding", "sum_rate", "tx_power_dbw", 0.0)
TABLES = (
    Table("table1", "ablation", "Full precision vs LoftQ 4-bit vs plain 4-bit (NF4) backbone",
          ("@ablation", "@loftq", "@nf4"),
          (_CP, _DET, _PRE, Column("backbone [MiB]", "training", "backbone_mib", "batch_size", 32.0, 1),
           Column("peak training RSS [MiB]", "training", "train_peak_mib", "batch_size", 32.0, 0)),
          "Table I: LLaMA-2 7B -16.37 / LoftQ -16.25 / 4-bit -15.68 dB CP NMSE"),
    Table("table2", "ablation", "Backbone ablation", ("@ablation", "@random_init", "@no_backbone", "@backbone"),
          (_CP, _DET, _PRE), "Table II: GPT-2 -15.39, no backbone -13.49 dB CP NMSE"),
    Table("multitask", "multitask", "One multi-task agent vs a single-task agent per task (same steps)",
          ("@llm_multi", "@llm_single"),
          (Column("CP NMSE 10 km/h [dB]", "prediction", "nmse_db", "speed_kmh", 10.0),
           Column("CP NMSE 50 km/h [dB]", "prediction", "nmse_db", "speed_kmh", 50.0),
           Column("CP NMSE 100 km/h [dB]", "prediction", "nmse_db", "speed_kmh", 100.0),
           Column("PRE K=4, 0 dBW [bit/s/Hz]", "precoding", "sum_rate", "tx_power_dbw", 0.0),
           Column("PRE K=8 [bit/s/Hz]", "precoding", "sum_rate", "num_users", 8.0),
           Column("DET NMSE 12 dB [dB]", "detection", "nmse_db", "snr_db", 12.0),
           Column("DET SER 12 dB", "detection", "ser", "snr_db", 12.0, 4)),
          "the paper: multi-task within a small margin of single-task agents"),
    Table("generalisation", "fig5", "Trained on UMa, tested without retraining: CP NMSE at 40 km/h [dB]",
          GEN_CP, (Column("UMa", "prediction", "nmse_db", "speed_kmh", 40.0),
                   *(Column(GEN_NAMES[s], "prediction", "nmse_db", "speed_kmh", 40.0,
                            data=f"gen_{s}") for s in GENERALISATION)),
          "the paper claims LLMs generalise better than small networks"),
    Table("generalisation_pre", "fig7", "Trained on UMa, tested without retraining: sum-rate at 0 dBW, K = 4",
          GEN_PRE, (Column("UMa", "precoding", "sum_rate", "tx_power_dbw", 0.0),
                    *(Column(GEN_NAMES[s], "precoding", "sum_rate", "tx_power_dbw", 0.0,
                             data=f"gen_{s}") for s in GENERALISATION))),
)


# -- the universal agent (issue 19): seven tasks on scenarios/universal.toml ---------------------------
#: per sensing task: its rows (universal, single-task LLM, small network, classical, limit) and columns
UNI_TASKS = {
    "los": (("kfactor",), (("accuracy", 3), ("f1", 3))),
    "beam": (("last_beam", "beam_search"), (("top1_accuracy", 3), ("top3_accuracy", 3), ("gain_loss_db", 2))),
    "pathloss": (("uma_formula", "rsrp_power"), (("rmse_db", 2),)),
    "position": (("angle_power", "knn", "gnss_report"), (("pos_err_m", 1), ("pos_err_p90_m", 1))),
}
#: the mechanism ablations: the universal agent with one mechanism switched off
UNI_ABLATION = ("@universal", "@uni_no_prefix", "@uni_no_encoders", "@uni_no_gate", "@uni_no_layers",
                "@uni_no_uncertainty")
#: the headline metric of each task in the ablation and dropout tables
UNI_HEADLINE = (("prediction", "nmse_db", "CP NMSE [dB]", 2), ("precoding", "sum_rate", "PRE [bit/s/Hz]", 2),
                ("detection", "ser", "DET SER", 4), ("los", "accuracy", "LOS acc.", 3),
                ("beam", "top1_accuracy", "beam top-1", 3), ("pathloss", "rmse_db", "PL RMSE [dB]", 2),
                ("position", "pos_err_m", "pos. err. [m]", 1))
#: the operating point of each task in the universal data folders
UNI_POINT = {"prediction": ("snr_db", 20.0), "precoding": ("tx_power_dbw", 0.0), "detection": ("snr_db", 10.0),
             **{t: ("snr_db", 20.0) for t in UNI_TASKS}}
#: modality-dropout folders: modality -> the zeroed values per sensing table (beam's CSI is its history)
UNI_DROPPED = {m: {t: {"zeroed": "csi_history" if (m, t) == ("csi", "beam") else m} for t in UNI_TASKS}
               for m in ("csi", "gnss", "rsrp")}


def _point(task: str) -> str:
    x_name, x = UNI_POINT[task]
    return f"{x_name}={x:g}"


def _uni_sweeps(blocks_of) -> tuple:
    return tuple(Sweep(t, blocks_of(t), _point(t), seeds=True) for t, *_ in UNI_HEADLINE if blocks_of(t))


#: the link tasks: the universal agent beside the multi-task agent and the classical reference
UNI_LINK = {"prediction": ("@universal", "@llm_multi", "ar"), "precoding": ("@universal", "@llm_multi", "wmmse"),
            "detection": ("@universal", "@llm_multi", "lmmse")}
DATA += (
    Data("universal", _uni_sweeps(lambda t: UNI_LINK.get(t) or ("@universal", f"@llm_{t}", f"@sensenet_{t}")
                                  + UNI_TASKS[t][0]), scenario="universal"),
    Data("universal_ablation", _uni_sweeps(lambda t: UNI_ABLATION), scenario="universal"),
    *(Data(f"universal_no_{m}", _uni_sweeps(lambda t: ("@universal", "@uni_no_gate") if t in UNI_TASKS else ()),
           changes=UNI_DROPPED[m], scenario="universal") for m in UNI_DROPPED),
)


def _col(task: str, metric: str, header: str, digits: int, data: str = "") -> Column:
    return Column(header, task, metric, *UNI_POINT[task], digits=digits, data=data)


TABLES += (
    *(Table(f"universal_{t}", "universal", f"{t}: universal agent vs single-task agent, small network, classical",
            ("@universal", f"@llm_{t}", f"@sensenet_{t}") + rows,
            tuple(_col(t, m, m, d) for m, d in cols), group="universal")
      for t, (rows, cols) in UNI_TASKS.items()),
    Table("universal_link", "universal", "The link tasks: universal agent vs the multi-task agent (Zheng & Dai)",
          ("@universal", "@llm_multi"),
          tuple(_col(t, m, h, d) for t, m, h, d in UNI_HEADLINE[:3]), group="universal"),
    Table("universal_ablation", "universal_ablation", "Universal agent: each mechanism switched off",
          UNI_ABLATION, tuple(_col(t, m, h, d) for t, m, h, d in UNI_HEADLINE), group="universal",
          paper="AI2MMUM: learned prefixes help; MMSense: the gate helps beam selection, multi-layer "
                "attention helps regression, not classification"),
    Table("universal_dropout", "universal_ablation", "Modality dropout: one modality zeroed at inference",
          ("@universal", "@uni_no_gate"),
          tuple(_col(t, m, f"{h}, all", d) for t, m, h, d in UNI_HEADLINE[3:])
          + tuple(_col(t, m, f"{h}, no {drop}", d, data=f"universal_no_{drop}")
                  for drop in UNI_DROPPED for t, m, h, d in UNI_HEADLINE[3:]), group="universal",
          paper="MMSense: the gate re-weights the modalities that remain"),
)


def item_names() -> list[str]:
    """Every item name ``--only`` accepts (besides the group names of :func:`groups`)."""
    return [f.name for f in FIGURES] + [t.name for t in TABLES]


def groups() -> dict[str, list[str]]:
    """Group name -> its items (``paper``: Zheng & Dai's figures and tables, what runs without ``--only``)."""
    out: dict[str, list[str]] = {}
    for item in (*FIGURES, *TABLES):
        out.setdefault(item.group, []).append(item.name)
    return out


def data_of(name: str) -> set[str]:
    """The data folders item ``name`` reads."""
    for f in FIGURES:
        if f.name == name:
            return {f.data}
    for t in TABLES:
        if t.name == name:
            return {t.data} | {c.data for c in t.columns if c.data}
    raise KeyError(name)
