"""The ``openformers`` command."""
