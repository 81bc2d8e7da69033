"""The executor HTTP service (FastAPI). The only package that imports a web framework."""

from .app import check_bind_security, create_app, wait_until_warm

__all__ = ["check_bind_security", "create_app", "wait_until_warm"]
