"""faild's state daemon: the server, its store, the lease and the communities."""
