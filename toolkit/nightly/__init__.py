"""Nightly rebuilds: for each image, find out cheaply whether anything changed (inputs or upstream
packages), and only then bake, boot-test in a lab of its own, publish, promote and roll out; report."""
