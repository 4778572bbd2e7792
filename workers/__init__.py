"""Workers bind IonVeil services to NATS subjects, PostgreSQL and HTTP."""
