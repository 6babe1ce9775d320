"""Batch jobs over datasets too large for one process, on an existing distributed engine.

`ray_scoring` scores a Ray Data dataset (offline scorer or a running service) and `ray_bias`
builds a bias report over one. Both need the `ray` extra; the serving path never imports them.
"""
