"""Delivery daemons: each polls its own work with the shared claim mechanism and ships it
through one gateway Protocol.

They are named in :mod:`comms_pipeline.runtime.registry` and run by
:mod:`comms_pipeline.runtime.run`; a daemon never imports a job.
"""
