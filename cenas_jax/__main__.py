import sys

from cenas_jax.cli import main

sys.exit(main())
