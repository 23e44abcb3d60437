r"""The multi-task LLM agent (Zheng & Dai, arXiv 2412.20772): one frozen LLM with LoRA serves
channel prediction, precoding and detection, told apart by a text instruction.

Data flow of one task (``task_forward(task, *inputs)``)::

    block inputs --head.encode--> data tokens [b, n, d]
    instruction text --tokenizer, frozen embedding--> prompt [1, p, d] --LLM--> prefix key/values (once)
    [prefix; data tokens] --frozen LLM + LoRA--> hidden [b, n, d] --head.decode--> block output

Stored as ``agent.toml`` (``[model.backbone]`` names the backbone; ``[result.backbone]`` records its
fingerprint), ``model.safetensors`` (the task heads only) and ``adapter/`` (peft's
``save_pretrained``: the LoRA weights). The backbone itself is never copied into the agent.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ....errors import LinksimError
from ....registry import register_arch
from ...base import AgentModel, Dims
from .heads import HEADS

__all__ = ["LLMAgent"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BACKBONE_KEYS = {"source": "smollm2", "layers": 6, "random_init": False, "quantization": "none",
                 "loftq_iters": 1, "width": 576}
LORA_KEYS = {"r": 16, "alpha": 16, "dropout": 0.05, "targets": list(LORA_TARGETS)}
ADAPTER = "adapter"


def _options(given: dict | None, defaults: dict, table: str) -> dict:
    given = dict(given or {})
    bad = sorted(set(given) - set(defaults))
    if bad:
        raise LinksimError(f"llm: unknown key 'model.{table}.{bad[0]}' (known: {', '.join(defaults)})")
    return defaults | given


def _load_backbone(opts: dict):
    """``[model.backbone]`` -> a frozen :class:`~linksim.llm.Backbone` or None (``source = "none"``)."""
    from ....llm import BackboneSpec, load_backbone, tiny_backbone

    if opts["source"] == "none":
        return None
    if opts["source"] == "tiny":                  # tests: a small random LLaMA
        return tiny_backbone(layers=int(opts["layers"]))
    return load_backbone(BackboneSpec(opts["source"], int(opts["layers"]), bool(opts["random_init"])))


# the generic protocol tests fit one batch from scratch on Clarke channels, where ar is already
# the best linear predictor: their tiny instance starts CP from outdated CSI (the ar start is
# tested in tests/test_llm_agent.py)
@register_arch("llm", tasks=("prediction", "precoding", "detection"),
               tiny={"backbone": {"source": "tiny", "layers": 2}, "users": [1, 4],
                     "heads": {"prediction": {"base": "outdated"}}})
class LLMAgent(AgentModel):
    r"""One LoRA-tuned LLM backbone as channel predictor, precoder and detector.

    For a task :math:`\tau` with instruction tokens :math:`\mathbf{e}^{\tau}_{1..p}` (the frozen
    embedding of :func:`linksim.llm.prompt.instruction`) and data tokens
    :math:`\mathbf{z}_{1..n} = \operatorname{enc}_\tau(\text{inputs})`:

    .. math::
        \mathbf{o}_{1..n} = \operatorname{LLM}_{W_0 + BA}\big([\mathbf{e}^{\tau}_{1..p};
            \mathbf{z}_{1..n}]\big)_{p+1..p+n}, \qquad
        \text{output} = \operatorname{dec}_\tau(\mathbf{o}_{1..n}, \text{inputs})

    with the backbone weights :math:`W_0` frozen and LoRA :math:`BA` (rank ``r``, scale
    ``alpha / r``) on the ``targets`` projections. Under causal attention the prompt's key/values do
    not depend on the data, so they are computed once with batch 1 and shared by the batch (with
    gradients in training; cached per task and K in inference until the next ``train()``).
    Heads (:mod:`.heads`): CP per user, all antennas per token, filter taps out; DET from unbiased
    LMMSE; PRE ``(p, lambda)`` for any K in ``users``.

    :param dims: scenario sizes (M, K for detection, F, L, P, bits, T)
    :param backbone: ``[model.backbone]``: ``source`` (``"smollm2"`` default, a ``.gguf``, a
        folder, a cached hub id, ``"tiny"`` for tests, ``"none"``: no LLM, encoders straight into
        decoders), ``layers`` (6), ``random_init`` (false), ``quantization`` (``"none"``, ``"nf4"``,
        ``"loftq"``), ``loftq_iters`` (1), ``width`` (token width without an LLM, 576)
    :param lora: ``[model.lora]``: ``r`` (16), ``alpha`` (16), ``dropout`` (0.05), ``targets``
        (attention and MLP projections)
    :param prompt: ``"text"`` (default) or ``"none"`` (no instruction: the ablation)
    :param users: ``[K_min, K_max]`` served in precoding (default ``[3, 8]``)
    :param cp_loss: ``"nmse"`` (default: per-user NMSE, linear) or ``"log_nmse"``
    :param heads: per-task head options, e.g. ``{prediction = {hidden = 256}}``

    :input task: ``"prediction"`` | ``"precoding"`` | ``"detection"``, then that task's block inputs
        (see :mod:`linksim.agents.base`).
    :output: that task's block output.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents import Dims, build_model
        dims = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=48, history=16, horizon=4,
                    bits_per_symbol=4, symbols_per_sample=6)
        agent = build_model("llm", dims, {"backbone": {"source": "tiny", "layers": 2}}).eval()
        h = torch.randn(2, 5, 16, dtype=torch.complex64)                 # K = 5 users
        w = agent.task_forward("precoding", h, 1.0, 0.1)                 # [2, 16, 5]
        # untrained: RZF directions with equal powers; sum |w|^2 = 1 per sample
    """

    layouts = {"prediction": "user"}

    def __init__(self, dims: Dims, backbone: dict | None = None, lora: dict | None = None,
                 prompt: str = "text", users=(3, 8), cp_loss: str = "nmse", heads: dict | None = None):
        super().__init__()
        self.dims = dims
        self.backbone_options = _options(backbone, BACKBONE_KEYS, "backbone")
        self.lora_options = _options(lora, LORA_KEYS, "lora")
        if prompt not in ("text", "none"):
            raise LinksimError(f"llm: model.prompt must be 'text' or 'none', got {prompt!r}")
        if cp_loss not in ("nmse", "log_nmse"):
            raise LinksimError(f"llm: model.cp_loss must be 'nmse' or 'log_nmse', got {cp_loss!r}")
        if (not isinstance(users, (list, tuple)) or len(users) != 2 or not all(isinstance(u, int) for u in users)
                or not 1 <= users[0] <= users[1] <= dims.num_bs_antennas):
            raise LinksimError(f"llm: model.users must be [K_min, K_max] with 1 <= K_min <= K_max <= "
                               f"{dims.num_bs_antennas} antennas, got {users!r}")
        quant = self.backbone_options["quantization"]
        if quant not in ("none", "nf4", "loftq"):
            raise LinksimError(f"llm: model.backbone.quantization must be none, nf4 or loftq, got {quant!r}")
        self.prompt_mode, self.cp_loss = prompt, cp_loss
        self.users_range = (int(users[0]), int(users[1]))
        self.prefix_mode = "cache"          # "concat": run the prompt per sample (reference/bench)
        self._prefix_cache: dict = {}
        self._prompt_ids: dict = {}

        bb = _load_backbone(self.backbone_options)
        self.llm = None
        self.quant_report: dict = {}
        width = int(self.backbone_options["width"]) if bb is None else bb.width
        if bb is not None:
            self.llm = bb
            self._add_lora(bb)
            if quant != "none":
                from ....llm.quant import quantize_lora_model
                self.quant_report = quantize_lora_model(self.peft, quant, int(self.backbone_options["loftq_iters"]))
        heads = dict(heads or {})
        bad = sorted(set(heads) - set(HEADS))
        if bad:
            raise LinksimError(f"llm: unknown table 'model.heads.{bad[0]}' (known: {', '.join(HEADS)})")
        try:
            self.heads = nn.ModuleDict({t: cls(dims, width, **heads.get(t, {})) for t, cls in HEADS.items()})
        except TypeError as e:
            raise LinksimError(f"llm: bad model.heads options ({e})") from None

    # ------------------------------------------------------------------------------ backbone
    def _add_lora(self, bb) -> None:
        from peft import LoraConfig, get_peft_model

        o = self.lora_options
        if not isinstance(o["targets"], list) or not o["targets"]:
            raise LinksimError("llm: model.lora.targets must be a non-empty list of module names")
        try:
            import warnings
            cfg = LoraConfig(r=int(o["r"]), lora_alpha=float(o["alpha"]), lora_dropout=float(o["dropout"]),
                             target_modules=list(o["targets"]), bias="none")
            # LoRA layers are injected into bb.model in place; the PeftModel wrapper is kept out of
            # the module tree (its parameters are bb.model's) and used for saving adapters
            with warnings.catch_warnings():      # transformers 5 deprecation noise inside peft
                warnings.simplefilter("ignore", FutureWarning)
                self.__dict__["peft"] = get_peft_model(bb.model, cfg)
            # adapter_config.json names the backbone as a user would (not a local cache path)
            src = self.backbone_options["source"]
            self.peft.peft_config["default"].base_model_name_or_path = (
                "HuggingFaceTB/SmolLM2-135M-Instruct" if src == "smollm2" else src)
        except ValueError as e:
            raise LinksimError(f"llm: model.lora: {str(e).splitlines()[0]}") from None

    @property
    def fingerprint(self) -> str:
        return "none" if self.llm is None else self.llm.fingerprint

    def train(self, mode: bool = True):
        self._prefix_cache.clear()
        return super().train(mode)

    def _prompt(self, task: str, k: int | None) -> torch.Tensor:
        """Prompt embeddings ``[1, p, d]`` of ``task`` (``k`` users for precoding; None: ``dims``)."""
        from ....llm.prompt import instruction_for

        key = (task, k)
        if key not in self._prompt_ids:
            self._prompt_ids[key] = self.llm.tokenize(instruction_for(task, self.dims, num_users=k))
        return self.llm.embed(self._prompt_ids[key])[None]

    def _prefix(self, task: str, k: int | None):
        """The instruction's key/values, batch 1 (cached per task and K outside autograd)."""
        key = (task, k)
        cacheable = not torch.is_grad_enabled()
        if cacheable and key in self._prefix_cache:
            return self._prefix_cache[key]
        _, cache = self.llm(self._prompt(task, k), use_cache=True)
        if cacheable:
            self._prefix_cache[key] = cache
        return cache

    def run_llm(self, task: str, tokens: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Data tokens ``[b, n, d]`` -> hidden states ``[b, n, d]`` after the task's instruction."""
        if self.llm is None:
            return tokens
        if self.prompt_mode == "none":
            return self.llm(tokens)
        if self.prefix_mode == "concat":
            prompt = self._prompt(task, k)
            full = self.llm(torch.cat([prompt.expand(tokens.shape[0], -1, -1), tokens], 1))
            return full[:, prompt.shape[1]:]
        return self.llm(tokens, past_key_values=self._prefix(task, k))

    # ------------------------------------------------------------------------------ tasks
    def task_forward(self, task: str, *inputs):
        if task not in self.tasks:
            raise LinksimError(f"llm: serves {', '.join(self.tasks)}, not {task}")
        return self.heads[task].run(self, *inputs)

    def forward(self, task: str, *inputs):
        return self.task_forward(task, *inputs)

    def check_users(self, k: int) -> None:
        lo, hi = self.users_range
        if not lo <= k <= hi:
            raise LinksimError(f"llm precoding: trained for K = {lo}..{hi} users, got K = {k}")

    def predict_p_lambda(self, h, p_tx, noise_var):
        """Precoding's structure parameters ``(p, lam)`` (:meth:`.heads.PrecodingHead.p_lambda`)."""
        return self.heads["precoding"].p_lambda(self, h, p_tx, noise_var)

    # ------------------------------------------------------------------------------ training
    def training_loss(self, batch: dict) -> torch.Tensor:
        """The loss of one batch of ``batch["task"]``, by that task's head (unweighted; the
        trainer weights tasks): see each head's ``loss``."""
        task = batch["task"]
        if task not in self.heads:
            raise LinksimError(f"llm: unknown task {task!r} in a training batch")
        return self.heads[task].loss(self, batch)

    # ------------------------------------------------------------------------------ storage
    def check_dims(self, task: str, wanted: Dims) -> list[str]:
        """Sizes of a scenario this agent cannot serve for ``task`` (empty: fine): the head's
        ``must_match``; K within ``users`` for a head that serves a range of K."""
        out = [f"{k}={getattr(self.dims, k)} (scenario: {getattr(wanted, k)})"
               for k in self.heads[task].must_match if getattr(self.dims, k) != getattr(wanted, k)]
        users = self.users_for(task)
        if users is not None and not users[0] <= wanted.num_users <= users[1]:
            out.append(f"num_users in {users[0]}..{users[1]} (scenario: {wanted.num_users})")
        return out

    def users_for(self, task: str) -> tuple[int, int] | None:
        """``users`` for a head that serves a range of K (precoding), else ``None``."""
        return self.users_range if getattr(self.heads[task], "users_range", False) else None

    def backbone_record(self) -> dict:
        """What agent.toml ``[result.backbone]`` records beside the fingerprint."""
        return {k: v for k, v in self.backbone_options.items() if k in ("source", "layers", "quantization")}

    def head_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if k.startswith("heads.")}

    def save_weights(self, folder: Path) -> None:
        """``model.safetensors`` (heads) + ``adapter/`` (LoRA, peft's ``save_pretrained``)."""
        from safetensors.torch import save_file

        from ...spec import WEIGHTS
        save_file({k: v.detach().contiguous() for k, v in self.head_state().items()}, str(folder / WEIGHTS))
        if self.llm is not None:
            # embeddings are never LoRA targets; "auto" would look the backbone up on the Hub
            self.peft.save_pretrained(str(folder / ADAPTER), save_embedding_layers=False)

    def load_weights(self, folder: Path) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        from ...spec import WEIGHTS
        heads = load_file(str(folder / WEIGHTS))
        mine = self.head_state()
        if set(heads) != set(mine):
            extra = sorted(set(heads) ^ set(mine))[0]
            raise ValueError(f"heads do not match the architecture (e.g. {extra})")
        self.load_state_dict(heads, strict=False)
        if self.llm is not None:
            f = folder / ADAPTER / "adapter_model.safetensors"
            if not f.is_file():
                raise ValueError(f"no LoRA adapter ({ADAPTER}/adapter_model.safetensors)")
            res = set_peft_model_state_dict(self.peft, load_file(str(f)))
            if getattr(res, "unexpected_keys", None):
                raise ValueError(f"adapter does not match model.lora (e.g. {res.unexpected_keys[0]})")

    def weight_files(self, folder: Path) -> list[Path]:
        from ...spec import WEIGHTS
        return [folder / WEIGHTS] + ([folder / ADAPTER / "adapter_model.safetensors"] if self.llm else [])
