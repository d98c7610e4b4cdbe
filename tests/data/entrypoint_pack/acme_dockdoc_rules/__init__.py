"""Acme's dockdoc rules: the *.yaml files next to this module are dockdoc rule packs."""
