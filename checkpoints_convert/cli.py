"""``python -m checkpoints_convert --input X.pth --output DIR``: a PyTorch MERU / CLIP-baseline
checkpoint -> a converted directory (orbax params + config.json [+ root.npy]).

The model kind and architecture are read from the state dict's keys and shapes; ``--kind``,
``--heads`` and ``--text-heads`` override them (head counts are in no tensor shape: the released
widths have known counts; other widths take them from the flags or from a metadata JSON beside
the checkpoint: ``hac_jax.models.pretrained.sidecar_heads``). Every failure is one
``error: ...`` line on stderr with exit status 2, and leaves no output directory behind.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["build_parser", "convert", "main"]

EXIT_OK = 0
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (``--input``, ``--output``, overrides, ``--overwrite``)."""
    parser = argparse.ArgumentParser(
        prog="python -m checkpoints_convert",
        description=(
            "Convert a PyTorch MERU / CLIP-baseline checkpoint (.pth) to a Flax checkpoint "
            "directory for hac_jax.models.load_pretrained. The file is read with "
            "torch.load(weights_only=True): pickled code is refused, never run."
        ),
    )
    parser.add_argument("--input", "-i", required=True, type=Path, help="the .pth file")
    parser.add_argument(
        "--output", "-o", required=True, type=Path, help="directory to create (must not exist)"
    )
    parser.add_argument(
        "--kind", choices=("meru", "clip"), help="model kind (default: detected from the keys)"
    )
    parser.add_argument(
        "--heads", type=int, help="ViT attention heads (default: known for released widths)"
    )
    parser.add_argument(
        "--text-heads", type=int, help="text attention heads (default: known for released widths)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it is a previous converted directory (or empty)",
    )
    parser.add_argument(
        "--no-hash", action="store_true", help="skip the SHA-256 of the input in convert_info.json"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    return parser


def convert(
    input_path: Path,
    output: Path,
    *,
    kind: str | None = None,
    heads: int | None = None,
    text_heads: int | None = None,
    overwrite: bool = False,
    hash_input: bool = True,
) -> dict:
    """Converts ``input_path`` into the directory ``output``; returns the summary facts.

    Raises the library errors (``FileNotFoundError``, ``FileExistsError``,
    ``hac_jax.models.saved.CheckpointError``, ``hac_jax.models.torch_mapping.ConversionError``);
    :func:`main` turns them into one-line messages.
    """
    from hac_jax.models import saved, torch_io
    from hac_jax.models.pretrained import convert_config, scalar_summary
    from hac_jax.models.torch_mapping import convert_state_dict

    start = time.perf_counter()
    # Refuse an existing output before reading a possibly multi-GB input.
    target = saved.check_output_dir(output, overwrite)
    ckpt = torch_io.read_torch_checkpoint(input_path)
    cfg = convert_config(
        ckpt.state_dict, kind=kind, heads=heads, text_heads=text_heads, source_path=input_path
    )
    params = convert_state_dict(ckpt.state_dict, cfg)
    facts = scalar_summary(params, cfg)
    info = {
        "source": str(Path(input_path).absolute()),
        "source_sha256": torch_io.file_sha256(input_path) if hash_input else None,
        "source_layout": ckpt.layout,
        "ignored_top_level_keys": list(ckpt.ignored_keys),
        "kind": cfg.kind,
        "arch": facts["arch"],
        "num_params": facts["num_params"],
    }
    written = saved.write_converted(
        target, params, cfg, root=ckpt.root, info=info, overwrite=overwrite
    )
    facts.update(
        config=cfg,
        output=written,
        has_root=ckpt.root is not None,
        ignored_keys=ckpt.ignored_keys,
        layout=ckpt.layout,
        seconds=time.perf_counter() - start,
    )
    return facts


def _summary(facts: dict) -> str:
    cfg = facts["config"]
    v, t = cfg.vision, cfg.text
    arch = facts["arch"] or "custom"
    lines = [
        f"converted {facts['kind'].upper()} ({arch}) in {facts['seconds']:.1f} s",
        f"  vision   ViT {v.image_size}px patch {v.patch_size}: width {v.width}, depth {v.depth}, "
        f"heads {v.heads}, mlp {v.hidden_dim}",
        f"  text     width {t.width}, depth {t.depth}, heads {t.heads}, mlp {t.hidden_dim}, "
        f"context {t.context_length}, vocab {t.vocab_size}",
        f"  embed    {cfg.embed_dim}",
        f"  params   {facts['num_params']:,} ({facts['num_trainable']:,} trainable; "
        "visual/pos_embed is a fixed table)",
    ]
    names = ("logit_scale", "curv", "visual_alpha", "textual_alpha")
    lines += [f"  {name:<14}{facts[name]:.6g}" for name in names if name in facts]
    if facts["has_root"]:
        lines.append(f"  {'root':<14}({cfg.embed_dim},) vector saved")
    if facts["ignored_keys"]:
        lines.append(f"  ignored top-level keys: {', '.join(facts['ignored_keys'])}")
    if facts["layout"] == "bare":
        lines.append("  input was a bare state dict (no top-level 'model' key)")
    lines.append(f"  output   {facts['output']}")
    return "\n".join(lines)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.filename and not text:
        text = f"{error.strerror}: {error.filename}"
    return text or type(error).__name__


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Runs the converter; returns the exit status (0, or 2 with ``error: ...`` on stderr)."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage and the error
        return EXIT_ERROR if e.code else EXIT_OK
    from hac_jax.models.saved import CheckpointError
    from hac_jax.models.torch_mapping import ConversionError, HeadCountWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", HeadCountWarning)
            facts = convert(
                args.input,
                args.output,
                kind=args.kind,
                heads=args.heads,
                text_heads=args.text_heads,
                overwrite=args.overwrite,
                hash_input=not args.no_hash,
            )
    except (CheckpointError, ConversionError, OSError, ValueError) as e:
        print(f"error: {_one_line(e)}", file=stderr)
        return EXIT_ERROR
    for w in caught:
        if issubclass(w.category, HeadCountWarning):
            print(f"warning: {_one_line(w.message)}", file=stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if not args.quiet:
        print(_summary(facts), file=stdout)
    return EXIT_OK
