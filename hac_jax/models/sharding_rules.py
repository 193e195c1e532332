"""Named parameter-sharding rule sets for the CLIP / MERU parameter tree.

A rule set is a list of ``(regex, spec)`` pairs, the form of the experiment configs'
``sharding_rules`` (read by :func:`hac_jax.training.sharding.param_shardings`): the first regex
that fully matches a parameter's ``/``-joined name (``visual/blocks_3/mlp/fc1/kernel``) gives its
``PartitionSpec`` as a tuple of mesh-axis names / ``None`` per dimension; a parameter no rule
matches is replicated. A config selects a set by name::

    from hac_jax.models import sharding_rules
    config.sharding_rules = sharding_rules.get_rules("fsdp")

Sets:

* ``"replicated"``: no rule; every device holds the whole model (the configs' default).
* ``"fsdp"``: fully sharded data parallelism (ZeRO stage 3) over the ``data`` axis: every
  parameter with a width-sized dimension is split along it, so each of ``n`` devices holds
  ``1/n`` of the parameters and, because the optimizer state is sharded like its parameters
  (``hac_jax.training.driver.state_shardings``), ``1/n`` of the AdamW moments. XLA gathers each
  weight where it is used and reduce-scatters its gradient. Only the four scalars
  (``logit_scale``, ``curv``, ``visual_alpha``, ``textual_alpha``) stay replicated.

The split dimensions are the model widths (ViT ``D``, text ``W``, the fused ``3D``/``3W``
attention inputs, the MLP hidden widths and the joint width ``E``), never the vocabulary, the
number of tokens or the patch size, so the rules fit a ``data`` axis of any size that divides those
widths: for every named architecture (:func:`hac_jax.models.config.get_arch`) any power of two
up to 16. ``param_shardings`` names every parameter whose dimension a mesh does not divide.
"""

from __future__ import annotations

__all__ = ["RULE_SET_NAMES", "fsdp_rules", "get_rules"]

Rule = tuple[str, tuple[str | None, ...]]


def fsdp_rules(axis: str = "data") -> list[Rule]:
    """FSDP over mesh axis ``axis``: which dimension of each parameter is split (module
    docstring). Shapes of the parameters, by name:

    * ``visual/patch_embed/proj/kernel`` ``(p, p, 3, D)``: the output channels ``D``;
    * ``visual/pos_embed`` ``(1, N, D)``, ``visual/cls_token`` ``(1, 1, D)``: ``D``;
    * ``textual/token_embed/embedding`` ``(V, W)``, ``textual/posit_embed`` ``(L, W)``: ``W``;
    * every other ``kernel`` ``(in, out)`` (attention, MLP, the two projections): ``out``;
    * every ``bias`` / LayerNorm ``scale`` ``(n,)``: ``n``.

    Kernels are split along their output features: split along their input features (the
    contracted dimension), XLA's sharding propagation carries the split into the attention
    heads and then replicates activations to reshard them ("involuntary full rematerialization"),
    which the output split avoids.
    """
    return [
        (r"visual/patch_embed/proj/kernel", (None, None, None, axis)),
        (r"visual/(pos_embed|cls_token)", (None, None, axis)),
        (r"textual/(token_embed/embedding|posit_embed)", (None, axis)),
        (r".*/kernel", (None, axis)),
        (r".*/(bias|scale)", (axis,)),
    ]


_RULE_SETS = {"replicated": lambda: [], "fsdp": fsdp_rules}
RULE_SET_NAMES = tuple(_RULE_SETS)


def get_rules(name: str) -> list[Rule]:
    """The rule set ``name`` (one of :data:`RULE_SET_NAMES`) as a fresh list of
    ``(regex, spec)`` pairs."""
    if name not in _RULE_SETS:
        raise ValueError(f"unknown sharding rule set {name!r}; expected one of {RULE_SET_NAMES}")
    return _RULE_SETS[name]()
