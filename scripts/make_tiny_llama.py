#!/usr/bin/env python3
"""A tiny random Llama checkpoint (Hugging Face format) and its reference outputs.

Writes fixtures/tiny-llama/: config.json, model.safetensors (float32), tokenizer.json (a
300-token byte-level BPE trained on the fixture text) and reference.json (token ids of a
sentence and the float32 logits of transformers' LlamaForCausalLM at every position).
Exercises what SmolLM2 does not: untied output head, 2 KV heads for 4 query heads,
head_dim 8, odd FFN width. Same environment as make_reference.py.
"""
import json
import pathlib

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "tiny-llama"
TEXT = ROOT / "fixtures" / "text" / "declaration-gettysburg.txt"
SENTENCE = "We hold these truths: all 13 men are equal."


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(TEXT)], trainer)
    tok.save(str(OUT / "tokenizer.json"))
    vocab = tok.get_vocab_size()

    torch.manual_seed(1234)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=8, rope_theta=500.0, rms_norm_eps=1e-5,
                      max_position_embeddings=128, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        # Default init leaves norms at 1 and logits tiny; spread everything so errors show.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.35 * torch.randn_like(p))
    model.save_pretrained(str(OUT), safe_serialization=True)
    for extra in ["generation_config.json"]:
        (OUT / extra).unlink(missing_ok=True)

    ids = tok.encode(SENTENCE).ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    ref = {"generator": "scripts/make_tiny_llama.py",
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
           "text": SENTENCE, "ids": ids, "vocab": vocab,
           "logits": [[float("%.7g" % x) for x in row] for row in logits]}
    (OUT / "reference.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")
    print(f"{len(ids)} tokens, vocab {vocab}, files:",
          sorted((p.name, p.stat().st_size) for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
