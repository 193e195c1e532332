"""The converter's command line: ``python -m checkpoints_convert --input X.pth --output DIR``.

The conversion itself belongs to the models (:mod:`hac_jax.models.torch_io` reads ``.pth`` files
safely, :mod:`hac_jax.models.torch_mapping` maps state dicts to parameter trees,
:mod:`hac_jax.models.saved` writes the library's directory format); this package is the command
line over them (:mod:`checkpoints_convert.cli`).
"""
