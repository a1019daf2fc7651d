"""The dev container wing: the compose file as its one declaration (compose), the Docker daemon (daemon),
the container's places (places), its lifecycle (lifecycle), the runtime that runs steps in it
(devcontainer), images and their labels (images, labels, provenance), status, doctor, version coherence."""
