"""`tljh loadtest`: simulated people use the hub as a class does; the hub's numbers are reported."""
