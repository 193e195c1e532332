"""Evaluation and audits: everything that measures a model.

* :mod:`~hac_jax.eval.encode`: run a model over data once (image and text features, fixed-size
  batches, one compile);
* :mod:`~hac_jax.eval.metrics`: every metric as a pure function of embeddings, scores and labels;
* :mod:`~hac_jax.eval.zero_shot`: zero-shot classification and retrieval of a model;
* :mod:`~hac_jax.eval.audit`: the unlearning audit of one model (``audit_model``);
* :mod:`~hac_jax.eval.names`: metric and array names, the column glossary, which are fractions.
"""
