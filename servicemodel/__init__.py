"""Kubernetes objects as a Service proxy sees them: loading, validation, the state directory.

Shared by the harness and the reference proxier; imports neither.
"""
