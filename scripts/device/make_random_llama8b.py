"""Device-side: a Llama-3-8B-shaped Hugging Face checkpoint with random bf16 weights, for timing
only (32 layers, 32/8 heads, head dim 128, hidden 4096, MLP 14336, Llama 3's 128,256-token
vocabulary, RoPE theta 500,000), plus a word-level tokenizer.json standing in for the real one
(kvbench bench feeds random token ids; no text is tokenized). Adapted from
shared/peer/random_llama8b.py (which borrows SmolLM2's tokenizer from a staged GGUF); this one needs
nothing staged: torch, transformers and tokenizers only, no internet. About 16 GB, under a minute.

usage: python3 make_random_llama8b.py OUTDIR"""
import json, os, sys, time

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM

OUTDIR = sys.argv[1]
VOCAB = 128256
if os.path.exists(os.path.join(OUTDIR, "config.json")):
    print(f"{OUTDIR}: already built", flush=True)
    sys.exit(0)
t0 = time.perf_counter()
os.makedirs(OUTDIR, exist_ok=True)
cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                  max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
with torch.no_grad():
    for p in model.parameters():
        if p.dim() == 1:
            p.fill_(1.0)  # RMSNorm weights
        else:
            torch.nn.init.normal_(p, std=0.02)
model.save_pretrained(OUTDIR, safe_serialization=True)
c = json.load(open(os.path.join(OUTDIR, "config.json")))
c.pop("rope_scaling", None)
c.pop("rope_parameters", None)
c["rope_theta"] = 500000.0
json.dump(c, open(os.path.join(OUTDIR, "config.json"), "w"), indent=1)
vocab = {f"t{i}": i for i in range(VOCAB)}
vocab["<unk>"], vocab["<s>"], vocab["</s>"] = 0, 1, 2
del vocab["t0"], vocab["t1"], vocab["t2"]
tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.save(os.path.join(OUTDIR, "tokenizer.json"))
json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
          open(os.path.join(OUTDIR, "tokenizer_config.json"), "w"), indent=1)
json.dump({"bos_token_id": 1, "eos_token_id": 2},
          open(os.path.join(OUTDIR, "generation_config.json"), "w"), indent=1)
print(f"built and saved a random Llama-3-8B-shaped checkpoint in {time.perf_counter() - t0:.1f}s",
      flush=True)
