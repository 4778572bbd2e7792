"""IonVeil services: each exposes its contract API and reaches storage through a port."""
