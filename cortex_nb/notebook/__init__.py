"""Everything that knows about a notebook: the shared ``Connection``, the ``%cortex`` magic (its
grammar, its commands), Tab completion, the credentials panel and display helpers.
"""
