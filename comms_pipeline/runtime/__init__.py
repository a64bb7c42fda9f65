"""How the pipeline runs: the registry of jobs and daemons, the scheduler, the
supervisor, health checks, logging set-up and the demo.
"""
