"""kvpress side of the parity check: every press at every ratio, query-agnostic and query-aware, on
the prompts of make_prompts.py, with the same protocol kvbench uses (raw completion prompts, no
chat template, context and question tokenized separately, greedy decoding):
- query-agnostic: the context is prefilled and compressed, then the question is forwarded;
- query-aware: context + question minus its last token is prefilled and compressed, then the last
  question token is forwarded (kvpress's query-aware protocol; kvbench's definition).
Each press is built with kvpress's own defaults (kvbench runs them through `preset: kvpress`).
Writes $OUT/kvpress.json: one row per generation.

Usage: python3 kvpress_side.py MODEL_DIR GGUF_NAME PROMPTS.jsonl
Env: RATIOS (default 0.5,0.75), PRESSES (comma list), MODES (agnostic,aware), MAX_NEW (8).
"""
import json, os, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
import kvpress
from kvpress import (AdaKVPress, ExpectedAttentionPress, KnormPress, PyramidKVPress, SnapKVPress,
                     StreamingLLMPress, TOVAPress)

PRESSES = {
    "full": lambda r: None,
    "streaming_llm": lambda r: StreamingLLMPress(compression_ratio=r),
    "knorm": lambda r: KnormPress(compression_ratio=r),
    "snapkv": lambda r: SnapKVPress(compression_ratio=r),
    "expected_attention": lambda r: ExpectedAttentionPress(compression_ratio=r),
    "tova": lambda r: TOVAPress(compression_ratio=r),
    "pyramidkv": lambda r: PyramidKVPress(compression_ratio=r),
    "adakv": lambda r: AdaKVPress(SnapKVPress(compression_ratio=r)),
}


def main():
    model_dir, gguf, prompts = sys.argv[1:4]
    out = os.environ.get("OUT", "/tmp")
    ratios = [float(x) for x in os.environ.get("RATIOS", "0.5,0.75").split(",")]
    keep = os.environ.get("PRESSES")
    presses = {k: v for k, v in PRESSES.items() if not keep or k in keep.split(",")}
    modes = os.environ.get("MODES", "agnostic,aware").split(",")
    max_new = int(os.environ.get("MAX_NEW", "8"))
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf, dtype=torch.bfloat16)
    model = model.to("cuda").eval()
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok, device="cuda")
    print("kvpress", getattr(kvpress, "__version__", "?"), flush=True)
    rows = [json.loads(l) for l in open(prompts)]

    def generate(row, press, aware):
        ctx = tok.encode(row["context"], add_special_tokens=False)
        q = tok.encode(row["question"], add_special_tokens=False)
        if aware:
            ctx, q = ctx + q[:-1], q[-1:]
        inputs = {"context_ids": torch.tensor([ctx]), "questions_ids": [torch.tensor([q])]}
        answer = pipe._forward(inputs, max_new_tokens=max_new, press=press)
        return answer[0] if isinstance(answer, list) else answer

    results = []
    generate(rows[0], None, False)  # warm-up
    for mode in modes:
        aware = mode == "aware"
        for name, make in presses.items():
            for ratio in [0.0] if name == "full" else ratios:
                t0 = time.perf_counter()
                try:
                    press = make(ratio)
                    for row in rows:
                        pred = generate(row, press, aware)
                        results.append({"id": row["id"], "task": row["task"], "method": name,
                                        "ratio": ratio, "query_aware": aware, "prediction": pred,
                                        "score": float(any(a in pred for a in row["answers"]))})
                except Exception as e:  # one failing press must not lose the others
                    print("FAIL", mode, name, ratio, repr(e)[:300], flush=True)
                torch.cuda.synchronize()
                print(f"{mode:8s} {name:20s} {ratio:.3f} {time.perf_counter() - t0:6.1f}s", flush=True)
                with open(os.path.join(out, "kvpress.json"), "w") as f:
                    json.dump(results, f)


if __name__ == "__main__":
    main()
