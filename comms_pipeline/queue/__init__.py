"""The life of a row: states and allowed transitions, claims and leases, retry policies,
the runner, heartbeats and the queue actions of operators and external systems.
"""
