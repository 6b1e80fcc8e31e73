"""Reference next-token predictions of transformers on a GGUF (run on the GPU machine).

usage: python3 gemma_transformers_reference.py GGUF_DIR GGUF_NAME OUT.json

transformers loads and dequantizes the same GGUF file kvbench reads, in float32 (the CPU test
compares kvbench's f32 forward against it) and bf16 (what both run on the GPU). For each prompt:
transformers' token ids (an oracle for kvbench's GGUF tokenizer), the argmax at every position,
the top-20 logits at the last position and 16 greedy tokens. Needs the `gguf` package.
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_dir, gguf_name, out_path = sys.argv[1:4]
FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Überprüfung: naïve café, 東京タワー, emoji 🙂 and\ttabs  and  double  spaces.",
    FILLER * 10
    + "The special magic number is 7481. "
    + FILLER * 10
    + "\nQuestion: What is the special magic number?\nAnswer: The special magic number is",
    FILLER * 40
    + "Anna lives in Lisbon. "
    + FILLER * 30
    + "\nAnswer: Anna lives in",
]

tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
result = {"producer": None, "prompts": []}
# The same prompts as kvbench samples (context | question split at the last space), for the
# end-to-end comparison with `kvbench run` on the GPU: jsonl beside OUT, greedy text per line.
jsonl_path = out_path.replace(".json", ".jsonl")
splits = []
with open(jsonl_path, "w") as f:
    for i, text in enumerate(PROMPTS):
        k = text.rfind(" ")
        ctx, q = text[:k], text[k:]
        f.write(json.dumps({"id": f"p{i}", "context": ctx, "question": q, "answers": ["-"]}) + "\n")
        splits.append(tok(ctx).input_ids + tok(q, add_special_tokens=False).input_ids)
for dtype in (torch.float32, torch.bfloat16):
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, torch_dtype=dtype, attn_implementation="eager"
    ).to("cuda").eval()
    print(f"loaded {dtype} in {time.time() - t0:.1f}s", flush=True)
    import transformers
    result["producer"] = f"transformers {transformers.__version__}, torch {torch.__version__}, eager"
    for i, text in enumerate(PROMPTS):
        ids = tok(text, return_tensors="pt").input_ids.to("cuda")
        with torch.no_grad():
            logits = model(ids).logits[0].float()
            greedy = model.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:]
        top = torch.topk(logits[-1], 20)
        entry = {
            "argmax": logits.argmax(-1).tolist(),
            "top20_ids": top.indices.tolist(),
            "top20_logits": top.values.tolist(),
            "greedy_16": greedy.tolist(),
        }
        if dtype == torch.float32:
            result["prompts"].append({"text": text, "input_ids": ids[0].tolist(), "f32": entry})
        else:
            result["prompts"][i]["bf16"] = entry
        print(i, len(ids[0]), repr(tok.decode(greedy)), flush=True)
        if dtype == torch.bfloat16:
            sids = torch.tensor([splits[i]], device="cuda")
            with torch.no_grad():
                g = model.generate(sids, max_new_tokens=16, do_sample=False)[0, sids.shape[1]:]
            result["prompts"][i]["split_ids"] = splits[i]
            result["prompts"][i]["split_greedy_bf16"] = g.tolist()
            result["prompts"][i]["split_greedy_bf16_text"] = tok.decode(g, skip_special_tokens=True)
    del model
    torch.cuda.empty_cache()
json.dump(result, open(out_path, "w"))
