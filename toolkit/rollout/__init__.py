"""Reimage racks: plan waves (pure), then execute them with a journal (acting)."""
