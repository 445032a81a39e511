"""Pairing: a scope's messages become (user, assistant) patterns, or unpaired messages with their reason.

Invariant: every message is in exactly one current pattern or in the unpaired table. :mod:`.pairs` pairs
whole threads; :mod:`.batches` re-pairs only the threads new messages touched and keeps each thread's
current rows.
"""
