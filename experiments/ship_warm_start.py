"""Put a warm start made by a `cenas run` into the package (``make warm-start`` calls this).

    python experiments/ship_warm_start.py CACHE_DIR [--config experiments/configs/quickstart.yaml]

CACHE_DIR is a warm-start cache (``$CENAS_CACHE/warmstart``) holding the adapter a `cenas run` of the config
trained: ``<key>/adapters`` + ``<key>/COMPLETE``. Its adapters (without the optimiser state, which a
warm start never reuses) go to ``cenas_jax/search/warm_starts/<key>/`` with ``made.json`` saying how it was
made; older shipped warm starts are removed. A run whose warm-start key matches (same model file, corpus
pairs, LoRA and fine-tuning settings) then restores it instead of training (DESIGN.md §4).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from cenas_jax.config import load_config, to_dict
    from cenas_jax.paths import shipped_warm_starts
    from cenas_jax.search.generator import restore_checkpoint, save_checkpoint
    from cenas_jax.search.llm_generator import LLMGenerator

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cache_dir", type=Path, help="the warm-start cache the run wrote ($CENAS_CACHE/warmstart)")
    p.add_argument("--config", type=Path, default=ROOT / "experiments/configs/quickstart.yaml")
    args = p.parse_args(argv)
    made = sorted(d for d in args.cache_dir.glob("*/COMPLETE") if (d.parent / "adapters").is_dir())
    if len(made) != 1:
        print(f"ship_warm_start: {args.cache_dir} holds {len(made)} finished LLM warm starts; expected exactly one "
              "(run `make warm-start`, which starts from an empty cache)", file=sys.stderr)
        return 1
    src = made[0].parent
    cfg = load_config(args.config)
    gen = LLMGenerator(cfg.llm, seed=cfg.seed)
    restore_checkpoint(gen, src, src)
    dest_root = shipped_warm_starts() or ROOT / "cenas_jax" / "search" / "warm_starts"
    if dest_root.exists():
        shutil.rmtree(dest_root)
    dest = dest_root / src.name
    save_checkpoint(gen, dest)  # a generator that only restored has no optimiser state: adapters alone
    (dest / "made.json").write_text(json.dumps({
        "key": src.name, "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
        "model": gen.fingerprint, "lora": to_dict(cfg.llm.lora), "made": datetime.date.today().isoformat(),
        "by": f"a cenas run of the config trained it (warm-start cache {args.cache_dir.name}/{src.name}); "
              "experiments/ship_warm_start.py shipped it (make warm-start does both)"}, indent=1) + "\n")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"shipped {dest} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
