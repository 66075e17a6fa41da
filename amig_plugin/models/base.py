"""The adapter base class (:class:`ModelFamily`): where a model's knowledge neurons are, what the
engine may rely on (the body and head, the FFN join), and queries checked against the model."""

from __future__ import annotations

import operator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from ..data import normalize_text
from ..scoring import LMHead
from .queries import EncodedQuery, PromptTooLongError

Neuron = tuple[int, int]  # (layer, index in the FFN hidden vector)

NeuronSite = Literal["ffn_hidden", "ffn_pre_activation"]


@dataclass(frozen=True)
class FFNJoin:
    """How block ``l`` ends, for rows that join it at its neuron site: the block's output is

        out = r + tail(ffn(·))      r = the residual stream entering the FFN's norm

    ``ffn`` is the FFN module (its output before ``tail``), ``residual_input_of`` the module
    whose input is ``r``. The engine checks this identity on the clean pass before using it."""

    ffn: nn.Module
    residual_input_of: nn.Module
    tail: Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class ModelFamily:
    """Adapter base class. Subclasses set ``name``, ``kind`` and implement the hooks."""

    name: str = "base"
    kind: Literal["masked", "causal"] = "causal"

    def __init__(self, model: nn.Module, neuron_site: NeuronSite = "ffn_hidden"):
        self.model = model
        if neuron_site not in ("ffn_hidden", "ffn_pre_activation"):
            raise ValueError(f"unknown neuron_site {neuron_site!r}; use 'ffn_hidden' (default) or 'ffn_pre_activation'")
        self.neuron_site = neuron_site

    # -- structure -----------------------------------------------------------------------
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.blocks())

    @property
    def ffn_width(self) -> int:
        proj = self.output_projection(0)
        weight = proj.weight
        # nn.Linear: [out, in]; GPT-2 Conv1D: [in, out]
        return int(weight.shape[0] if type(proj).__name__ == "Conv1D" else weight.shape[1])

    def output_projection(self, layer: int) -> nn.Module:
        """The FFN output projection whose input is the neuron vector of ``layer``."""
        raise NotImplementedError

    def neuron_hook_module(self, layer: int) -> tuple[nn.Module, Literal["input", "output"]]:
        """Module and side where the neuron vector is read/replaced."""
        if self.neuron_site != "ffn_hidden":
            raise ValueError(f"neuron_site {self.neuron_site!r} is not available for {self.name}")
        return self.output_projection(layer), "input"

    def value_vectors(self, layer: int) -> torch.Tensor:
        """View [ffn_width, hidden] of the output-projection weights: row i = value vector of neuron i."""
        proj = self.output_projection(layer)
        if type(proj).__name__ == "Conv1D":
            return proj.weight  # [in=ffn, out=hidden]
        return proj.weight.T  # nn.Linear weight is [hidden, ffn]

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def body_and_head(self) -> tuple[nn.Module, LMHead] | None:
        """(the network below the LM head, whose output's ``last_hidden_state`` is the final
        normed hidden state; the head) when the logits are exactly a linear map of it, so the
        engine can fold the head into the score (:func:`amig_plugin.scoring.head_scores`);
        None where something else happens to the logits (soft-capping, scaling)."""
        return None

    def ffn_output_normalized(self) -> bool:
        """The FFN output passes a norm of its own before the residual (Gemma-2/3's sandwich
        norm): it is then scale-invariant in the neuron vector, and a path from the zero
        baseline jumps at α ≈ 0 (what the ``steep`` rule is for)."""
        join = self.ffn_join(0)
        return join is not None and join.tail is not _identity

    def ffn_join(self, layer: int) -> FFNJoin | None:
        """Where block ``layer``'s FFN output meets the residual stream (see :class:`FFNJoin`);
        None where the family does not say (the engine then runs whole blocks)."""
        return None

    @contextmanager
    def fused_activations(self) -> Iterator[None]:
        """Inside the ``with``: activation functions written as several elementwise torch ops run
        as one fused kernel computing the same formula (equal to float rounding, ~1e-7
        relative); module hooks still run. Nothing to do for most families."""
        yield

    def check_layer(self, layer: int) -> int:
        try:
            layer = operator.index(layer)  # ints, numpy and torch integers
        except TypeError:
            raise ValueError(f"layer must be an integer, got {layer!r} ({type(layer).__name__})") from None
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer!r} out of range: {self.name} model has layers 0..{self.num_layers - 1}")
        return layer

    # -- queries -------------------------------------------------------------------------
    @property
    def max_positions(self) -> int | None:
        """How many tokens the model can read (its config's ``max_position_embeddings`` or
        ``n_positions``); None when the config names no limit."""
        config = getattr(self.model, "config", None)
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def _fits(self, query: EncodedQuery) -> EncodedQuery:
        """``query``, or :class:`PromptTooLongError` when it has more tokens than the model has positions."""
        limit, n = self.max_positions, int(query.input_ids.numel())
        if limit is not None and n > limit:
            shown = query.prompt if len(query.prompt) <= 60 else query.prompt[:57] + "..."
            raise PromptTooLongError(f"prompt {shown!r} with target {query.target!r} needs {n} tokens, more than the "
                                     f"{limit} positions of {type(self.model).__name__}; shorten the prompt")
        return query

    def baseline_token_id(self, tokenizer) -> int:
        raise NotImplementedError

    def encode(self, tokenizer, prompt: str, target: str) -> EncodedQuery:
        """The query of ``prompt`` and ``target`` for this model. Both are normalised to
        Unicode NFC first (:func:`amig_plugin.data.normalize_text`): the one place where text
        becomes tokens, so NFC and NFD spellings give the same query bit for bit."""
        return self._encode(tokenizer, normalize_text(prompt), normalize_text(target))

    def _encode(self, tokenizer, prompt: str, target: str) -> EncodedQuery:
        raise NotImplementedError

    def device(self) -> torch.device:
        return next(self.model.parameters()).device
