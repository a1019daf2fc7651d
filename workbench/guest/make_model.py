#!/usr/bin/env python3
"""Complete a model folder that holds only a config.json, so vLLM can run it with no hub.

Adds a tokenizer sized to the config's vocabulary, in its own folder (DIR/tokenizer, passed to vLLM as
--tokenizer): word-level, token i is "t<i>", so decoding ids and encoding the text again gives the same ids
(vLLM's random dataset relies on that to hit the requested prompt length). Its own folder because beside a
config.json transformers 5 picks the model type's tokenizer class (Qwen2Tokenizer, a byte-level BPE) over
the one tokenizer_config.json names, and that class cannot read a word-level vocabulary.

With ``--weights random`` it also writes a seeded checkpoint at the model's own init scale (transformers'
``_init_weights``: normal(0, initializer_range), norms at 1): unlike vLLM's dummy weights (uniform in
±1e-3, norms included) its logits are not flat, so greedy tokens and logprobs of two arms can be compared
meaningfully.

Runs where vLLM runs (needs tokenizers; torch and transformers for --weights random). Idempotent: a
folder already completed the same way is left as it is.
usage: python make_model.py DIR [--weights dummy|random] [--seed 0] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MARKER = ".workbench-model.json"
TOKENIZER = "tokenizer"


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def write_tokenizer(folder: Path, config: dict) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = int(config["vocab_size"])
    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / "tokenizer.json"))
    eos = _ids(config.get("eos_token_id")) or [vocab_size - 1]
    bos = _ids(config.get("bos_token_id"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(config.get("max_position_embeddings") or 4096),
        "eos_token": f"t{eos[0]}",
        "pad_token": f"t{eos[0]}",
        "clean_up_tokenization_spaces": False,
    }
    if bos:
        settings["bos_token"] = f"t{bos[0]}"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))


def write_random_checkpoint(folder: Path, seed: int, device: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    dtype = getattr(config, "torch_dtype", None) or getattr(config, "dtype", None) or torch.bfloat16
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config)
    model.to(dtype).save_pretrained(folder)  # safetensors: the default of transformers 4.x and 5.x


def complete(folder: Path, weights: str, seed: int, device: str) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        sys.exit(f"error: {config_path} not found: the folder must hold the model's config.json")
    config = json.loads(config_path.read_text())
    want = {"weights": weights, "seed": seed if weights == "random" else None,
            "vocab_size": int(config["vocab_size"])}
    marker = folder / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in want} == want:
            print(f"model folder {folder} is ready ({weights} weights)")
            return done
    start = time.time()
    write_tokenizer(folder / TOKENIZER, config)
    if weights == "random":
        write_random_checkpoint(folder, seed, device)
    record = {**want, "seconds": round(time.time() - start, 1)}
    marker.write_text(json.dumps(record))
    print(f"model folder {folder}: tokenizer ({want['vocab_size']} tokens)"
          + (f", seeded checkpoint (seed {seed})" if weights == "random" else "") + f" in {record['seconds']} s")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder holding the model's config.json")
    parser.add_argument("--weights", choices=("dummy", "random"), default="dummy",
                        help="dummy: tokenizer only (vLLM --load-format dummy); random: also a seeded checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=os.environ.get("WORKBENCH_MODEL_DEVICE", ""),
                        help="where to initialise the checkpoint (default: cuda when available)")
    args = parser.parse_args(argv)
    device = args.device
    if args.weights == "random" and not device:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    complete(args.folder, args.weights, args.seed, device or "cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
