r"""The multi-task LLM agent (Zheng & Dai, arXiv 2412.20772): one frozen LLM with LoRA serves
channel prediction, precoding and detection, told apart by a text instruction.

Data flow of one task (``task_forward(task, *inputs)``)::

    block inputs --head.encode--> data tokens [b, n, d]
    instruction text --tokenizer, frozen embedding--> prompt [1, p, d] --LLM--> prefix key/values (once)
    [prefix; data tokens] --frozen LLM + LoRA--> hidden [b, n, d] --head.decode--> block output

Stored as ``agent.toml`` (``[model.backbone]`` names the backbone; ``[result.backbone]`` records its
fingerprint), ``model.safetensors`` (the task heads, and the options' learned prefix and layer weights
of :mod:`.mechanisms`) and ``adapter/`` (peft's
``save_pretrained``: the LoRA weights). The backbone itself is never copied into the agent.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ....errors import LinksimError
from ....registry import register_arch
from ...base import AgentModel, Dims
from .._modalities import check_inputs
from .heads import HEADS
from .mechanisms import LayerTaps, SoftPrefix, check_prompt, check_taps
from .options import BackboneOptions, LoraOptions

__all__ = ["LLMAgent"]

ADAPTER = "adapter"            # the LoRA folder, as peft's ``save_pretrained`` lays it out
ADAPTER_NAME = "default"       # peft's adapter name inside the model
# peft's key prefix in adapter_model.safetensors (its PeftModel wrapper), kept for the shipped agents
PEFT_PREFIX = "base_model.model."
HUB_NAMES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}   # adapter_config.json's base model


def _load_backbone(opts: BackboneOptions):
    """``[model.backbone]`` -> a frozen :class:`~linksim.llm.Backbone` or None (``source = "none"``)."""
    from ....llm import load_backbone, tiny_backbone

    if opts.source == "none":
        return None
    if opts.source == "tiny":                  # tests: a small random LLaMA
        return tiny_backbone(layers=opts.layers)
    return load_backbone(opts.spec())


# the generic protocol tests fit one batch from scratch on Clarke channels, where ar is already
# the best linear predictor: their tiny instance starts CP from outdated CSI (the ar start is
# tested in tests/test_llm_agent.py)
#: the tasks an agent built without ``tasks`` serves (Zheng & Dai's three)
PAPER_TASKS = ("prediction", "precoding", "detection")


@register_arch("llm", tasks=PAPER_TASKS + ("los", "beam", "pathloss", "position"), default_tasks=PAPER_TASKS,
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
    :param prompt: ``"text"`` (default), ``"none"`` (no instruction: the ablation), ``"learned"``
        (``prompt_tokens`` trained embeddings per task instead of the text, AI2MMUM's learnable
        prompts) or ``"text+learned"`` (the text instruction, then the learned embeddings):
        :class:`.mechanisms.SoftPrefix`, :math:`[\mathbf{e}^{\tau}; \mathbf{q}^{\tau};
        \mathbf{z}]`, the learned embeddings initialised from the task identifier's tokens
    :param prompt_tokens: ``n``, the learned prefix length per task (default 8; read by the learned
        modes only)
    :param layers_tapped: decoder layers ``[i, j, ...]`` in 1..``layers`` whose hidden states each
        head reads as a learned per-task softmax-weighted sum :math:`\sum_\ell \alpha^{\tau}_\ell
        \operatorname{norm}(\mathbf{H}_\ell)` (MMSense's task-specific multi-layer attention,
        :class:`.mechanisms.LayerTaps`); default none: the last hidden state only
    :param tasks: the tasks served, one head each (the agent's ``[agent] tasks``, set by
        :func:`~linksim.agents.build_model`; default prediction, precoding, detection)
    :param inputs: the modalities the sensing heads read (default ``["csi"]``;
        :mod:`.sensing_heads`)
    :param fusion: how a sensing head fuses them: ``"concat"`` (default), ``"gate"`` (MMSense's
        modality gate) or ``"attention"`` (cross-modal attention)
    :param encoders: the sensing heads' modality encoders: ``"trained"`` (default) or
        ``"contrastive"`` (AI2MMUM's frozen radio encoders, pre-trained in the first stage)
    :param users: ``[K_min, K_max]`` served in precoding (default ``[3, 8]``)
    :param cp_loss: ``"nmse"`` (default: per-user NMSE, linear) or ``"log_nmse"``
    :param heads: per-task head options, e.g. ``{prediction = {hidden = 256}}``

    :input task: ``"prediction"`` | ``"precoding"`` | ``"detection"`` | a sensing task, then that
        task's block inputs (see :mod:`linksim.agents.base` and :mod:`linksim.chains.sensing`).
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
    per_task = True

    def __init__(self, dims: Dims, backbone: dict | None = None, lora: dict | None = None,
                 prompt: str = "text", users=(3, 8), cp_loss: str = "nmse", heads: dict | None = None,
                 prompt_tokens: int = 8, layers_tapped: list | None = None, tasks=None,
                 inputs=("csi",), fusion: str = "concat", encoders: str = "trained"):
        super().__init__()
        self.dims = dims
        self.served = tuple(tasks or PAPER_TASKS)
        self.backbone_config = BackboneOptions.from_table(backbone)
        self.lora_config = LoraOptions.from_table(lora)
        check_prompt(prompt, prompt_tokens)
        no_llm = self.backbone_config.source == "none"
        taps = check_taps(layers_tapped, None if no_llm else self.backbone_config.layers)
        if cp_loss not in ("nmse", "log_nmse"):
            raise LinksimError(f"llm: model.cp_loss must be 'nmse' or 'log_nmse', got {cp_loss!r}")
        if (not isinstance(users, (list, tuple)) or len(users) != 2 or not all(isinstance(u, int) for u in users)
                or not 1 <= users[0] <= users[1] <= dims.num_bs_antennas):
            raise LinksimError(f"llm: model.users must be [K_min, K_max] with 1 <= K_min <= K_max <= "
                               f"{dims.num_bs_antennas} antennas, got {users!r}")
        self.prompt_mode, self.cp_loss = prompt, cp_loss
        self.users_range = (int(users[0]), int(users[1]))
        self.prefix_mode = "cache"          # "concat": run the prompt per sample (reference/bench)
        self._prefix_cache: dict = {}
        self._prompt_ids: dict = {}

        bb = _load_backbone(self.backbone_config)
        self.llm = None
        self.quant_report: dict = {}
        width = self.backbone_config.width if bb is None else bb.width
        if bb is not None:
            self.llm = bb
            self._add_lora(bb)
            quant = self.backbone_config.quantization
            if quant != "none":
                from ....llm.quant import quantize_lora_model
                self.quant_report = quantize_lora_model(bb.model, quant, self.backbone_config.loftq_iters,
                                                        adapter=ADAPTER_NAME)
        # optional mechanisms (None at their defaults: no parameters, the agent's files unchanged)
        self.soft_prompt = SoftPrefix(self.served, prompt_tokens, bb) if bb is not None and "learned" in prompt else None
        self.layer_taps = LayerTaps(self.served, taps, bb.num_layers) if taps else None
        heads = dict(heads or {})
        bad = sorted(set(heads) - set(HEADS))
        if bad:
            raise LinksimError(f"llm: unknown table 'model.heads.{bad[0]}' (known: {', '.join(HEADS)})")
        sensing = {"inputs": check_inputs(inputs, fusion, "llm", encoders), "fusion": fusion, "encoders": encoders}
        try:
            self.heads = nn.ModuleDict({t: HEADS[t](dims, width, **(
                sensing if getattr(HEADS[t], "reads_modalities", False) else {}) | heads.get(t, {}))
                for t in self.served})
        except TypeError as e:
            raise LinksimError(f"llm: bad model.heads options ({e})") from None
        self.pretrains = any(getattr(getattr(h, "encoder", None), "encoders", "") == "contrastive"
                             for h in self.heads.values())

    # ------------------------------------------------------------------------------ backbone
    @property
    def backbone_options(self) -> dict:
        """``[model.backbone]`` with defaults filled in, a plain dict (typed: ``backbone_config``)."""
        return self.backbone_config.as_dict()

    @property
    def lora_options(self) -> dict:
        """``[model.lora]`` with defaults filled in, a plain dict (typed: ``lora_config``)."""
        return self.lora_config.as_dict()

    def _add_lora(self, bb) -> None:
        """Inject LoRA layers into ``bb.model`` in place: they are ordinary submodules of the agent
        (in its ``state_dict`` and ``parameters()``), peft's bookkeeping in ``bb.model.peft_config``."""
        import warnings

        from peft import inject_adapter_in_model

        src = self.backbone_config.source     # adapter_config.json names it as a user would
        try:
            cfg = self.lora_config.peft_config(HUB_NAMES.get(src, src))
            with warnings.catch_warnings():      # transformers 5 deprecation noise inside peft
                warnings.simplefilter("ignore", FutureWarning)
                inject_adapter_in_model(cfg, bb.model, adapter_name=ADAPTER_NAME)
        except ValueError as e:                  # peft: e.g. no module matches model.lora.targets
            raise LinksimError(f"llm: model.lora: {str(e).splitlines()[0]}") from None

    @property
    def fingerprint(self) -> str:
        """The backbone's weights fingerprint (:attr:`linksim.llm.Backbone.fingerprint`; ``"none"``)."""
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

    def _prefix_embeds(self, task: str, k: int | None) -> torch.Tensor:
        """What precedes the data tokens ``[1, p, d]``: the text prompt, the learned prefix or both."""
        if self.prompt_mode == "text":
            return self._prompt(task, k)
        if self.prompt_mode == "learned":
            return self.soft_prompt(task)
        return torch.cat([self._prompt(task, k), self.soft_prompt(task)], 1)      # "text+learned"

    def _prefix(self, task: str, k: int | None):
        """The prefix's key/values, batch 1 (cached per task and K outside autograd: the learned
        prefix, as LoRA, changes only in training, and ``train()`` drops the cache)."""
        key = (task, k)
        cacheable = not torch.is_grad_enabled()
        if cacheable and key in self._prefix_cache:
            return self._prefix_cache[key]
        _, cache = self.llm(self._prefix_embeds(task, k), use_cache=True)
        if cacheable:
            self._prefix_cache[key] = cache
        return cache

    def run_llm(self, task: str, tokens: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Data tokens ``[b, n, d]`` -> hidden states ``[b, n, d]`` after the task's prefix (the
        last layer's, or the task's weighted sum of the tapped layers')."""
        if self.llm is None:
            return tokens
        taps = self.layer_taps is not None
        if self.prompt_mode == "none":
            out = self.llm(tokens, hidden_states=taps)
        elif self.prefix_mode == "concat":
            prompt = self._prefix_embeds(task, k)
            p = prompt.shape[1]
            out = self.llm(torch.cat([prompt.expand(tokens.shape[0], -1, -1), tokens], 1), hidden_states=taps)
            out = tuple(h[:, p:] for h in out) if taps else out[:, p:]
        else:
            out = self.llm(tokens, past_key_values=self._prefix(task, k), hidden_states=taps)
        return self.layer_taps(task, out, getattr(self.llm.model, "norm", None)) if taps else out

    # ------------------------------------------------------------------------------ tasks
    def task_forward(self, task: str, *inputs):
        if task not in self.heads:
            raise LinksimError(f"llm: serves {', '.join(self.heads)}, not {task}")
        return self.heads[task].run(self, *inputs)

    def reads(self, task: str) -> tuple[str, ...]:
        return getattr(self.heads[task], "inputs", ()) if task in self.heads else ()

    def diagnostics(self, task: str) -> dict[str, float]:
        enc = getattr(self.heads[task], "encoder", None) if task in self.heads else None
        return enc.gate_means() if enc is not None else {}

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
        """What ``model.safetensors`` holds: the heads, and the learned prefix and layer weights
        when those options are on."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("heads.", "soft_prompt.", "layer_taps."))}

    def save_weights(self, folder: Path) -> None:
        """``model.safetensors`` (heads) + ``adapter/`` (LoRA, laid out as peft's ``save_pretrained``:
        ``adapter_config.json`` and ``adapter_model.safetensors``, keys ``base_model.model.<module>
        .lora_A.weight``)."""
        import copy

        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        from ...spec import WEIGHTS
        save_file({k: v.detach().contiguous() for k, v in self.head_state().items()}, str(folder / WEIGHTS))
        if self.llm is None:
            return
        model = self.llm.model
        # embeddings are never LoRA targets; "auto" would look the backbone up on the Hub
        lora = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME, save_embedding_layers=False)
        (folder / ADAPTER).mkdir(parents=True, exist_ok=True)
        save_file({PEFT_PREFIX + k: v.detach().contiguous() for k, v in lora.items()},
                  str(folder / ADAPTER / "adapter_model.safetensors"), metadata={"format": "pt"})
        cfg = copy.copy(model.peft_config[ADAPTER_NAME])
        cfg.inference_mode = True                              # as save_pretrained writes it
        cfg.target_modules = sorted(cfg.target_modules)        # a set: sorted, the file is deterministic
        cfg.save_pretrained(str(folder / ADAPTER), auto_mapping_dict={
            "base_model_class": type(model).__name__, "parent_library": type(model).__module__})

    def load_weights(self, folder: Path) -> None:
        """Read what :meth:`save_weights` wrote (and the shipped agents' peft ``save_pretrained``
        folders); ValueError when the heads or the adapter do not fit this architecture."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        from ...spec import WEIGHTS
        # agents saved before heads were built per task hold every paper task's head: those of
        # tasks this agent does not serve are left out
        heads = {k: v for k, v in load_file(str(folder / WEIGHTS)).items()
                 if not (k.startswith("heads.") and k.split(".")[1] not in self.heads)}
        mine = self.head_state()
        if set(heads) != set(mine):
            extra = sorted(set(heads) ^ set(mine))[0]
            raise ValueError(f"heads do not match the architecture (e.g. {extra})")
        self.load_state_dict(heads, strict=False)
        self._prefix_cache.clear()                 # a cached prefix was computed from other weights
        if self.llm is not None:
            f = folder / ADAPTER / "adapter_model.safetensors"
            if not f.is_file():
                raise ValueError(f"no LoRA adapter ({ADAPTER}/adapter_model.safetensors)")
            lora = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(str(f)).items()}
            res = set_peft_model_state_dict(self.llm.model, lora, adapter_name=ADAPTER_NAME)
            if res.unexpected_keys:
                raise ValueError(f"adapter does not match model.lora (e.g. {res.unexpected_keys[0]})")

    def weight_files(self, folder: Path) -> list[Path]:
        """The files whose bytes identify the trained agent (hashed into the block's digest)."""
        from ...spec import WEIGHTS
        return [folder / WEIGHTS] + ([folder / ADAPTER / "adapter_model.safetensors"] if self.llm else [])
