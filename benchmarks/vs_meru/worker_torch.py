"""PyTorch side of ``benchmarks/bench_vs_meru.py``: MERU's own code, imported unmodified from the
checkout in ``$MERU_DIR`` (never copied into this project), run eagerly in float32.

Imported from MERU: ``meru/lorentz.py``, ``meru/models.py`` (which needs ``loguru`` through
``meru/utils/distributed.py``), ``meru/encoders/*`` and ``meru/optim.py``; not its config system
(hydra) or data modules. The models and the optimizer are built with the literal values of MERU's
``configs/train_meru_vit_s.py`` and ``configs/train_clip_vit_s.py``. Needs torch 2.14.1,
torchvision 0.29.1 and timm (torch 2.13 with timm fails on a torchvision mismatch).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proto  # noqa: E402

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
proto.pin(THREADS)
sys.path.insert(0, os.environ["MERU_DIR"])

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)

from meru import lorentz as meru_lorentz  # noqa: E402
from meru.encoders.image_encoders import build_timm_vit  # noqa: E402
from meru.encoders.text_encoders import TransformerTextEncoder  # noqa: E402
from meru.models import MERU, CLIPBaseline  # noqa: E402
from meru.optim import LinearWarmupCosineDecayLR, set_weight_decay_per_param  # noqa: E402

REG = proto.Registry()


def _process_group() -> None:
    """MERU's loss gathers features across processes and asks torch.distributed for the world
    size, so a one-process gloo group (on a file store: no network) must exist."""
    import torch.distributed as dist

    if not dist.is_initialized():
        store = tempfile.mktemp(prefix="meru_pg_", dir=os.environ.get("BENCH_WORKDIR"))
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


def info() -> dict:
    import timm
    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "mkl": torch.backends.mkl.is_available(),
        "meru_dir": os.environ["MERU_DIR"],
    }


def setup_pairwise(x_path: str, y_path: str, curv: float, warmup: int) -> dict:
    x, y = torch.from_numpy(np.load(x_path)), torch.from_numpy(np.load(y_path))
    c = torch.tensor(curv, dtype=torch.float32)  # a tensor, as MERU passes self.curv.exp()

    def dist():
        with torch.no_grad():
            return meru_lorentz.pairwise_dist(x, y, c)

    def matmul():
        with torch.no_grad():
            return x @ y.T

    REG.fns.update({"pairwise/dist": dist, "pairwise/matmul": matmul})
    for _ in range(warmup):
        dist(), matmul()
    return {}


def dump_pairwise(path: str) -> dict:
    np.save(path, REG.fns["pairwise/dist"]().numpy())
    return {}


def _build(kind: str, depth: int | None):
    """MERU / CLIP ViT-S as MERU's configs build them; ``depth`` (smoke runs) keeps the first
    ``depth`` blocks of each tower."""
    visual = build_timm_vit(
        arch="vit_small_mocov3_patch16_224", global_pool="token", use_sincos2d_pos=True
    )
    text_layers = 12
    if depth is not None:
        visual.blocks = visual.blocks[:depth]
        text_layers = depth
    textual = TransformerTextEncoder(
        arch=f"L{text_layers}_W512", vocab_size=49408, context_length=77
    )
    if kind == "meru":
        model = MERU(
            visual=visual,
            textual=textual,
            embed_dim=512,
            curv_init=1.0,
            learn_curv=True,
            entail_weight=0.2,
        )
        return model, ["logit_scale", "visual_alpha", "textual_alpha", "curv"]
    model = CLIPBaseline(visual=visual, textual=textual, embed_dim=512)
    return model, ["logit_scale"]


def _inputs(images_path: str, tokens_path: str | None):
    images = torch.from_numpy(np.load(images_path)).permute(0, 3, 1, 2).contiguous()  # NCHW
    tokens = None
    if tokens_path:  # MERU takes a list of LongTensors
        tokens = [t.clone() for t in torch.from_numpy(np.load(tokens_path).astype(np.int64))]
    return images, tokens


def setup_train(kind: str, images_path: str, tokens_path: str, warmup: int, depth=None) -> dict:
    _process_group()
    torch.manual_seed(0)
    model, exclude = _build(kind, depth)
    model.train()
    images, tokens = _inputs(images_path, tokens_path)
    groups = set_weight_decay_per_param(
        model, weight_decay=0.2, gain_bias_decay=0.0, exclude_params=exclude
    )
    optimizer = torch.optim.AdamW(groups, lr=5e-4, betas=(0.9, 0.98), weight_decay=0.2)
    scheduler = LinearWarmupCosineDecayLR(optimizer, total_steps=120000, warmup_steps=4000)
    last = {}

    def step():  # MERU's scripts/train.py loop body in float32 (amp off)
        optimizer.zero_grad()
        loss = model(images, tokens)["loss"]
        loss.backward()
        optimizer.step()
        scheduler.step()
        last["loss"] = loss.detach()

    REG.fns[f"train/{kind}"] = step
    REG.keep[f"train/{kind}"] = (model, optimizer, scheduler, images, tokens)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    return {
        "warmup_s": time.perf_counter() - start,
        "loss": float(last["loss"]),
        "params": sum(p.numel() for p in model.parameters()),
    }


def parity_dump(kind: str, path: str, n: int) -> dict:
    """Saves the current weights of ``train/<kind>`` (a numpy state dict) and returns the loss on
    the first ``n`` examples of the batch (no update)."""
    model, _, _, images, tokens = REG.keep[f"train/{kind}"]
    np.savez(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    with torch.no_grad():
        out = model(images[:n], tokens[:n])
    return {"loss": float(out["loss"]), **{k: float(v) for k, v in out["logging"].items()}}


def setup_infer(kind: str, images_path: str, warmup: int, depth=None) -> dict:
    _process_group()
    torch.manual_seed(0)
    model, _ = _build(kind, depth)
    model.eval()
    images, _ = _inputs(images_path, None)

    def infer():  # MERU's evaluation wraps encode_image in inference mode
        with torch.inference_mode():
            return model.encode_image(images, project=True)

    REG.fns[f"infer/{kind}"] = infer
    REG.keep[f"infer/{kind}"] = (model, images)
    for _ in range(warmup):
        infer()
    return {}


if __name__ == "__main__":
    proto.serve(
        {
            "info": info,
            "setup_pairwise": setup_pairwise,
            "dump_pairwise": dump_pairwise,
            "setup_train": setup_train,
            "setup_infer": setup_infer,
            "parity_dump": parity_dump,
            "time": REG.time,
            "free": REG.free,
        }
    )
