"""The accelerator switches of ModelConfig (compute dtype, attention implementation, remat) and
the named sharding rule sets, against the default float32 computation.

Each switch is compared with the default model on the same parameters and inputs: outputs, the
training loss (``model_loss``) and its gradients. The model is a two-block Fashion-MNIST-sized
CLIP / MERU (28x28 images, 17 image tokens, 16 text tokens), random-initialised; captions have
random lengths with 0 padding after the EOT id, so the text tower's causal masking is exercised.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hac_jax.fingerprint import settings_fingerprint
from hac_jax.models import build_model, init_params, model_config, param_shapes, sharding_rules
from hac_jax.models.config import ModelConfig
from hac_jax.models.losses import model_loss
from hac_jax.training import sharding

KINDS = ("clip", "meru")
BATCH = 8
EOT = 49407
# float32 agreement of jax.nn.dot_product_attention with Flax's attention (rounding only).
ATTENTION_RTOL = 1e-5
# bfloat16 compute against float32 (ModelConfig.dtype's docstring states these).
BF16_EMBED_ATOL = 2e-2
BF16_LOSS_RTOL = 1e-2
BF16_GRAD_RTOL = 0.1


def small_config(kind: str, **switches) -> ModelConfig:
    return model_config(kind, "fmnist_xs", vision_depth=2, text_depth=2, **switches)


@functools.cache
def _params(kind: str):
    return init_params(small_config(kind), 0)


@functools.cache
def _inputs(kind: str) -> tuple[np.ndarray, np.ndarray]:
    cfg = small_config(kind)
    rng = np.random.default_rng(0)
    size, length = cfg.vision.image_size, cfg.text.context_length
    images = rng.uniform(size=(BATCH, size, size, 3)).astype(np.float32)
    tokens = np.zeros((BATCH, length), np.int32)
    for row, n in enumerate(rng.integers(2, length + 1, BATCH)):
        tokens[row, : n - 1] = rng.integers(1, EOT - 1, n - 1)
        tokens[row, n - 1] = EOT
    return images, tokens


def _loss_fn(cfg: ModelConfig):
    model = build_model(cfg)
    loss_of_outputs = model_loss(cfg)

    def loss(params, images, tokens):
        out = model.apply({"params": params}, images, tokens)
        return loss_of_outputs(out)[0], out

    return loss


@functools.cache
def _run(cfg: ModelConfig):
    """``(loss, outputs, grads)`` of ``cfg`` on the shared parameters and inputs."""
    (loss, out), grads = jax.jit(jax.value_and_grad(_loss_fn(cfg), has_aux=True))(
        _params(cfg.kind), *_inputs(cfg.kind)
    )
    return jax.device_get((loss, out, grads))


def _lowered_forward_text(cfg: ModelConfig) -> str:
    model = build_model(cfg)
    return (
        jax.jit(lambda p, i, t: model.apply({"params": p}, i, t))
        .lower(_params(cfg.kind), *_inputs(cfg.kind))
        .as_text()
    )


def _lowered_grad_text(cfg: ModelConfig) -> str:
    return (
        jax.jit(jax.grad(lambda *a: _loss_fn(cfg)(*a)[0]))
        .lower(_params(cfg.kind), *_inputs(cfg.kind))
        .as_text()
    )


def _dot_generals(text: str) -> tuple[list[str], list[str]]:
    """``(weight matmuls, attention matmuls)`` of a StableHLO text: the dot_generals without and
    with batching dimensions."""
    dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    return (
        [d for d in dots if "batching_dims" not in d],
        [d for d in dots if "batching_dims" in d],
    )


def _close(actual, expected, rtol: float, what: str) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _assert_same_results(got, want, rtol: float) -> None:
    loss, out, grads = got
    want_loss, want_out, want_grads = want
    _close(loss, want_loss, rtol, "loss")
    for key in ("image", "text"):
        _close(out[key], want_out[key], rtol, key)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert jax.tree.structure(grads) == jax.tree.structure(want_grads)
    for (path, g), w in zip(flat, jax.tree.leaves(want_grads), strict=True):
        _close(g, w, rtol, f"grad {jax.tree_util.keystr(path)}")


# ----------------------------------------------------------------------------------------------
# Defaults: the switches are unset and invisible
# ----------------------------------------------------------------------------------------------


def test_unset_switches_leave_repr_and_settings_hash_as_before():
    cfg = small_config("meru")
    assert (cfg.attention, cfg.remat, cfg.gelu) == (None, None, None)
    assert all(name not in repr(cfg) for name in ("attention", "remat", "gelu"))
    fields = dataclasses.asdict(cfg)
    before = {k: v for k, v in fields.items() if k not in ("attention", "remat", "gelu")}
    assert settings_fingerprint(fields) == settings_fingerprint(before)
    switched = dataclasses.replace(cfg, attention="xla", remat="dots")
    assert "attention='xla'" in repr(switched) and "remat='dots'" in repr(switched)
    assert settings_fingerprint(dataclasses.asdict(switched)) != settings_fingerprint(fields)
    # The repr is the dataclass repr in field order (the towers keep theirs).
    assert repr(cfg).startswith(f"ModelConfig(kind='meru', vision={cfg.vision!r}, ")
    assert repr(cfg).endswith("dtype='float32', param_dtype='float32', precision='default')")


def test_none_overrides_are_unset():
    assert model_config("clip", "fmnist_xs", attention=None, remat=None, dtype=None) == (
        model_config("clip", "fmnist_xs")
    )
    assert model_config("clip", "fmnist_xs", vision={"depth": None}).vision.depth == 1


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(attention="flash"), "attention 'flash'"),
        (dict(attention="cudnn"), "needs dtype bfloat16 or float16"),
        (dict(remat="some"), "remat 'some'"),
        (dict(gelu="tanh"), "gelu 'tanh'"),
        (dict(gelu="erf"), "gelu 'erf'"),
    ],
)
def test_bad_switch_values_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        small_config("meru", **overrides)


def test_cudnn_attention_is_accepted_with_bfloat16():
    assert small_config("meru", attention="cudnn", dtype="bfloat16").attention == "cudnn"


# ----------------------------------------------------------------------------------------------
# gelu: Flax's erfc form (the default is PyTorch's erf form)
# ----------------------------------------------------------------------------------------------


def test_both_gelu_forms_are_the_exact_gelu_in_float64():
    from scipy.special import ndtr

    from hac_jax.models.vit import gelu

    x = np.linspace(-12.0, 12.0, 4001)
    want = x * ndtr(x)
    with jax.enable_x64(True):
        for form in (None, "erfc"):
            got = np.asarray(gelu(jnp.asarray(x, jnp.float64), form))
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15, err_msg=str(form))
    # float32: the two forms agree to rounding (erf loses relative accuracy only where
    # GELU(x) is below 1e-7 |x|, i.e. x < -5).
    x32 = jnp.asarray(x, jnp.float32)
    diff = np.abs(np.asarray(gelu(x32)) - np.asarray(gelu(x32, "erfc")))
    assert diff.max() <= 1e-6 * np.abs(x).max()
    with pytest.raises(ValueError, match="unknown GELU form"):
        gelu(x32, "tanh")


def test_erfc_gelu_matches_the_default():
    # The GELU lives in the transformer blocks, which CLIP and MERU share; MERU also runs the
    # geometry heads, so one kind covers both.
    default, switched = small_config("meru"), small_config("meru", gelu="erfc")
    _assert_same_results(_run(switched), _run(default), ATTENTION_RTOL)


def test_erfc_gelu_is_a_different_program():
    default, switched = small_config("meru"), small_config("meru", gelu="erfc")
    assert _lowered_grad_text(switched) != _lowered_grad_text(default)


# ----------------------------------------------------------------------------------------------
# attention: jax.nn.dot_product_attention
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_xla_attention_matches_flax_attention(kind):
    default, switched = small_config(kind), small_config(kind, attention="xla")
    _assert_same_results(_run(switched), _run(default), ATTENTION_RTOL)


def test_xla_attention_is_a_different_program():
    default, switched = small_config("meru"), small_config("meru", attention="xla")
    assert _lowered_grad_text(switched) != _lowered_grad_text(default)


def test_xla_attention_takes_the_model_precision():
    cfg = small_config("clip", attention="xla", precision="highest")
    _, attention = _dot_generals(_lowered_forward_text(cfg))
    assert attention and all("HIGHEST" in d for d in attention)


def test_xla_attention_keeps_the_text_tower_causal():
    """A caption's feature does not depend on what follows its EOT (padding of any length)."""
    cfg = small_config("meru", attention="xla")
    model, params = build_model(cfg), _params("meru")
    _, tokens = _inputs("meru")
    noise = np.where(tokens == 0, 7, 0).astype(np.int32)  # change only the padding
    encode = jax.jit(lambda t: model.apply({"params": params}, t, method="encode_text"))
    _close(encode(tokens + noise), encode(tokens), 1e-6, "text features")


# ----------------------------------------------------------------------------------------------
# remat
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["full", "dots"])
@pytest.mark.parametrize("kind", KINDS)
def test_remat_gives_the_same_outputs_and_gradients(kind, policy):
    default, switched = small_config(kind), small_config(kind, remat=policy)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), param_shapes(switched)) == jax.tree.map(
        lambda x: (x.shape, x.dtype), param_shapes(default)
    )
    _assert_same_results(_run(switched), _run(default), 1e-6)


def test_remat_recomputes_blocks_in_the_backward_pass():
    # jax.checkpoint keeps its recomputation apart with optimization barriers.
    assert "optimization_barrier" not in _lowered_grad_text(small_config("clip"))
    assert "optimization_barrier" in _lowered_grad_text(small_config("clip", remat="full"))


# ----------------------------------------------------------------------------------------------
# dtype: bfloat16 compute, float32 parameters
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", [None, "xla"])
@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_compute_is_within_its_tolerance_of_float32(kind, attention):
    cfg = small_config(kind, dtype="bfloat16", attention=attention)
    assert {x.dtype for x in jax.tree.leaves(param_shapes(cfg))} == {jnp.dtype(jnp.float32)}
    loss, out, grads = _run(cfg)
    want_loss, want_out, want_grads = _run(small_config(kind))
    assert out["image"].dtype == out["text"].dtype == np.float32  # geometry in float32
    for key in ("image", "text"):
        np.testing.assert_allclose(out[key], want_out[key], atol=BF16_EMBED_ATOL, err_msg=key)
    np.testing.assert_allclose(loss, want_loss, rtol=BF16_LOSS_RTOL)
    got_leaves, want_leaves = jax.tree.leaves(grads), jax.tree.leaves(want_grads)
    assert {g.dtype for g in got_leaves} == {np.dtype(np.float32)}
    # Relative error of the whole gradient (single small leaves are noisier).
    diff = sum(float(np.sum((g - w) ** 2)) for g, w in zip(got_leaves, want_leaves, strict=True))
    norm = sum(float(np.sum(w**2)) for w in want_leaves)
    assert np.sqrt(diff / norm) <= BF16_GRAD_RTOL


def test_bfloat16_compute_runs_the_matmuls_in_bfloat16():
    weights, attention = _dot_generals(
        _lowered_forward_text(small_config("clip", dtype="bfloat16"))
    )
    assert weights and attention
    assert all("bf16" in d for d in weights)
    # Flax keeps float32 softmax weights for the product with the values.
    assert any("bf16" not in d for d in attention)
    weights, attention = _dot_generals(
        _lowered_forward_text(small_config("clip", dtype="bfloat16", attention="xla"))
    )
    assert all("bf16" in d for d in weights + attention)
    assert "bf16" not in _lowered_forward_text(small_config("clip"))


# ----------------------------------------------------------------------------------------------
# Sharding rule sets
# ----------------------------------------------------------------------------------------------


def test_fsdp_rules_split_every_array_parameter_over_the_data_axis():
    mesh = sharding.make_mesh([("data", -1)])
    n = mesh.shape["data"]
    assert n == 8
    shapes = param_shapes(small_config("meru"))
    placed = sharding.param_shardings(shapes, mesh, sharding_rules.get_rules("fsdp"))
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    for (path, leaf), sh in zip(flat, jax.tree.leaves(placed), strict=True):
        shard = int(np.prod(sh.shard_shape(leaf.shape)))
        expected = leaf.size if leaf.ndim == 0 else leaf.size // n
        assert shard == expected, jax.tree_util.keystr(path)
    assert sharding_rules.get_rules("replicated") == []
    with pytest.raises(ValueError, match="unknown sharding rule set"):
        sharding_rules.get_rules("zero")


def test_fsdp_sharded_gradient_equals_the_replicated_one():
    cfg = small_config("meru")
    mesh = sharding.make_mesh([("data", -1)])
    params, (images, tokens) = _params("meru"), _inputs("meru")
    placed = sharding.param_shardings(params, mesh, sharding_rules.get_rules("fsdp"))
    batch = sharding.batch_sharding(mesh)
    grad = jax.value_and_grad(lambda *a: _loss_fn(cfg)(*a)[0])
    want_loss, want_grads = jax.jit(grad)(params, images, tokens)
    loss, grads = jax.jit(
        grad, in_shardings=(placed, batch, batch), out_shardings=(sharding.replicated(mesh), placed)
    )(jax.device_put(params, placed), images, tokens)
    _close(loss, want_loss, 1e-5, "loss")
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        _close(g, w, 1e-5, "grad")
