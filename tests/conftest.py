"""Shared fixtures: tiny random HF models (the oracle) saved to temporary folders, imported once.

Eight virtual CPU devices are configured before jax is imported so that sharding tests can
build a data x fsdp x tensor mesh in this process. torch and the HF tokenizer libraries are
imported only by the fixtures and helper modules (tiny_models, tiny_tokenizers) that use them,
so that data and config tests run without them.
"""

import atexit
import os
import shutil
import tempfile

import pytest

EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"
if EIGHT_DEVICES not in os.environ.get("XLA_FLAGS", ""):  # pytest-xdist workers inherit it
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {EIGHT_DEVICES}".strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the session, shared by the tests, the pytest-xdist
# workers (they inherit this environment) and the commands the tests start: the same tiny
# programs, compiled again by run after run, are loaded instead. Counting compilations
# (compiles.py) counts loads from it too. Whoever creates it removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxslm-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


@pytest.fixture(scope="session")
def llama_hf(tmp_path_factory):
    """(directory, torch model) of a tiny Llama-3 style model: GQA, llama3 rope, tied."""
    from tiny_models import llama_config, save_hf_model
    from tiny_tokenizers import build_tokenizer

    directory = tmp_path_factory.mktemp("llama_hf")
    tokenizer = build_tokenizer(directory)
    return directory, save_hf_model(llama_config(len(tokenizer)), directory, seed=1)


@pytest.fixture(scope="session")
def qwen_hf(tmp_path_factory):
    """(directory, torch model) of a tiny Qwen2 style model: biases, untied, padded vocab."""
    from tiny_models import qwen_config, save_hf_model
    from tiny_tokenizers import build_tokenizer

    directory = tmp_path_factory.mktemp("qwen_hf")
    tokenizer = build_tokenizer(directory, llama_style=False)
    return directory, save_hf_model(qwen_config(len(tokenizer) + 37), directory, seed=2)


@pytest.fixture(scope="session")
def llama_ckpt(llama_hf, tmp_path_factory):
    """The tiny Llama imported with 20 speech units (interleaved)."""
    from jaxslm.hf.importer import import_hf

    return import_hf(llama_hf[0], tmp_path_factory.mktemp("ckpt") / "llama", speech_units=20)


@pytest.fixture(scope="session")
def qwen_ckpt(qwen_hf, tmp_path_factory):
    """The tiny Qwen2 imported with 50 speech units (interleaved; more than its spare rows)."""
    from jaxslm.hf.importer import import_hf

    return import_hf(qwen_hf[0], tmp_path_factory.mktemp("ckpt") / "qwen", speech_units=50)


@pytest.fixture(scope="session")
def llama_lm(llama_ckpt):
    import jaxslm

    return jaxslm.load(llama_ckpt)


@pytest.fixture(scope="session")
def qwen_lm(qwen_ckpt):
    import jaxslm

    return jaxslm.load(qwen_ckpt)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """Free the session's compiled programs and arrays before a pytest-xdist worker reports
    that it has finished: the controller then gives it 5 s to exit before interrupting it, and
    freeing them later (pytest's own final garbage collection) can take longer on 2 cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import gc

        import jax

        jax.clear_caches()
        gc.collect()
