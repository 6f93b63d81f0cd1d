"""Talking to baseboard management controllers: IPMI (pyghmi) and Redfish behind one interface."""
