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
