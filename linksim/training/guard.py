"""Training never replaces a trained agent's weights unless the user asks for it.

:func:`check_overwrite` is the first thing :func:`~linksim.training.train_agent` does (before any
pool, model or checkpoint is touched); :func:`trial_copy` is what ``linksim train --out DIR`` trains
instead of the folder it was given, so that a short trial (``--steps 5``) leaves shipped agents
as they are.
"""
from __future__ import annotations

from pathlib import Path

from ..agents.spec import WEIGHTS, read_agent
from ..errors import LinksimError


def is_trained(path: str | Path) -> bool:
    """Whether the agent folder holds finished training: weights and the ``[result]`` sizes
    (the same test :func:`~linksim.agents.load_agent` uses to call an agent trained)."""
    spec = read_agent(path)
    return spec.weights.is_file() and "dims" in spec.result


def check_overwrite(path: str | Path, overwrite: bool) -> None:
    """Refuse, in one line, to train a trained agent unless ``overwrite`` is set.

    A folder with a checkpoint but no final weights (an interrupted run) is not trained yet: it
    resumes without asking.

    :param path: the agent folder
    :param overwrite: ``True`` (``linksim train --force``): retraining in place is wanted

    .. rubric:: Examples

    .. code-block:: python

        from linksim.training.guard import check_overwrite
        check_overwrite("agents/oampnet", overwrite=False)   # LinksimError: already trained ...
    """
    if overwrite or not is_trained(path):
        return
    steps = read_agent(path).result.get("steps", "?")
    raise LinksimError(f"{path}: already trained ({steps} steps in {WEIGHTS}); training again would "
                       "replace its weights: use --out DIR to train a copy, or --force to retrain it "
                       "in place")


def trial_copy(path: str | Path, out: str | Path) -> Path:
    """A copy of the agent folder ``path`` to train in: ``out/<folder name>/agent.toml`` with the
    same recipe, its scenario as an absolute path (the copy may live anywhere) and no
    ``[result]``. An existing copy is kept as it is (a trial resumes from its checkpoint).

    :param path: the agent folder to copy (only its agent.toml is read)
    :param out: the folder that receives the copy
    :output folder: the copy's folder (``out/<name>``)

    .. rubric:: Examples

    .. code-block:: python

        from linksim.training import train_agent
        from linksim.training.guard import trial_copy
        d = trial_copy("agents/oampnet", "/tmp/trials")       # /tmp/trials/oampnet
        train_agent(d, steps=5)                               # agents/oampnet is untouched
    """
    import tomlkit

    spec = read_agent(path)
    dest = Path(out) / spec.path.resolve().name
    if dest.resolve() == spec.path.resolve():
        raise LinksimError(f"--out {out}: is where {path} already is; choose another folder")
    if (dest / "agent.toml").is_file():
        read_agent(dest)                                   # a damaged copy: one line, not a traceback
        return dest
    doc = tomlkit.parse((spec.path / "agent.toml").read_text(encoding="utf-8"))
    doc["agent"]["scenario"] = str(spec.scenario_path().resolve())
    doc.pop("result", None)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "agent.toml").write_text(tomlkit.dumps(doc), encoding="utf-8")
    except OSError as e:
        raise LinksimError(f"--out {out}: cannot write {dest / 'agent.toml'} ({e.strerror or e})") from None
    return dest
