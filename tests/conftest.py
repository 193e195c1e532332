"""Test set-up shared by the whole suite.

Eight fake CPU devices are configured *before* JAX initialises, so that sharding tests
can build real multi-device meshes on a CPU-only machine.
"""

import contextlib
import os
import pathlib
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Runner entry points turn on a persistent compilation cache; keep the suite's out of ~/.cache.
os.environ["HAC_JAX_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="hac_jax_test_jax_")

import jax  # noqa: E402
import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "meru_torch"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


def pytest_report_header(config):
    return f"jax {jax.__version__}, devices: {len(jax.devices())} x {jax.devices()[0].platform}"


@contextlib.contextmanager
def module_compilation_cache(cache_dir):
    """A persistent JAX compilation cache in ``cache_dir`` while the block runs (every compile is
    cached), restoring the previous settings afterwards. Test modules that compile the same step
    several times (resume, command line) use it to compile once."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update(names[0], str(cache_dir))
    jax.config.update(names[1], 0.0)
    jax.config.update(names[2], -1)
    cc.reset_cache()
    try:
        yield
    finally:
        for n, v in old.items():
            jax.config.update(n, v)
        cc.reset_cache()
