from cenas_jax.cli import entry

entry()
