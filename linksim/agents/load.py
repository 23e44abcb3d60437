"""Load an agent folder as a block of one kind: ``agent:PATH`` in :func:`linksim.blocks.get`."""
from __future__ import annotations

import hashlib

import torch

from ..config import check_device, check_precision, config, dtypes
from ..errors import LinksimError
from ..registry import arch_spec, kind_of, register_resolver, task_of
from .base import AgentModel, Dims, build_model
from .spec import AgentSpec, read_agent


def agent_tasks(spec: AgentSpec) -> tuple[str, ...]:
    """The tasks the agent is trained for: ``agent.tasks``, default every task of its arch."""
    arch = arch_spec(spec.arch)
    serves = arch.tasks
    tasks = spec.tasks or arch.default_tasks
    bad = [t for t in tasks if t not in serves]
    if bad:
        raise LinksimError(f"{spec.path / 'agent.toml'}: agent.tasks: architecture {spec.arch!r} "
                           f"cannot serve {', '.join(bad)} (it serves {', '.join(serves)})")
    return tasks


def check_modalities(model: AgentModel, task: str, scenario, name: str) -> None:
    """Refuse, in one line, a scenario whose ``task`` table does not list a modality the model reads."""
    needs = model.reads(task)
    if not needs:
        return
    from ..chains import chain_class
    have = chain_class(task).inputs(scenario)
    missing = [m for m in needs if m not in have]
    if missing:
        raise LinksimError(f"agent:{name} reads modality {missing[0]}, which [{task}] modalities = "
                           f"{','.join(have)!r} of {scenario.path} does not list")


class AgentBlock(torch.nn.Module):
    """A trained model used as a block of one kind: inference only (no autograd).

    Inputs are moved to the model's device on entry; complex outputs are cast to the block's
    ``cdtype`` (the model computes in its own float32).

    :param model: the trained :class:`~linksim.agents.base.AgentModel`
    :param task: the task it serves here (its kind is that task's block kind)
    :param name: the agent folder's name
    :param fingerprint: SHA-256 (16 hex) of the weights file
    :param precision: output precision (``None``: ``linksim.config``)
    """

    def __init__(self, model: AgentModel, task: str, name: str, fingerprint: str = "",
                 precision: str | None = None):
        super().__init__()
        self.model = model.eval()
        self.task = task
        self.kind = self.serves = kind_of(task)
        self.name = name
        self.fingerprint = fingerprint
        self.precision = config.precision if precision is None else check_precision(precision)
        self.cdtype = dtypes(self.precision)[1]

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def check_scenario(self, scenario) -> None:
        """Refuse a scenario whose sizes the model cannot serve (a sweep checks every point's
        scenario before it runs any: ``--over num_users=...`` beyond what the agent was built for)."""
        diff = self.model.check_dims(self.task, Dims.from_scenario(scenario, self.task))
        if diff:
            raise LinksimError(f"agent:{self.name}: trained for other sizes: {', '.join(diff)}")
        check_modalities(self.model, self.task, scenario, self.name)

    @property
    def dtype(self) -> torch.dtype:
        """The real dtype of the block's precision (what a sensing block returns)."""
        return dtypes(self.precision)[0]

    def _to(self, x, dev):
        if torch.is_tensor(x):
            return x.to(dev)
        if isinstance(x, dict):          # a sensing block's modalities: cast to the model's float32
            return {k: self._to(v.to(torch.complex64) if torch.is_tensor(v) and v.is_complex() else
                                v.float() if torch.is_tensor(v) and v.is_floating_point() else v, dev)
                    for k, v in x.items()}
        return x

    @torch.no_grad()
    def forward(self, *inputs):
        dev = self.device
        out = self.model.task_forward(self.task, *(self._to(x, dev) for x in inputs))
        if out.is_complex():
            return out.to(self.cdtype)
        return out.to(self.dtype) if out.is_floating_point() and isinstance(inputs[0], dict) else out


def load_agent(path: str, kind: str, scenario, precision: str | None = None,
               device: str | None = None) -> AgentBlock:
    """Load ``path`` as a block of ``kind`` (detector/precoder/predictor) for ``scenario``.

    Everything is checked before any compute: agent.toml, that the agent was trained for the
    task of ``kind``, the sizes it was trained for against the scenario, and the weights file.
    Only the sizes must match (the task's ``must_match``, :meth:`AgentModel.check_dims`): the scenario may differ in
    anything else, e.g. an agent trained on ``quick.toml`` (UMa) is evaluated on
    ``quick-umi.toml``, ``quick-rma.toml`` or ``quick-cdl.toml`` without retraining.
    Usually reached through :func:`linksim.blocks.get` with ``"agent:PATH"``.

    :param path: the agent folder (``agent.toml`` + ``model.safetensors``)
    :param kind: ``detector`` | ``precoder`` | ``predictor``
    :param scenario: the scenario it will run in (sizes are checked; ``[run]`` gives the device
        and the output precision unless ``precision``/``device`` are given)
    :output block: :class:`AgentBlock` with the protocol of ``kind``

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        det = linksim.blocks.get("agent:agents/oampnet", kind="detector", scenario=sc)
        h = linksim.ChannelSource(sc).sample(2, num_users=4, num_time=1)[:, 0, :, :, 0].mT  # [2,16,4]
        x = linksim.blocks.qam.random_symbols((2, 4, 6), 4)[1]                               # [2,4,6]
        x_hat = det(h @ x, h, 1e-3)                                                          # [2,4,6]
    """
    spec = read_agent(path)
    try:
        task = task_of(kind)
    except LinksimError as e:
        raise LinksimError(f"agent:{path}: {e}") from None
    tasks = agent_tasks(spec)
    if task not in tasks:
        raise LinksimError(f"agent:{path} ({spec.arch}) is trained for {', '.join(tasks)}; this chain "
                           f"needs a {kind} ({task})")
    if not spec.weights.is_file() or "dims" not in spec.result:
        raise LinksimError(f"agent:{path}: not trained yet (no {spec.weights.name}); run `linksim train {path}`")
    trained = Dims(**spec.result["dims"])
    wanted = Dims.from_scenario(scenario, task)
    model = build_model(spec.arch, trained, spec.model, tasks)
    diff = model.check_dims(task, wanted)
    if diff:
        raise LinksimError(f"agent:{path}: trained for other sizes than {scenario.path}: {', '.join(diff)}")
    check_modalities(model, task, scenario, path)
    recorded = spec.result.get("backbone", {}).get("fingerprint")
    if recorded and model.fingerprint and recorded != model.fingerprint:
        raise LinksimError(f"agent:{path}: backbone {spec.model.get('backbone', {}).get('source', 'smollm2')!r} "
                           f"has fingerprint {model.fingerprint}, the agent was trained on {recorded}")
    from safetensors import SafetensorError
    try:
        model.load_weights(spec.path)
    except (ValueError, OSError, RuntimeError, SafetensorError) as e:   # damaged, missing, mismatched
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LinksimError(f"agent:{path}: its weights cannot be loaded as {spec.arch!r} ({first})") from None
    dev = check_device(device if device is not None else scenario.run.device)
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in model.weight_files(spec.path))).hexdigest()[:16]
    return AgentBlock(model.to(dev), task, spec.path.name, digest,
                      precision if precision is not None else scenario.run.precision)


def _resolve(path: str, kind: str, scenario, precision: str | None = None, device: str | None = None):
    return load_agent(path, kind, scenario, precision, device)


register_resolver("agent:", _resolve)

