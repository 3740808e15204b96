"""Several servers for one run (Mininet Cluster Edition): the `cluster:` section, the
placement of nodes on servers, and the preflight that checks the servers over ssh."""
