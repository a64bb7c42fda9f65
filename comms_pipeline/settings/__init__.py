"""Configuration: every section, validated. Imports only :mod:`comms_pipeline.core`.
"""
