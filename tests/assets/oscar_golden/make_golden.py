# Writes the golden values of tests/assets/oscar_golden/ by running NAVER's reference COCOM code (not in this repo).
"""Usage (two steps, two Python environments):
    python tests/oscar_released_tiny.py TINY          # this repo's environment: the tiny released folders
    OSCAR_REFERENCE=REFDIR OSCAR_TINY=TINY PYTHONPATH=REFDIR/site python tests/assets/oscar_golden/make_golden.py
REFDIR holds modeling_cocom_ref.py and site/ with transformers 4.46.3 + peft 0.13.2 (the reference predates
transformers 5: it passes resume_download to from_pretrained).

See README.md next to this file for the reference version and what was patched. Builds the tiny released-layout
folders with tests/oscar_released_tiny.py (deterministic), loads each with the reference COCOM.from_pretrained
on CPU and records, for two questions with two documents each:
  enc_input_ids / enc_attention_mask   compressor inputs (query-dependent, the reference prepare_encoder_inputs)
  enc_qi_input_ids                     compressor inputs without the query
  memory                               the compressor's memory vectors (4 docs, l, H)
  dec_input_ids / dec_attention_mask   the generator prompt (blend_prompt_and_memory_tokens, left padded)
  logits_tail                          COCOM.forward logits at the last TAIL prompt positions
and the greedy answers of COCOM.generate (max_new_tokens=MAX_NEW) in answers.json.
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.environ["OSCAR_REFERENCE"])

QUESTIONS = ["Where was Dravok born?", "What does the old king like?"]
DOCUMENTS = [["Dravok was born in Pelmar, a small city by the river.", "The team won the national game."],
             ["The old king likes music and keeps a large house.", "People say the island has a long history."]]
TAIL = 6
MAX_NEW = 8


def run(ref, folder):
    from safetensors.torch import save_file
    model = ref.COCOM.from_pretrained(folder, attn_implementation="sdpa")
    model.eval()
    k = len(DOCUMENTS[0])
    model.generation_top_k = k
    flat_docs = sum(DOCUMENTS, [])
    flat_queries = [q for q in QUESTIONS for _ in range(k)]
    enc = model.prepare_encoder_inputs(flat_docs, max_length=model.doc_max_length, q_texts=flat_queries)
    enc_qi = model.prepare_encoder_inputs(flat_docs, max_length=model.doc_max_length)
    prompts = [model.blend_prompt_and_memory_tokens(query=q) for q in QUESTIONS]
    dec = model.decoder_tokenizer(prompts, return_tensors="pt", padding="longest", add_special_tokens=False,
                                  truncation=True, max_length=2048)
    inputs = {"enc_input_ids": enc["input_ids"], "enc_attention_mask": enc["attention_mask"],
              "dec_input_ids": dec["input_ids"], "dec_attention_mask": dec["attention_mask"]}
    with torch.no_grad():
        memory = model.compress(enc["input_ids"], enc["attention_mask"])
        memory_qi = model.compress(enc_qi["input_ids"], enc_qi["attention_mask"])
        logits = model(**inputs)["logits"]
        answers = model.generate(inputs, max_new_tokens=MAX_NEW)
    tensors = {"enc_input_ids": enc["input_ids"], "enc_attention_mask": enc["attention_mask"].long(),
               "enc_qi_input_ids": enc_qi["input_ids"], "memory": memory.float(), "memory_qi": memory_qi.float(),
               "dec_input_ids": dec["input_ids"], "dec_attention_mask": dec["attention_mask"],
               "logits_tail": logits[:, -TAIL:].float()}
    return {k: v.contiguous() for k, v in tensors.items()}, answers, prompts


def force_float32():
    """OSCAR_GOLDEN_DTYPE=float32: the reference computes in float32 instead of its hard-coded bfloat16 (done from
    outside, on the classes it calls; the reference file is unchanged), so the golden values are free of bf16
    rounding differences between transformers versions."""
    import transformers
    torch.nn.Module.bfloat16 = lambda self: self
    for cls in (transformers.AutoModel, transformers.AutoModelForCausalLM):
        for name in ("from_pretrained", "from_config"):
            original = getattr(cls, name).__func__

            def call(klass, *args, _original=original, **kwargs):
                kwargs.pop("torch_dtype", None)
                kwargs.pop("dtype", None)
                return _original(klass, *args, torch_dtype=torch.float32, **kwargs)
            setattr(cls, name, classmethod(call))


def main():
    import transformers
    dtype = os.environ.get("OSCAR_GOLDEN_DTYPE", "bfloat16")
    if dtype == "float32":
        force_float32()
    import modeling_cocom_ref as ref
    from safetensors.torch import save_file
    out = {}
    for name in ("oscar-llama", "oscar-nlayers", "export-native"):
        tensors, answers, prompts = run(ref, os.path.join(os.environ["OSCAR_TINY"], name))
        save_file(tensors, os.path.join(HERE, f"{name}-{dtype}.safetensors"))
        out[name] = {"answers": answers, "prompt_text": prompts}
    out["questions"], out["documents"] = QUESTIONS, DOCUMENTS
    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    out["dtype"] = dtype
    with open(os.path.join(HERE, f"answers-{dtype}.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
