"""Trajectories: agent runs received in one of several formats, normalized to canonical messages
(``contract.formats``), cut into reason/action/observation spans (``contract.spans``) and scored for
curricula (``contract.complexity``); the API, service and repository around them live here."""
