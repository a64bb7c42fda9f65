"""The vocabulary every layer shares: states, error codes, addressing, SMS text, cron.

Imports nothing else of the package (an import-linter contract).
"""
