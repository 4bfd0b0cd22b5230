"""CLI verb groups owned by the core (data, models, bundle)."""
