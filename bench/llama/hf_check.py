"""A check by hand (a measurement, not a test: transformers is not a Debian package): the Llama
weights dstrain exports under Hugging Face's names load into transformers' LlamaForCausalLM with
load_state_dict(strict=True), and its loss on the last 4 x 256 bytes of a text equals that of
llama_torch_parity_test's float64 reference model on the same weights.

  /usr/bin/python3 -m venv --system-site-packages V && V/bin/pip install transformers==4.40.2
  dstrain launch --nproc 2 deploy/local/demo/shakespeare-llama.json \
    --save-model out/llama.safetensors        # or: dstrain export CKPT --out ...safetensors
  V/bin/python bench/llama/hf_check.py out/llama.safetensors deploy/local/demo/tinyshakespeare.txt

The model shape is shakespeare-llama.json's (edit `cfg` below for another)."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "../../worker/model/llama"))
import llama_torch_ref as ref
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
from safetensors.torch import load_file
w = load_file(sys.argv[1])
cfg = dict(n_layer=4, n_embd=256, n_head=4, n_kv_head=2, intermediate_size=768, vocab_size=256,
           rope_theta=10000.0, norm_eps=1e-6)
m = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=768,
    num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False))
m.load_state_dict(w, strict=True)  # raises on a missing or unexpected key
text = open(sys.argv[2], "rb").read()[-4 * 257:]
toks = torch.tensor(list(text), dtype=torch.long).view(4, 257)
x, y = toks[:, :-1], toks[:, 1:]
m = m.double().eval()
with torch.no_grad():
    hf = torch.nn.functional.cross_entropy(m(x).logits.reshape(-1, 256), y.reshape(-1)).item()
    r = float(ref.forward({k: v.double() for k, v in w.items()}, cfg, x, y))
print(f"transformers {transformers.__version__}: strict load ok; loss {hf:.6f}, reference {r:.6f}, |diff| {abs(hf - r):.1e}")
