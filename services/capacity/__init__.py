"""The capacity service."""
