"""Emergency access that stays honest: break-glass SSH certificates from the fleet's CA, which taint their host."""
