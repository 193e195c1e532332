"""Evaluate a pretrained CLIP / MERU model: zero-shot classification (+ image-text retrieval).

    python -m experiments.evaluate --pretrained=runs/meru/pretrained
    python -m experiments.evaluate --pretrained=DIR --data=shapes --data_dir=/tmp/tfds
    python -m experiments.evaluate --pretrained=DIR --retrieval_images=1000 --out=results.json

``--pretrained`` is a directory written by training or ``python -m checkpoints_convert`` (or a
``.pth``). Zero-shot classification uses the data set's class prompt ensembles; retrieval (when
``--retrieval_images`` > 0) uses the first N images of the split, each with
``--captions_per_image`` captions drawn from the data set's caption templates. Prints MERU-style
copy-paste result lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import ml_collections
import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pretrained", required=True, help="converted directory or .pth file")
    p.add_argument("--data", default="fashion_mnist", help="fashion_mnist | shapes | prepared")
    p.add_argument("--source_dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--data_dir", default=None, help="where prepared data sets live")
    p.add_argument("--path", default=None, help="--data=prepared: tfds version directory")
    p.add_argument("--shapes_image_size", type=int, default=32, help="--data=shapes variant")
    p.add_argument("--shapes_train_per_class", type=int, default=64)
    p.add_argument("--shapes_test_per_class", type=int, default=16)
    p.add_argument("--split", default="test")
    p.add_argument("--batch_size", type=int, default=500)
    p.add_argument("--retrieval_images", type=int, default=0)
    p.add_argument("--captions_per_image", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p


def _data_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name=args.data,
            source_dir=args.source_dir,
            data_dir=args.data_dir,
            path=args.path,
            max_examples=None,
            shapes=dict(
                image_size=args.shapes_image_size,
                train_per_class=args.shapes_train_per_class,
                test_per_class=args.shapes_test_per_class,
                seed=0,
            ),
        )
    )


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


def retrieval_report(pre, data, loader, args) -> dict:
    """R@k with caption->image pairs as ground truth, and with every caption naming the
    image's concept counted as correct (template captions repeat across images)."""
    from hac_jax import data as hdata
    from hac_jax.eval import encode, metrics, zero_shot
    from hac_jax.models import scalars_at_use

    cfg = pre.config
    bank = hdata.CaptionBank(data.hierarchy, context_length=cfg.text.context_length)
    batch, tokens, t2i, levels = retrieval_set(
        loader, bank, args.retrieval_images, args.captions_per_image, args.seed
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
            f"retrieval ({name}) {data.name}/{args.split} ({len(batch['label'])} images) | "
            + zero_shot.results_line(recalls)
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad arguments or inputs)."""
    args = _parser().parse_args(argv)
    from hac_jax import data as hdata
    from hac_jax.eval import zero_shot
    from hac_jax.models import load_pretrained

    try:
        pre = load_pretrained(args.pretrained)
        data = hdata.load_data(_data_config(args))
        if args.batch_size <= 0:
            raise ValueError(f"--batch_size must be positive, got {args.batch_size}")
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = pre.config
    loader = hdata.make_loader(
        data,
        args.split,
        batch_size=args.batch_size,
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
        batch_size=args.batch_size,
    )
    results = {
        "zero_shot": dict(zs.metrics),
        "per_class_acc": dict(zip(zs.class_names, map(float, zs.per_class_acc), strict=True)),
    }
    print(zs.line(f"zero-shot {data.name}/{args.split}"))
    print(
        "per-class: " + ", ".join(f"{n} {100 * a:.1f}" for n, a in results["per_class_acc"].items())
    )
    if args.retrieval_images > 0:
        results["retrieval"] = retrieval_report(pre, data, loader, args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
