"""hac_jax.models.torch_mapping: config inference, conversion checks, round trips, the manifests of
the six released checkpoints (shape-only: zero-stride stand-ins, nothing large is allocated)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import warnings

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util

from hac_jax import models
from hac_jax.models import torch_mapping as mapping
from hac_jax.models.torch_mapping import ConversionError, HeadCountWarning

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "meru_torch"
MANIFESTS = [(k, a) for k in ("meru", "clip") for a in ("vit_s", "vit_b", "vit_l")]


@pytest.fixture(scope="module")
def tiny_state():
    out = {}
    for kind in ("meru", "clip"):
        ckpt = torch.load(FIXTURES / f"tiny_{kind}.pth", map_location="cpu", weights_only=True)
        out[kind] = {k: v.numpy() for k, v in ckpt["model"].items()}
    return out


def _standin(entries, pixel=True) -> dict[str, np.ndarray]:
    """Zero-stride arrays of the manifest shapes (no memory), with real small buffers."""
    out = {}
    for e in entries:
        shape = tuple(e["shape"])
        if e["key"] == "textual.attn_mask":
            out[e["key"]] = np.triu(np.ones(shape, bool), k=1)
        elif pixel and e["key"] in ("pixel_mean", "pixel_std"):
            values = (
                models.config.IMAGENET_PIXEL_MEAN
                if e["key"] == "pixel_mean"
                else (models.config.IMAGENET_PIXEL_STD)
            )
            out[e["key"]] = np.asarray(values, np.float32).reshape(shape)
        else:
            out[e["key"]] = np.broadcast_to(np.float32(0.5), shape)
    return out


def _manifest(kind, arch):
    return json.loads((FIXTURES / f"manifest_{kind}_{arch}.json").read_text())


def _towers(cfg):
    return cfg.kind, cfg.vision, cfg.text, cfg.embed_dim


# ----------------------------------------------------------------------------------------------
# Released architectures, shape-only
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,arch", MANIFESTS, ids=[f"{k}_{a}" for k, a in MANIFESTS])
def test_manifest_converts_without_flags(kind, arch):
    manifest = _manifest(kind, arch)
    entries = manifest["state_dict"]
    state = _standin(entries)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeadCountWarning)  # released widths need no guessing
        cfg = mapping.infer_config(state)
    assert _towers(cfg) == _towers(models.get_arch(arch, kind))
    assert models.arch_name(cfg) == arch
    resolved = manifest["constructor"]["visual_resolved"]
    assert cfg.vision.heads == resolved["num_heads"]
    assert cfg.text.heads == manifest["constructor"]["textual"]["heads"]
    assert cfg.vision.hidden_dim == resolved["mlp_hidden"]

    mapping.check_shapes({e["key"]: e["shape"] for e in entries}, cfg)
    params = mapping.convert_state_dict(state, cfg)
    target = models.param_shapes(cfg)
    got = jax.tree.map(lambda x: x.shape, params)
    assert got == jax.tree.map(lambda x: x.shape, target)
    n_params = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(target))
    assert n_params == manifest["num_parameters"]
    assert n_params == sum(int(np.prod(e["shape"])) for e in entries if e["kind"] == "parameter")

    back = mapping.params_to_state_dict(params, cfg)
    assert list(back) == [e["key"] for e in entries]  # state-dict order
    assert {k: v.shape for k, v in back.items()} == {
        k: tuple(e["shape"]) for k, e in zip(back, entries, strict=True)
    }
    assert back["textual.attn_mask"].dtype == np.bool_


def test_manifest_mismatch_reports_everything():
    entries = _manifest("meru", "vit_s")["state_dict"]
    shapes = {e["key"]: e["shape"] for e in entries}
    cfg = models.get_arch("vit_b", "meru")
    with pytest.raises(ConversionError) as info:
        mapping.check_shapes(shapes, cfg)
    err = info.value
    assert not err.missing and not err.unexpected
    # Every ViT tensor of width 384 instead of 768 is listed (and the visual projection).
    assert len(err.mismatched) == 4 + 12 * 12 + 2 + 1  # stem, blocks, norm, visual_proj
    assert ("visual.cls_token", (1, 1, 768), (1, 1, 384)) in err.mismatched
    assert "shape mismatches (151)" in str(err)


def test_clip_manifest_is_not_meru():
    entries = _manifest("clip", "vit_b")["state_dict"]
    with pytest.raises(ConversionError) as info:
        mapping.check_shapes(
            {e["key"]: e["shape"] for e in entries}, models.get_arch("vit_b", "meru")
        )
    assert info.value.missing == ["curv", "visual_alpha", "textual_alpha"]


# ----------------------------------------------------------------------------------------------
# The tiny fixtures
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_tiny_infer_and_round_trip(tiny_state, kind):
    state = tiny_state[kind]
    cfg = mapping.infer_config(state, heads=4, text_heads=4)
    assert _towers(cfg) == _towers(models.get_arch("tiny", kind))
    np.testing.assert_allclose(cfg.pixel_mean, (0.485, 0.456, 0.406), rtol=1e-7)
    np.testing.assert_allclose(cfg.pixel_std, (0.229, 0.224, 0.225), rtol=1e-7)
    params = mapping.convert_state_dict(state, cfg)
    # Exactly the model's tree, and float32 leaves.
    target = models.param_shapes(cfg)
    assert jax.tree.structure(params) == jax.tree.structure(target)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))
    back = mapping.params_to_state_dict(params, cfg)
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_tiny_layouts(tiny_state):
    state = tiny_state["meru"]
    cfg = mapping.infer_config(state, heads=4, text_heads=4)
    params = mapping.convert_state_dict(state, cfg)
    v = params["visual"]
    w = state["visual.blocks.0.attn.qkv.weight"]
    np.testing.assert_array_equal(v["blocks_0"]["attn"]["qkv"]["kernel"], w.T)
    conv = state["visual.patch_embed.proj.weight"]  # OIHW
    np.testing.assert_array_equal(v["patch_embed"]["proj"]["kernel"][3, 5, 1, 7], conv[7, 1, 3, 5])
    np.testing.assert_array_equal(
        params["textual"]["resblocks_1"]["attn"]["in_proj"]["kernel"],
        state["textual.resblocks.1.attn.in_proj_weight"].T,
    )
    np.testing.assert_array_equal(
        params["textual"]["ln_final"]["scale"], state["textual.ln_final.weight"]
    )
    np.testing.assert_array_equal(params["textual_proj"]["kernel"], state["textual_proj.weight"].T)
    assert params["curv"].shape == () and params["curv"] == state["curv"]
    # The stored pos_embed is MERU's sin-cos table, which the model also builds at init.
    table = models.sincos_pos_embed(14, 96)
    np.testing.assert_allclose(v["pos_embed"], table, rtol=0, atol=6e-8)


def test_sincos_tables_match_reference():
    ref = np.load(FIXTURES / "sincos_pos_embed.npz")
    widths = {
        "vit_small_mocov3_patch16_224": 384,
        "vit_base_patch16_224": 768,
        "vit_large_patch16_224": 1024,
        "tiny_vit_d96": 96,
    }
    assert sorted(widths) == sorted(ref.files)
    for name, width in widths.items():
        table = models.sincos_pos_embed(14, width)
        assert table.dtype == np.float32 and table.shape == ref[name].shape
        # torch's float32 sin/cos are not correctly rounded: equal to within 1 ulp of 1.0.
        np.testing.assert_allclose(table, ref[name], rtol=0, atol=6e-8, err_msg=name)
        assert not table[0, 0].any()


def test_heads_rule(tiny_state):
    state = tiny_state["meru"]
    with pytest.raises(ConversionError, match=r"vision attention heads.*--heads"):
        mapping.infer_config(state)  # width 96: neither released nor a multiple of 64
    with pytest.warns(HeadCountWarning, match="text width 64"):
        cfg = mapping.infer_config(state, heads=4)  # text 64 -> 1 head by the width/64 rule
    assert cfg.text.heads == 1
    with pytest.raises(ConversionError, match="heads=5 does not divide the vision width 96"):
        mapping.infer_config(state, heads=5, text_heads=4)


def test_heads_from_metadata(tiny_state):
    tiny = json.loads((FIXTURES / "tiny_config.json").read_text())
    assert mapping.heads_from_metadata(tiny) == {"heads": 4, "text_heads": 4}
    cfg = mapping.infer_config(tiny_state["meru"], **mapping.heads_from_metadata(tiny))
    assert _towers(cfg) == _towers(models.get_arch("tiny", "meru"))
    assert mapping.heads_from_metadata(_manifest("meru", "vit_s")) == {"heads": 12, "text_heads": 8}
    as_json = json.loads(json.dumps(dataclasses.asdict(models.get_arch("fmnist_s"))))
    assert mapping.heads_from_metadata(as_json) == {"heads": 4, "text_heads": 2}
    assert mapping.heads_from_metadata({"textual": {"arch": "L2_W64_A4"}}) == {"text_heads": 4}
    assert mapping.heads_from_metadata({"unrelated": 1}) == {}


def _random_state(cfg, seed):
    # Random values everywhere (norm gains and biases included), so that a swapped or
    # mis-transposed tensor shows in the outputs.
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
        models.param_shapes(cfg),
    )
    params["visual"]["pos_embed"] = models.sincos_pos_embed(cfg.vision.grid_size, cfg.vision.width)
    return params, mapping.params_to_state_dict(params, cfg)


def test_other_architecture_round_trip():
    """Nothing is tied to the fixture's sizes: another tiny arch converts back to equal outputs."""
    cfg = models.ModelConfig(
        kind="meru",
        vision=models.VisionConfig(
            image_size=32, patch_size=8, width=128, depth=3, heads=2, mlp_dim=200
        ),
        text=models.TextConfig(vocab_size=300, context_length=20, width=128, depth=1, heads=2),
        embed_dim=24,
        pixel_mean=(0.5, 0.375, 0.25),  # float32-exact: the buffers are float32
        pixel_std=(0.25, 0.125, 0.5),
    )
    params, state = _random_state(cfg, 3)
    with pytest.warns(HeadCountWarning):
        inferred = mapping.infer_config(state)
    assert inferred == cfg
    converted = mapping.convert_state_dict(state, inferred)
    jax.tree.map(np.testing.assert_array_equal, converted, params)
    model = models.build_model(cfg)
    images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    tokens = np.array([[5, 299, 0], [7, 8, 299]], np.int32)
    apply = jax.jit(lambda p: model.apply({"params": p}, images, tokens))
    a, b = apply(params), apply(converted)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_errors_are_collected(tiny_state):
    state = dict(tiny_state["meru"])
    cfg = mapping.infer_config(state, heads=4, text_heads=4)
    del state["visual.blocks.1.norm2.bias"]
    state["visual.head.weight"] = np.zeros((3, 96), np.float32)
    state["textual.ln_final.weight"] = np.ones((65,), np.float32)
    state["textual.attn_mask"] = ~state["textual.attn_mask"]
    state["pixel_std"] = np.full((3, 1, 1), 0.5, np.float32)
    state["visual.norm.bias"] = np.full((96,), np.nan, np.float32)
    state["logit_scale"] = np.asarray(3, np.int64)
    with pytest.raises(ConversionError) as info:
        mapping.convert_state_dict(state, cfg)
    err = info.value
    assert err.missing == ["visual.blocks.1.norm2.bias"]
    assert err.unexpected == ["visual.head.weight"]
    assert err.mismatched == [("textual.ln_final.weight", (64,), (65,))]
    assert len(err.invalid) == 4
    text = str(err)
    for needle in (
        "not the causal mask",
        "pixel_std",
        "visual.norm.bias has non-finite",
        "logit_scale has dtype int64",
        "missing keys (1)",
        "unexpected keys (1)",
    ):
        assert needle in text, needle
    assert "\n" not in text


def test_float_causal_mask_accepted(tiny_state):
    state = dict(tiny_state["clip"])
    mask = np.zeros((77, 77), np.float32)
    mask[np.triu_indices(77, 1)] = -np.inf  # OpenAI-CLIP style additive mask, same meaning
    state["textual.attn_mask"] = mask
    cfg = mapping.infer_config(state, heads=4, text_heads=4)
    mapping.convert_state_dict(state, cfg)


def test_not_a_state_dict():
    with pytest.raises(ConversionError, match="ckpt\\['model'\\]") as info:
        mapping.infer_config({"model": np.zeros(3), "optimizer": np.zeros(1)})
    assert "visual.cls_token" in info.value.missing
    with pytest.raises(ConversionError, match="module."):
        mapping.infer_config({"module.logit_scale": np.zeros(())})


def test_bad_grid_is_reported(tiny_state):
    state = dict(tiny_state["clip"])
    state["visual.pos_embed"] = np.zeros((1, 190, 96), np.float32)
    with pytest.raises(ConversionError, match="square patch grid"):
        mapping.infer_config(state, heads=4, text_heads=4)


def test_infer_config_overrides(tiny_state):
    cfg = mapping.infer_config(
        tiny_state["meru"], heads=4, text_heads=4, curv_init=0.5, precision="highest"
    )
    assert cfg.curv_init == 0.5 and cfg.precision == "highest"
    with pytest.raises(ConversionError, match="unusable model"):
        mapping.infer_config(tiny_state["meru"], heads=4, text_heads=4, precision="fast")


def test_key_map_covers_model():
    cfg = models.get_arch("tiny", "clip")
    table = mapping.key_map(cfg)
    flat = traverse_util.flatten_dict(models.param_shapes(cfg), sep="/")
    assert sorted(p for p in table.values() if p) == sorted(flat)
    assert [k for k, p in table.items() if p is None] == [
        "pixel_mean",
        "pixel_std",
        "textual.attn_mask",
    ]
