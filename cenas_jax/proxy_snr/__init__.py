"""Proxy reliability (result 6, ``cenas proxy-snr``): ``analysis`` (the numbers from accuracy matrices, pure
numpy) and ``experiment`` (trains the architectures through the sandbox, writes the JSON and figures).
The figures and text tables are ``cenas_jax.report.proxy_snr``.
"""
