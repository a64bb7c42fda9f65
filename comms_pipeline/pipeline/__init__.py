"""The business side: triggers, contacts, templates, media rules, entity sources,
links, tracking, documents, receipts.
"""
