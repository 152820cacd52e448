"""Item-encoder benchmarks on the demo dataset's real images and texts (issue 4).

For each encoder, in its own process:
  * ``model``: items/s of the encoder's forward pass alone, on tensors preprocessed beforehand
    (the mean of one pass before and one after the extraction, to even out a shared CPU);
  * ``extract``: items/s of :func:`lmmrec.encoders.extract_features` over the same items (Pillow
    decoding and preprocessing in DataLoader workers, chunked writes, manifest);
  * their ratio (extraction must reach 85% of the model alone: data loading is not the
    bottleneck), and the process's peak resident memory.

Encoders: ``sbert:default`` (all-MiniLM-L6-v2, texts), ``cnn:default`` (EfficientNet-Lite0,
images) and a CLIP of ViT-B/32 size with random weights (``CLIPConfig()`` defaults: the compute of
the real one), images and texts. No CLIP vocabulary can be had offline, so its tokenizer is a BPE
whose merges spell out the demo's words: about as many tokens per text as the real one.

Usage:
    python benchmarks/bench_encoders.py [--items 600] [--batch-size 32] [--workers W] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("sbert", "cnn", "clip")


def demo_subset(folder: Path, n_items: int):
    """The first ``n_items`` demo items as a dataset in ``folder`` (images read in place)."""
    import numpy as np

    from lmmrec.data.catalog import ItemCatalog
    from lmmrec.data.dataset import Dataset
    from lmmrec.data.demo import load_demo

    demo = load_demo()
    catalog = demo.catalog
    images = [str(catalog.image_path(i)) for i in range(n_items)]
    users = items = np.repeat(np.arange(n_items), 3)  # user u meets item u in every split
    labels = np.tile([0, 1, 2], n_items)
    dataset = Dataset.from_interactions(
        users, items, labels, name="demo-subset", where="benchmark", n_items=n_items,
        catalog=ItemCatalog(texts=catalog.texts[:n_items], images=images),
    )  # fmt: skip
    dataset.save(folder)
    return Dataset.load(folder)


def clip_b32_folder(folder: Path, texts: list[str]) -> Path:
    """A random-weight CLIP ViT-B/32 with a BPE vocabulary that spells the given texts' words."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    words = sorted({w for t in texts for w in re.findall(r"[a-z]+|[^\sa-z]", t.lower())})
    tokens = {c for w in words for c in w} | {c + "</w>" for w in words for c in w}
    merges: list[str] = []
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        for i in range(1, len(parts)):
            merges.append(f"{''.join(parts[:i])} {parts[i]}")
            tokens.add("".join(parts[: i + 1]))
    vocab = {t: i for i, t in enumerate(sorted(tokens))}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    unique_merges = list(dict.fromkeys(merges))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(unique_merges) + "\n")
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "eos_token_id": eos, "pad_token_id": eos,
                     "bos_token_id": vocab["<|startoftext|>"]},
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPTokenizer.from_pretrained(folder).save_pretrained(folder)
    CLIPImageProcessorPil().save_pretrained(folder)
    return folder


def model_items_per_second(encoder, batches: list[dict]) -> float:
    """Forward passes alone over pre-made input batches."""
    import torch

    n_items = sum(len(next(iter(b.values()))) for b in batches)
    with torch.inference_mode():
        started = time.perf_counter()
        for batch in batches:
            encoder(batch)
        return n_items / (time.perf_counter() - started)


def measure(
    name: str, n_items: int, batch_size: int, workers: int | None, threads: int | None
) -> dict[str, object]:
    """Run inside a fresh process."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from lmmrec import encoders
    from lmmrec.encoders import ItemBatch, extract_features

    with tempfile.TemporaryDirectory() as tmp:
        dataset = demo_subset(Path(tmp) / "data", n_items)
        catalog = dataset.catalog
        spec = {"sbert": "sbert:default", "cnn": "cnn:default"}.get(name)
        if name == "clip":
            (Path(tmp) / "clip").mkdir()
            spec = f"clip:{clip_b32_folder(Path(tmp) / 'clip', catalog.texts)}"
        encoder = encoders.build(spec)
        modalities = list(encoder.default_modalities)
        batches = []
        for first in range(0, n_items, batch_size):
            rows = range(first, min(first + batch_size, n_items))
            items = ItemBatch(
                texts=[catalog.texts[i] for i in rows] if "text" in modalities else None,
                images=[catalog.load_image(i) for i in rows] if "image" in modalities else None,
            )
            batches.append(encoder.preprocess(items))
        with torch.inference_mode():
            encoder(batches[0])  # warm-up
        before = model_items_per_second(encoder, batches)
        features = extract_features(
            dataset, encoder, name=name, batch_size=batch_size, num_workers=workers,
            device="cpu", progress=False,
        )  # fmt: skip
        after = model_items_per_second(encoder, batches)
    model = (before + after) / 2
    extract = features.manifest["timing"]["items_per_second"]
    return {
        "encoder": spec if name != "clip" else "clip (ViT-B/32 size, random)",
        "modalities": modalities,
        "dims": features.dims,
        "items": n_items,
        "model_items_per_s": round(model, 1),
        "model_before_after": [round(before, 1), round(after, 1)],
        "extract_items_per_s": extract,
        "ratio": round(extract / model, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "torch_threads": torch.get_num_threads(),
        "workers": features.manifest["timing"]["num_workers"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: extraction's own")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sizes = (args.items, args.batch_size, args.workers, args.threads)
        print(json.dumps(measure(args.child, *sizes)))
        return
    for name in args.encoders.split(","):
        command = [sys.executable, __file__, "--child", name]
        for option in ("items", "batch_size", "workers", "threads"):
            if getattr(args, option) is not None:
                command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        print(output.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
