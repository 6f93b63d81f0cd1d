"""Trust: the fleet's keys (``keys``) and the signatures that tie a build's manifest to them (``signing``)."""
