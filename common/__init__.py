"""Shared package: storage URIs, record schema, dataset manifest, CLI helpers."""
