"""Layer 2 inside the jail: the zygote and the per-execution child.

Everything in this package runs inside bubblewrap under ``python -I`` and imports only the
standard library and its sibling modules (relative imports), because inside the jail it is loaded
as a top-level package named ``evaljail_worker`` from a read-only bind mount.
"""
