"""Cross-service definitions that every IonVeil process agrees on."""
