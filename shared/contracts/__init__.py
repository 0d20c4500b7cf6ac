"""Event contracts: data only, frozen, tolerant of unknown fields on the way in."""
