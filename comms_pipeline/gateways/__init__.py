"""Gateways: one Protocol per capability (see :mod:`.protocols`), one module per backend.

Backends import their third-party libraries lazily, so the embedded default (local folders)
needs none of them.
"""
