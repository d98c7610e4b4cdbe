"""The rule engine: load and validate packs, evaluate conditions over facts, render findings."""
