"""The generator p_theta: a Llama-family NNX decoder, its weights, tokenizer and sampler.

Modules: ``model`` (LlamaConfig, Llama, KVCache), ``weights`` (load_model),
``tokenizer``, ``sampler`` (Sampler, Completion), ``sharding`` (logical axes -> mesh).
"""
