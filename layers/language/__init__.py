"""The spec language: base classes and the closed registry, fields, errors, the model spec, containers."""
