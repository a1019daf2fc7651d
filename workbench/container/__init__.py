"""The dev container wing: the compose file as its one declaration (compose), its lifecycle and the runtime
that runs steps in it (engine), images and their provenance labels, status, doctor, version coherence."""
