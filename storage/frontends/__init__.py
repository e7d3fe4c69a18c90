"""Frontends: catalogs that find stored data by key."""
