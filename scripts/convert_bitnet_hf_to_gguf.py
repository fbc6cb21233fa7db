#!/usr/bin/env python3
"""llama.cpp's convert_hf_to_gguf.py for transformers' BitNetForCausalLM checkpoints.

Mainline llama.cpp maps the BitNet sub-norms only under the original 1bitLLM names
(`self_attn.inner_attn_ln`, `mlp.ffn_layernorm`); transformers writes
`self_attn.attn_sub_norm` and `mlp.ffn_sub_norm`. This wrapper adds those two names to
gguf-py's tensor map, then runs the converter unchanged.

Usage: python scripts/convert_bitnet_hf_to_gguf.py <convert_hf_to_gguf.py> <its arguments...>
"""
import pathlib
import runpy
import sys

converter = pathlib.Path(sys.argv[1]).resolve()
sys.argv = [str(converter)] + sys.argv[2:]
# The converter's own gguf-py (not a pip-installed gguf), and its `conversion` package.
sys.path.insert(0, str(converter.parent / "gguf-py"))
sys.path.insert(0, str(converter.parent))

import gguf  # noqa: E402
from gguf.tensor_mapping import TensorNameMap  # noqa: E402

for tensor, name in [
    (gguf.MODEL_TENSOR.ATTN_SUB_NORM, "model.layers.{bid}.self_attn.attn_sub_norm"),
    (gguf.MODEL_TENSOR.FFN_SUB_NORM, "model.layers.{bid}.mlp.ffn_sub_norm"),
]:
    names = TensorNameMap.block_mappings_cfg[tensor]
    if name not in names:
        TensorNameMap.block_mappings_cfg[tensor] = names + (name,)

runpy.run_path(str(converter), run_name="__main__")
