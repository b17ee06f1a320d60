"""Kiln's engine: app definitions compiled into tables, predicates and services."""
