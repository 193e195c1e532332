"""Evaluate a pretrained CLIP / MERU model: zero-shot classification (+ image-text retrieval).

    python -m experiments.evaluate --config=experiments/configs/evaluate.py \\
        --config.pretrained=runs/meru_fmnist/pretrained
    python -m experiments.evaluate --config=experiments/configs/evaluate.py:data=shapes \\
        --config.pretrained=DIR --config.data.data_dir=/tmp/tfds
    python -m experiments.evaluate --config=experiments/configs/evaluate.py \\
        --config.pretrained=DIR --config.retrieval.images=1000 --out=results.json

``config.pretrained`` is a directory written by training or ``python -m checkpoints_convert`` (or
a ``.pth``). Zero-shot classification uses the data set's class prompt ensembles; retrieval (when
``config.retrieval.images`` > 0) uses the first N images of ``config.split``, each with
``config.retrieval.captions_per_image`` captions drawn from the data set's caption templates.
Prints MERU-style copy-paste result lines; ``--out`` also writes the results as JSON; ``--help``
prints this text.

Bad input (an unknown config key, an unset or missing model, an unknown data set or split, a
non-positive size, a results file in a folder that does not exist) is reported in one line, with
exit status 2, before anything is encoded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import ml_collections
import numpy as np

from hac_jax.config_utils import parse_command_line
from hac_jax.files import write_json


def check_settings(config: ml_collections.ConfigDict, out: str) -> None:
    """Raises a one-line ``ValueError`` for settings no evaluation can run with, or
    ``FileNotFoundError`` when the folder of the results file ``out`` does not exist."""
    if not config.pretrained:
        raise ValueError("config.pretrained is not set; pass --config.pretrained=DIR_OR_PTH")
    if config.batch_size <= 0:
        raise ValueError(f"config.batch_size must be positive, got {config.batch_size}")
    if config.retrieval.images < 0:
        raise ValueError(f"config.retrieval.images must be >= 0, got {config.retrieval.images}")
    if config.retrieval.captions_per_image <= 0:
        raise ValueError(
            "config.retrieval.captions_per_image must be positive, got "
            f"{config.retrieval.captions_per_image}"
        )
    if out and os.path.isdir(out):
        raise ValueError(f"--out={out} is a directory; give the path of the JSON file")
    if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise FileNotFoundError(f"the folder of --out={out} does not exist")


def retrieval_set(loader, bank, n_images: int, captions_per_image: int, seed: int = 0):
    """The first ``n_images`` images of an unshuffled ``loader`` with ``captions_per_image``
    captions each, drawn deterministically from the caption ``bank`` (its level weights).

    Returns ``(batch {"image", "label"}, tokens (N * k, L), text_to_image (N * k,),
    caption_levels (N * k,))`` (level ids into ``hac_jax.data.CAPTION_LEVELS``).
    """
    images, labels, index = [], [], []
    for batch in loader:
        images.append(batch["image"])
        labels.append(batch["label"])
        index.append(batch["index"])
        if sum(len(x) for x in labels) >= n_images:
            break
    if not labels:
        raise ValueError("no images for retrieval")
    images = np.concatenate(images)[:n_images]
    labels = np.concatenate(labels)[:n_images]
    index = np.concatenate(index)[:n_images]
    n = len(labels)
    drawn = [bank.sample(labels, index, seed=seed, epoch=e) for e in range(captions_per_image)]
    tokens = np.stack([t for t, _ in drawn], axis=1).reshape(n * captions_per_image, -1)
    levels = np.stack([lv for _, lv in drawn], axis=1).reshape(-1)
    t2i = np.repeat(np.arange(n), captions_per_image)
    return {"image": images, "label": labels}, tokens, t2i, levels


def retrieval_report(pre, data, loader, config: ml_collections.ConfigDict) -> dict:
    """R@k with caption->image pairs as ground truth, and with every caption naming the
    image's concept counted as correct (template captions repeat across images)."""
    from hac_jax import data as hdata
    from hac_jax.eval import encode, metrics, zero_shot
    from hac_jax.models import scalars_at_use

    cfg = pre.config
    bank = hdata.CaptionBank(data.hierarchy, context_length=cfg.text.context_length)
    batch, tokens, t2i, levels = retrieval_set(
        loader,
        bank,
        config.retrieval.images,
        config.retrieval.captions_per_image,
        config.seed,
    )
    img, _ = encode.encode_images(pre.model, pre.params, [batch], keys=())
    txt = encode.encode_texts(pre.model, pre.params, tokens, project=True)
    curv = scalars_at_use(pre.params, cfg, fill=True)["curv"]
    sim = np.asarray(pre.geometry.pairwise_sim(img, txt, curv))
    depth = [hdata.CAPTION_LEVEL_DEPTH[hdata.CAPTION_LEVELS[lv]] for lv in levels]
    relevance = metrics.concept_relevance(
        batch["label"], batch["label"][t2i], depth, data.hierarchy.class_to_group
    )
    out = {
        "pairs": metrics.retrieval_recall(sim, t2i),
        "concept": metrics.retrieval_recall(sim, None, relevance=relevance),
    }
    for name, recalls in out.items():
        print(
            f"retrieval ({name}) {data.name}/{config.split} ({len(batch['label'])} images) | "
            + zero_shot.results_line(recalls)
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad arguments or inputs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["--help"], ["-h"]):
        print(__doc__)
        return 0
    from hac_jax import data as hdata
    from hac_jax.eval import zero_shot
    from hac_jax.models import load_pretrained

    try:
        config, flags = parse_command_line(argv, required=(), out="")
        check_settings(config, flags["out"])
        pre = load_pretrained(config.pretrained)
        data = hdata.load_data(config.data)
        data.source(config.split)  # an unknown split is named here, with the known ones
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        message = str(e).splitlines()[0] if str(e) else repr(e)
        print(f"error: {message}", file=sys.stderr)
        return 2
    cfg = pre.config
    loader = hdata.make_loader(
        data,
        config.split,
        batch_size=config.batch_size,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        captions=False,
        image_size=cfg.vision.image_size,
    )
    zs = zero_shot.zero_shot_classify(
        pre.model,
        pre.params,
        cfg,
        loader,
        hdata.class_prompts(data.hierarchy),
        class_names=list(data.hierarchy.classes),
        batch_size=config.batch_size,
    )
    results = {
        "zero_shot": dict(zs.metrics),
        "per_class_acc": dict(zip(zs.class_names, map(float, zs.per_class_acc), strict=True)),
    }
    print(zs.line(f"zero-shot {data.name}/{config.split}"))
    print(
        "per-class: " + ", ".join(f"{n} {100 * a:.1f}" for n, a in results["per_class_acc"].items())
    )
    if config.retrieval.images > 0:
        results["retrieval"] = retrieval_report(pre, data, loader, config)
    if flags["out"]:
        write_json(flags["out"], results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
