"""The lab: the network-namespace test bed, the VIP test client and server, the hc fakes, the demo."""
