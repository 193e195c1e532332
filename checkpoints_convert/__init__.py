"""PyTorch MERU / CLIP-baseline checkpoints -> Flax parameters.

* :mod:`checkpoints_convert.mapping`: the pure state-dict <-> parameter-tree mapping
  (``infer_config``, ``convert_state_dict``, ``check_shapes``, ``params_to_state_dict``).
* :mod:`checkpoints_convert.io`: reading ``.pth`` files safely and writing converted directories.
"""
