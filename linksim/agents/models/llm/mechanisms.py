r"""Optional mechanisms of the LLM agent from AI2MMUM (arXiv 2505.10003) and MMSense (arXiv 2511.12305),
switched on by ``[model]`` keys of an agent.toml; at their defaults the agent is unchanged.

- :class:`SoftPrefix` (``prompt = "learned"`` / ``"text+learned"``, ``prompt_tokens = n``):
  AI2MMUM's learnable prefix prompts, ``n`` trainable input embeddings per task placed before the
  data tokens (after the text instruction for ``"text+learned"``).
- :class:`LayerTaps` (``layers_tapped = [i, j, ...]``): MMSense's task-specific attention over
  several backbone layers: each task's head reads a learned softmax-weighted sum of the hidden
  states of the tapped decoder layers instead of the last one only.

Both are ordinary submodules of the agent (``soft_prompt.*``, ``layer_taps.*``), trained with LoRA
and the heads and stored beside the heads in ``model.safetensors``. The checks below are one-line
:class:`~linksim.errors.LinksimError` naming the key, raised before the backbone is loaded.
"""
from __future__ import annotations

import torch
from torch import nn

from ....errors import LinksimError

__all__ = ["PROMPT_MODES", "SoftPrefix", "LayerTaps", "check_prompt", "check_taps"]

#: ``[model] prompt``: the text instruction, nothing, learned embeddings, or both (text first)
PROMPT_MODES = ("text", "none", "learned", "text+learned")


def check_prompt(prompt, prompt_tokens) -> None:
    """``model.prompt`` and ``model.prompt_tokens`` (the latter only read by the learned modes)."""
    if prompt not in PROMPT_MODES:
        raise LinksimError(f"llm: model.prompt must be one of {', '.join(PROMPT_MODES)}, got {prompt!r}")
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 1:
        raise LinksimError(f"llm: model.prompt_tokens must be an integer >= 1, got {prompt_tokens!r}")


def check_taps(layers_tapped, num_layers: int | None) -> tuple[int, ...]:
    """``model.layers_tapped`` -> the sorted layer indices (empty: no tapping).

    :param layers_tapped: None or a list of distinct decoder layers, 1 ... ``num_layers``
    :param num_layers: the backbone's kept layers (``model.backbone.layers``); None: no backbone
    """
    if layers_tapped is None or (isinstance(layers_tapped, (list, tuple)) and not layers_tapped):
        return ()
    ok = (isinstance(layers_tapped, (list, tuple))
          and all(isinstance(i, int) and not isinstance(i, bool) for i in layers_tapped)
          and len(set(layers_tapped)) == len(layers_tapped))
    if not ok:
        raise LinksimError(f"llm: model.layers_tapped must be a list of distinct layer numbers, got {layers_tapped!r}")
    if num_layers is None:
        raise LinksimError("llm: model.layers_tapped needs a backbone (model.backbone.source is 'none')")
    if not all(1 <= i <= num_layers for i in layers_tapped):
        raise LinksimError(f"llm: model.layers_tapped must be in 1..{num_layers} (model.backbone.layers), "
                           f"got {list(layers_tapped)!r}")
    return tuple(sorted(layers_tapped))


class SoftPrefix(nn.Module):
    r"""Learned prefix prompts: ``n`` trainable embeddings per task (AI2MMUM's learnable prompts).

    For task :math:`\tau` the LLM reads

    .. math::
        [\mathbf{e}^{\tau}_{1..p};\ \mathbf{q}^{\tau}_{1..n};\ \mathbf{z}_{1..N}]
        \quad (\texttt{"text+learned"}), \qquad
        [\mathbf{q}^{\tau}_{1..n};\ \mathbf{z}_{1..N}] \quad (\texttt{"learned"})

    with :math:`\mathbf{e}^{\tau}` the frozen embedding of the text instruction,
    :math:`\mathbf{q}^{\tau} \in \mathbb{R}^{n \times d}` trainable and :math:`\mathbf{z}` the data
    tokens. Initialisation: :math:`\mathbf{q}^{\tau}_i = \mathbf{E}[t^{\tau}_{(i-1) \bmod m + 1}]`,
    the frozen embeddings of the :math:`m` tokens of the task identifier (``"[channel
    prediction]"``, ...) repeated to ``n``. Why not small random values: the prefix starts inside
    the embedding distribution the backbone was trained on and already tells the tasks apart (as
    the identifier does in the text prompt), so an untrained ``"learned"`` agent is close to one
    prompted by its identifier, and training refines a sensible start (Lester et al., 2021, found
    vocabulary initialisation better than random for prompt tuning). It is also deterministic:
    switching the option on does not shift the random initialisation of the other parameters.
    Like the text prompt, the prefix does not depend on the data, so its key/values are computed
    once per batch (cached outside autograd, see ``LLMAgent._prefix``).

    :param tasks: the tasks served (one prefix each)
    :param n: prefix length ``prompt_tokens`` (default 8 in the agent)
    :param backbone: the :class:`~linksim.llm.Backbone` (tokenizer and frozen embedding)

    :input task: str. :output prefix: [1, n, d], float32.
    """

    def __init__(self, tasks, n: int, backbone):
        super().__init__()
        from ....llm.prompt import template

        init = {}
        with torch.no_grad():
            for task in tasks:
                ids = backbone.tokenize(template(task)[0])
                if ids.numel() == 0:                       # an empty identifier: the first vocabulary tokens
                    ids = torch.arange(1)
                emb = backbone.embed(ids)
                init[task] = nn.Parameter(emb[torch.arange(n) % emb.shape[0]].detach().clone().float())
        self.prefix = nn.ParameterDict(init)

    def forward(self, task: str) -> torch.Tensor:
        return self.prefix[task][None]


class LayerTaps(nn.Module):
    r"""Task-specific attention over the hidden states of several backbone layers (MMSense).

    With :math:`\mathbf{H}_\ell \in \mathbb{R}^{N \times d}` the data tokens' hidden states after
    decoder layer :math:`\ell` and :math:`\mathcal{L}` the tapped layers, task :math:`\tau`'s head
    reads

    .. math::
        \mathbf{o}^{\tau} = \sum_{\ell \in \mathcal{L}} \alpha^{\tau}_\ell\,
            \operatorname{norm}(\mathbf{H}_\ell), \qquad
        \boldsymbol\alpha^{\tau} = \operatorname{softmax}(\mathbf{a}^{\tau}),

    with logits :math:`\mathbf{a}^{\tau}` trained per task (zero at start: the tapped layers
    averaged). ``norm`` is the backbone's final (frozen) norm, which the last layer's hidden state
    already went through (transformers' ``hidden_states[N]`` is the model output), so every tapped
    state is on the scale the heads read without taps; a backbone without a ``norm`` module leaves
    the intermediate states as they are. With :math:`\boldsymbol\alpha` one-hot on the last layer
    the output equals the untapped agent's exactly.

    :param tasks: the tasks served (one set of logits each)
    :param layers: the tapped decoder layers, 1 ... N (sorted, distinct)
    :param num_layers: N, the backbone's decoder layers

    :input task: str.
    :input states: the backbone's hidden states, a tuple of N + 1 tensors [b, n, d] (index 0:
        the input embeddings, index l: after layer l).
    :input norm: the backbone's final norm module or None.
    :output hidden: [b, n, d], float32.
    """

    def __init__(self, tasks, layers: tuple[int, ...], num_layers: int):
        super().__init__()
        self.layers, self.num_layers = tuple(layers), int(num_layers)
        self.logits = nn.ParameterDict({t: nn.Parameter(torch.zeros(len(self.layers))) for t in tasks})

    def weights(self, task: str) -> torch.Tensor:
        r"""The task's layer weights :math:`\boldsymbol\alpha^{\tau}`, ``[len(layers)]``."""
        return torch.softmax(self.logits[task], 0)

    def forward(self, task: str, states, norm=None) -> torch.Tensor:
        picked = [states[i] if i == self.num_layers or norm is None else norm(states[i]) for i in self.layers]
        w = self.weights(task).to(picked[0].dtype)
        return (w[:, None, None, None] * torch.stack(picked)).sum(0)

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)} of {self.num_layers}"
