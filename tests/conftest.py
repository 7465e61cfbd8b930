"""Shared test set-up: keep JAX on the CPU, keep caches inside the test's temp dirs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Every cache (datasets, XLA, warm-start adapters) goes to one throw-away directory per test
# session unless the caller chose one: tests never write into the user's ~/.cache.
if "CENAS_CACHE" not in os.environ:
    import tempfile

    os.environ["CENAS_CACHE"] = tempfile.mkdtemp(prefix="cenas-test-cache-")


import pytest  # noqa: E402 - the environment above must be set before anything imports JAX


@pytest.fixture(scope="session")
def smollm_and_transformers():
    """(our SmolLM2-135M in float32, its tokenizer, its config, transformers' model of the same GGUF, torch).

    Loaded once per session: transformers dequantises the GGUF in ~20 s, and two test modules compare
    against it. Tests must not change either model.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cenas_jax.llm.weights import load_model, resolve_model_path

    path = resolve_model_path("smollm2-135m")
    ours, tok, config = load_model("smollm2-135m", dtype="float32")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return ours, tok, config, ref, torch
