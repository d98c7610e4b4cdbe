"""Collectors: turn the Docker Engine, /proc and psutil into facts (see doctor.facts)."""
