"""Candidates: the contract (source defining a linen ``Net``), the static policy, the seed corpus, the sandbox.

Import the submodules directly (``cenas_jax.candidates.policy`` ...): this
package file stays free of JAX so that the search process can check policy
and read the corpus without loading a backend.
"""
