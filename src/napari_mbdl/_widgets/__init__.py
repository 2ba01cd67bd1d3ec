"""napari dock widgets: thin doors onto the compute core (one file per widget)."""
