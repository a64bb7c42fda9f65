"""Batch jobs: the Comms Monitor, the Email and Letter Monitors and the expiry sweep.

Each drains its backlog with the shared claim mechanism. They are named in
:mod:`comms_pipeline.runtime.registry` and run by :mod:`comms_pipeline.runtime.run`; a job
never imports a daemon.
"""
