"""Core: configuration and model base classes, file resolution, checkpoint I/O."""
