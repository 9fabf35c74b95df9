"""pytest plugin: collects scenario files (``scenarios/**/*.yaml``) as tests."""

from __future__ import annotations
