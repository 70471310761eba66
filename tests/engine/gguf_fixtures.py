"""Tiny pruned checkpoints with every shape the GGUF export must keep: uneven key/value groups, a layer with no
heads, a layer with no MLP channels, output biases as compensation adds them, q/k/v biases (Qwen2)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.engine.architectures import geometry_of, to_gisp_model
from core.engine.modeling.configuration_gisp import GispConfig
from core.engine.modeling.modeling_gisp import GispForCausalLM
from core.engine.slicing import slice_model
from core.engine.structures import LayerState, PruningState
from tests.utils.tiny import bpe_tokenizer, tiny_model

# (heads, kv_heads, channels) kept per layer of a 4-head, 2-kv-head, 96-channel tiny model
AWKWARD_LAYERS = {
    # layer 0: kv head 0 keeps two readers, kv head 1 one (uneven groups)
    "llama": [([0, 1, 2], [0, 1], 50), ([], [], 40), ([1, 3], [0, 1], 0), ([0, 1, 2, 3], [0, 1], 96)],
    # layer 0 has no heads (llama.cpp reads the head size from layer 0), layer 3 no channels
    "qwen2": [([], [], 64), ([0, 2, 3], [0, 1], 33), ([3], [1], 96), ([0, 1], [0], 0)],
}


def pruned_tiny_checkpoint(
    directory: Path, family: str = "llama", *, output_biases: bool = True
) -> GispForCausalLM:
    """Slices a tiny random ``family`` model to ``AWKWARD_LAYERS[family]``, adds random output biases (what bias
    compensation and the refit produce), and saves it as a non-uniform checkpoint with its tokenizer."""
    tokenizer = bpe_tokenizer()
    base = tiny_model(family, vocab=len(tokenizer), seed=3)
    geometry = geometry_of(base.config)
    model = to_gisp_model(base, copy=True)
    generator = torch.Generator().manual_seed(7)
    if family == "qwen2":  # stock init leaves the q/k/v biases at zero; make them matter
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator))
    layers = [
        LayerState(heads=heads, kv_heads=kv, channels=list(range(0, 96, 1))[:channels] if channels else [])
        for heads, kv, channels in AWKWARD_LAYERS[family]
    ]
    slice_model(model, PruningState.dense(geometry), PruningState(geometry, layers))
    if output_biases:
        for layer in model.model.layers:
            for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
                linear.bias = nn.Parameter(0.5 * torch.randn(linear.out_features, generator=generator))
        model.config.o_proj_bias = model.config.down_proj_bias = True
    model.eval()
    GispConfig.register_for_auto_class()
    GispForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return model
