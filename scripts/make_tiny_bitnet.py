#!/usr/bin/env python3
"""Tiny BitNet b1.58 checkpoints (Hugging Face format) and transformers' reference outputs.

Writes fixtures/tiny-bitnet/:

  tokenizer (in every variant dir): tokenizer.model (SentencePiece BPE, 512 pieces, byte
      fallback, identity normalisation, no whitespace folding, trained on
      fixtures/text/calibration.txt), tokenizer.json + tokenizer_config.json (transformers'
      conversion of it).
  relu2-packed/  BitNetForCausalLM, hidden_act relu2, linear weights packed as transformers'
      BitLinear stores them: uint8 [out/4, in], 4 trits per byte
      (transformers.integrations.bitnet.pack_weights), weight_scale = 1/mean|W| (bf16);
      quantization_config {"quant_method": "bitnet"} (linear_class bitlinear, offline).
  relu2-bf16/    the same model's bf16 master weights, ternarized on load as in training:
      quantization_config {"quant_method": "bitnet", "linear_class": "autobitlinear",
      "quantization_mode": "online"}.
  silu-bf16/     the same master weights with hidden_act silu (the variant llama.cpp's
      converter and graph handle); its model.safetensors is a symlink to ../relu2-bf16's.
  llama-packed/  LlamaForCausalLM (model_type llama, SiLU, no sub-norms) with the same packed
      ternary weights: the Falcon3-1.58bit / Llama3-8B-1.58 layout. Not part of the seed
      search; its margins are recorded.

Each variant dir has reference.json: transformers' (float32) prompt ids, logits at every prompt
position, the logit range, greedy continuation ids, and the margins described below.

The weights are random from a fixed seed, searched for one where float32 rounding cannot change
a result: every activation v = x·127/max|x| seen by an int8 quantizer in the reference runs is
at least ACT_MARGIN·max(|v|, 1) from a rounding tie k + 1/2; every master weight w/mean|W| is at
least W_MARGIN from the ternarization tie 1/2; every greedy step's top-two logit gap is at least
GAP_MARGIN of the logit range; and the greedy continuation has at least 4 distinct tokens. The
search runs from BASE_SEED over at most SEEDS seeds (else takes the best); it started at
20261203 and first met the margins at 20261224, now BASE_SEED. Seed and margins are printed and
recorded in reference.json.

Environment: pip install torch transformers sentencepiece accelerate safetensors protobuf
(tested with torch 2.15.0, transformers 5.24.0, sentencepiece 0.2.3). CPU only.
Run: python3 scripts/make_tiny_bitnet.py
"""
import json
import math
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # transformers' @torch.compile: run eagerly

import safetensors.torch
import sentencepiece as spm
import torch
import transformers
from transformers import (AutoModelForCausalLM, BitNetConfig, BitNetForCausalLM, LlamaConfig,
                          LlamaForCausalLM, LlamaTokenizer)
from transformers.integrations.bitnet import pack_weights

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "tiny-bitnet"
TEXT = ROOT / "fixtures" / "text" / "calibration.txt"
PROMPT = "The keeper's daughter"
NEW_TOKENS = 8
BASE_SEED = 20261224
ACT_MARGIN = 5e-7
SEEDS = 40
W_MARGIN = 1e-3
GAP_MARGIN = 1e-3
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def config(hidden_act, quant):
    cfg = BitNetConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=64, hidden_act=hidden_act, max_position_embeddings=256,
                       rms_norm_eps=1e-5, rope_parameters={"rope_type": "default",
                                                           "rope_theta": 10000.0},
                       bos_token_id=1, eos_token_id=2, pad_token_id=None,
                       tie_word_embeddings=True)
    if quant is not None:
        cfg.quantization_config = quant
    return cfg


def train_tokenizer(tmp):
    prefix = os.path.join(tmp, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=str(TEXT), model_prefix=prefix, vocab_size=512, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        max_sentence_length=1 << 16, shuffle_input_sentence=False, minloglevel=2)
    tokdir = os.path.join(tmp, "tok")
    os.makedirs(tokdir)
    # The trainer spec records the paths it was given: make them machine-independent.
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(pathlib.Path(prefix + ".model").read_bytes())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.append("fixtures/text/calibration.txt")
    proto.trainer_spec.model_prefix = "tokenizer"
    pathlib.Path(prefix + ".model").write_bytes(proto.SerializeToString())
    shutil.copy(prefix + ".model", os.path.join(tokdir, "tokenizer.model"))
    tok = LlamaTokenizer.from_pretrained(tokdir, add_bos_token=True)
    tok.save_pretrained(tokdir)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    # The fast tokenizer must agree with SentencePiece itself. (Not on text that starts with
    # whitespace: SentencePiece's dummy prefix then gives "▁▁", transformers' Metaspace
    # prepend_scheme "first" a single "▁".)
    for text in [PROMPT, TEXT.read_text()[:2000], "two  spaces\tand\ttabs\n\nü € 1234"]:
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text), text
    return tokdir, tok


def ternarize(w):
    """transformers' WeightQuant: s = 1/max(mean|W|, 1e-5), t = clamp(round(W·s), -1, 1)."""
    w = w.float()
    s = 1.0 / w.abs().mean().clamp(min=1e-5)
    return (w * s).round().clamp(-1, 1), s


def random_master(seed):
    """bf16 master weights (state dict) from `seed`, nudged off the ternarization tie."""
    torch.manual_seed(seed)
    model = BitNetForCausalLM(config("relu2", None))
    sd = {}
    for name, p in model.state_dict().items():
        if "norm" in name:
            sd[name] = (1.0 + 0.3 * torch.randn_like(p)).bfloat16()
        elif "embed" in name:
            # Small next to the sublayer outputs, so the tied head does not just repeat the
            # current token.
            sd[name] = (0.05 * torch.randn_like(p)).bfloat16()
        elif name.endswith(".weight"):
            w = (0.05 * torch.randn_like(p)).bfloat16()
            for _ in range(20):
                v = (w.float() * ternarize(w)[1]).abs()
                near = (v - 0.5).abs() < W_MARGIN
                if not near.any():
                    break
                w[near] = (w[near].float() * 0.97).bfloat16()
            sd[name] = w
    sd.pop("lm_head.weight", None)  # tied
    return sd


def w_margin(sd):
    m = math.inf
    for name, w in sd.items():
        if any(name.endswith(l + ".weight") for l in LINEARS):
            v = (w.float() * ternarize(w)[1]).abs()
            m = min(m, (v - 0.5).abs().min().item())
    return m


class ActMargin:
    """Forward pre-hooks on every quantized linear: the smallest distance of v = x·127/max|x|
    (as transformers computes it, float32) to a rounding tie k + 1/2, relative to max(|v|, 1)
    (float32 rounding moves v by a few ulps of v)."""

    def __init__(self, model):
        self.margin = math.inf
        for name, mod in model.named_modules():
            if type(mod).__name__ in ("BitLinear", "AutoBitLinear"):
                mod.register_forward_pre_hook(self.hook)

    def hook(self, _mod, args):
        x = args[0].float()
        s = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
        v = x * s
        rel = ((v - v.floor()) - 0.5).abs() / v.abs().clamp(min=1.0)
        self.margin = min(self.margin, rel.min().item())


def run_reference(d, ids):
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    kinds = {type(m).__name__ for m in model.modules()}
    assert kinds & {"BitLinear", "AutoBitLinear"}, kinds
    probe = ActMargin(model)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             min_new_tokens=NEW_TOKENS, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=0)
    greedy = out.sequences[0, len(ids):].tolist()
    gap = math.inf
    for sc in out.scores:
        top = sc[0].float().topk(2).values
        gap = min(gap, (top[0] - top[1]).item())
    rng = (logits.max() - logits.min()).item()
    return {"logits": logits, "greedy": greedy, "range": rng, "act_margin": probe.margin,
            "gap": gap / rng, "linear": sorted(kinds & {"BitLinear", "AutoBitLinear"})}


def write_master(d, sd, hidden_act):
    quant = {"quant_method": "bitnet", "linear_class": "autobitlinear",
             "quantization_mode": "online"}
    cfg = config(hidden_act, quant)
    cfg.dtype = "bfloat16"
    cfg.save_pretrained(d)
    safetensors.torch.save_file(sd, os.path.join(d, "model.safetensors"),
                                metadata={"format": "pt"})


def llama_config():
    """The Llama-architecture twin (Falcon3-1.58bit / Llama3-8B-1.58 style): same sizes, no
    sub-norms, SiLU."""
    b = config("silu", None)
    return LlamaConfig(vocab_size=b.vocab_size, hidden_size=b.hidden_size,
                       intermediate_size=b.intermediate_size,
                       num_hidden_layers=b.num_hidden_layers,
                       num_attention_heads=b.num_attention_heads,
                       num_key_value_heads=b.num_key_value_heads, head_dim=b.head_dim,
                       hidden_act="silu", max_position_embeddings=b.max_position_embeddings,
                       rms_norm_eps=b.rms_norm_eps, rope_parameters=b.rope_parameters,
                       bos_token_id=1, eos_token_id=2, pad_token_id=None,
                       tie_word_embeddings=True)


def write_packed(d, sd, llama=False):
    """The model as transformers' BitLinear holds it: replace_with_bitnet_linear, then its
    buffers filled with pack_weights(trits) and weight_scale = 1/mean|W|, saved by
    save_pretrained."""
    from transformers.integrations.bitnet import replace_with_bitnet_linear
    from transformers.utils.quantization_config import BitNetQuantConfig

    qc = BitNetQuantConfig()
    if llama:
        model = LlamaForCausalLM(llama_config()).to(torch.bfloat16)
        sd = {k: v for k, v in sd.items() if "sub_norm" not in k}
    else:
        model = BitNetForCausalLM(config("relu2", None)).to(torch.bfloat16)
    model = replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"],
                                       quantization_config=qc)
    packed = {}
    for name, w in sd.items():
        if any(name.endswith(l + ".weight") for l in LINEARS):
            t, s = ternarize(w)
            packed[name] = pack_weights(t.to(torch.int8).clone())
            packed[name[:-len("weight")] + "weight_scale"] = s.reshape(1).bfloat16()
        else:
            packed[name] = w
    missing, unexpected = model.load_state_dict(packed, strict=False, assign=True)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    model.config.quantization_config = qc
    model.config.dtype = "bfloat16"
    model.save_pretrained(d)
    for extra in ["generation_config.json"]:
        pathlib.Path(d, extra).unlink(missing_ok=True)
    # What was written must be what we packed.
    back = safetensors.torch.load_file(os.path.join(d, "model.safetensors"))
    assert set(back) == set(packed), set(back) ^ set(packed)
    for k in back:
        assert torch.equal(back[k], packed[k]), k


def reference_json(res, ids, text, extra):
    logits = res["logits"]
    return {"generator": "scripts/make_tiny_bitnet.py",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "sentencepiece": spm.__version__},
            **extra,
            "text": text, "ids": ids, "greedy_new_tokens": NEW_TOKENS,
            "greedy": res["greedy"], "logit_min": logits.min().item(),
            "logit_max": logits.max().item(), "logit_range": res["range"],
            "act_margin": res["act_margin"], "greedy_gap_over_range": res["gap"],
            "linear_class": res["linear"],
            "logits": [[float("%.8g" % x) for x in row] for row in logits]}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokdir, tok = train_tokenizer(tmp)
        ids = tok.encode(PROMPT)  # with BOS, as generation sees it
        assert ids[0] == 1, ids
        best = None
        sd_of = {}
        for seed in range(BASE_SEED, BASE_SEED + SEEDS):
            sd = random_master(seed)
            sd_of[seed] = sd
            wm = w_margin(sd)
            trial = {}
            for variant, act in [("relu2-bf16", "relu2"), ("silu-bf16", "silu"),
                                 ("relu2-packed", "relu2")]:
                d = os.path.join(tmp, f"{seed}-{variant}")
                os.makedirs(d)
                if variant == "relu2-packed":
                    write_packed(d, sd)
                else:
                    write_master(d, sd, act)
                trial[variant] = (d, run_reference(d, ids))
            am = min(r["act_margin"] for _, r in trial.values())
            gap = min(r["gap"] for _, r in trial.values())
            varied = min(len(set(r["greedy"])) for _, r in trial.values())
            print(f"seed {seed}: weight margin {wm:.2e}, activation margin {am:.2e}, "
                  f"greedy gap/range {gap:.2e}, distinct greedy tokens {varied}")
            ok = wm >= W_MARGIN and gap >= GAP_MARGIN and varied >= 4
            if ok and (best is None or am > best[1]):
                best = (seed, am, wm, trial)
            if best is not None and best[1] >= ACT_MARGIN:
                break
        if best is None:
            raise SystemExit("no seed met the margins")
        seed, am, wm, trial = best
        # Not part of the seed search (its margins are recorded and checked by the tests).
        d = os.path.join(tmp, f"{seed}-llama-packed")
        os.makedirs(d)
        write_packed(d, sd_of[seed], llama=True)
        trial["llama-packed"] = (d, run_reference(d, ids))
        print(f"chose seed {seed} (activation margin {am:.2e})")
        for variant, (d, res) in trial.items():
            dst = OUT / variant
            if dst.exists():
                shutil.rmtree(dst)
            dst.mkdir()
            for f in ["config.json", "model.safetensors"]:
                if variant == "silu-bf16" and f == "model.safetensors":
                    os.symlink("../relu2-bf16/model.safetensors", dst / f)
                else:
                    shutil.copy(os.path.join(d, f), dst / f)
            for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"]:
                shutil.copy(os.path.join(tokdir, f), dst / f)
            extra = {"seed": seed, "variant": variant, "weight_margin": wm}
            (dst / "reference.json").write_text(
                json.dumps(reference_json(res, ids, PROMPT, extra), separators=(",", ":"))
                + "\n")
            size = sum(p.stat().st_size for p in dst.iterdir() if not p.is_symlink())
            print(f"{variant}: {len(ids)} prompt ids, greedy {res['greedy']}, logit range "
                  f"{res['range']:.4f}, {size} bytes")


if __name__ == "__main__":
    main()
