"""The demo's data sources, which compose's demo profile and `make run` start: the transactions simulator and the
breast cancer CSV exports."""
