"""Training: the device mesh and sharding rules (``sharding``), the optax recipe (``optim``),
orbax checkpoints (``checkpointing``), logging (``progress``), the step driver shared by
pretraining and unlearning (``driver``) and the pretraining run itself (``pretrain``).

Submodules are imported where they are used (``from hac_jax.training import pretrain``), so that
importing one does not pull in orbax or the data pipeline."""
