"""Trajectories: agent runs received in one of several formats, normalized to canonical messages
(`formats`), cut into reason/action/observation spans (`spans`), and scored for curricula
(`complexity`); the API, service and repository around them live beside these modules."""
